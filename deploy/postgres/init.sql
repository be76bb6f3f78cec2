-- Database per service: each database is owned by its own login role, and no role may connect
-- to another's database. Run as the superuser by `deploy/stack`, once per cluster, with the
-- psql variable `databases` naming the databases that cluster holds (space-separated): all
-- three on the shared cluster, one on each cluster of STACK_PG_PER_SERVICE=1. A cluster holds
-- only its own databases' roles. Safe to run again.
-- Without the variable (deploy/compose.yaml's one server), all three.
\if :{?databases}
\else
\set databases 'orders payments inventory'
\endif
-- CREATEDB lets each role create throwaway databases for its own integration tests.
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', d || '_svc', d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = d || '_svc')
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', d, d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec

-- PUBLIC may connect to any database by default; take that away so only the owner can.
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d)
FROM unnest(string_to_array(:'databases', ' ')) AS d
\gexec
