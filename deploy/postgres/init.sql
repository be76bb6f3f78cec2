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
-- A service's role logs in and owns its database, and can do nothing else: no CREATEDB (the
-- tests' throwaway databases are made by a role of their own, deploy/postgres/test-role.sql).
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', d || '_svc', d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = d || '_svc')
\gexec

-- Roles made by an earlier version of this file had CREATEDB: take it away.
SELECT format('ALTER ROLE %I NOCREATEDB NOCREATEROLE', d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', d, d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec

-- PUBLIC may connect to any database by default; take that away so only the owner can.
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d)
FROM unnest(string_to_array(:'databases', ' ')) AS d
\gexec
