-- The test suite's own role, made by `deploy/stack test` (and `bench`, for its scratch
-- database), never by `up`: it creates the throwaway databases the tests run on, each owned by
-- the service role whose schema it gets, and drops them. That needs CREATEDB and membership in
-- the service roles, which the service roles themselves therefore do not need. Run as the
-- superuser with the psql variable `databases`, as init.sql is. Safe to run again.
SELECT 'CREATE ROLE saga_test LOGIN CREATEDB PASSWORD ''saga_test'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'saga_test')
\gexec

SELECT format('GRANT %I TO saga_test', d || '_svc')
FROM unnest(string_to_array(:'databases', ' ')) AS d
\gexec
