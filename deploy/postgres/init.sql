-- Database per service: three databases, each owned by its own login role, and no role may
-- connect to another's database. Run as the superuser by `deploy/stack`; safe to run again.
-- CREATEDB lets each role create throwaway databases for its own integration tests.
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', r, r)
FROM unnest(ARRAY['orders_svc', 'payments_svc', 'inventory_svc']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', d, d || '_svc')
FROM unnest(ARRAY['orders', 'payments', 'inventory']) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec

-- PUBLIC may connect to any database by default; take that away so only the owner can.
REVOKE CONNECT, TEMPORARY ON DATABASE orders, payments, inventory FROM PUBLIC;
