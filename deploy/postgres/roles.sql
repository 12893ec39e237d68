-- Least-privilege Postgres roles for Codigo: a migration role that owns the schema and runs
-- `codigo-ctl setup`, and an application role for codigo-producer and codigo-consumer that
-- reads and writes rows but can create, alter or drop nothing.
--
-- Idempotent. Run it as a superuser (or the database owner with CREATEROLE that may SET ROLE
-- to the migration role), connected to Codigo's own database, before the first
-- `codigo-ctl setup` and again after it (and after any release: it is safe to repeat):
--
--   CODIGO_APP_DB_PASSWORD=... CODIGO_MIGRATION_DB_PASSWORD=... \
--   psql "postgres://admin@db.example:5432/codigo?sslmode=verify-full" -v ON_ERROR_STOP=1 \
--        -v app_role=codigo_app -v migration_role=codigo_migrator -v schema=public \
--        -f deploy/postgres/roles.sql
--
-- Every variable is optional (defaults: codigo_app, codigo_migrator, public). Passwords are
-- read from the environment, never from the command line; without them the roles keep the
-- password they have (or none: certificate or IAM authentication). docs/SECURITY.md explains
-- the model; ctl/tests/postgres_roles.rs proves it.

\set ON_ERROR_STOP on
\if :{?app_role}
\else
  \set app_role codigo_app
\endif
\if :{?migration_role}
\else
  \set migration_role codigo_migrator
\endif
\if :{?schema}
\else
  \set schema public
\endif
\getenv app_password CODIGO_APP_DB_PASSWORD
\getenv migration_password CODIGO_MIGRATION_DB_PASSWORD

-- Keep the password statements out of the server log where this session may decide so.
SELECT rolsuper AS is_superuser FROM pg_roles WHERE rolname = current_user \gset
\if :is_superuser
  SET log_statement = 'none';
\endif

BEGIN;

-- Roles: log in, and nothing else.
SELECT format('CREATE ROLE %I LOGIN', :'migration_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'migration_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') \gexec
ALTER ROLE :"migration_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- Each role holds what this file grants and nothing inherited: memberships (a managed
-- service's admin group such as Cloud SQL's cloudsqlsuperuser, pg_write_all_data, ...) go.
SELECT format('REVOKE %I FROM %I', granted.rolname, member.rolname)
  FROM pg_auth_members m
  JOIN pg_roles granted ON granted.oid = m.roleid
  JOIN pg_roles member ON member.oid = m.member
 WHERE member.rolname IN (:'app_role', :'migration_role') \gexec
\if :{?migration_password}
  ALTER ROLE :"migration_role" PASSWORD :'migration_password';
\endif
\if :{?app_password}
  ALTER ROLE :"app_role" PASSWORD :'app_password';
\endif

-- Nobody creates objects in public by chance (the default since PostgreSQL 15).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO :"migration_role", :"app_role";

-- The migration role owns the schema and everything in it, including tables migrated
-- before these roles existed.
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"migration_role";
ALTER SCHEMA :"schema" OWNER TO :"migration_role";
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'migration_role')
  FROM pg_tables
 WHERE schemaname = :'schema' AND tableowner <> :'migration_role' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', schemaname, sequencename, :'migration_role')
  FROM pg_sequences
 WHERE schemaname = :'schema' AND sequenceowner <> :'migration_role' \gexec

-- The application role: rows only. USAGE lets it name the schema's objects; no CREATE.
REVOKE ALL ON SCHEMA :"schema" FROM :"app_role";
GRANT USAGE ON SCHEMA :"schema" TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"app_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :"schema" TO :"app_role";
-- ... and on every table a later migration creates.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migration_role" IN SCHEMA :"schema"
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migration_role" IN SCHEMA :"schema"
  GRANT USAGE, SELECT ON SEQUENCES TO :"app_role";
-- The migration history is read by the services (they refuse an old schema), written by
-- `codigo-ctl setup` only. It exists once setup has run, hence running this file again then.
SELECT format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
              :'schema', '_sqlx_migrations', :'app_role')
 WHERE to_regclass(format('%I.%I', :'schema', '_sqlx_migrations')) IS NOT NULL \gexec

-- Ledger entries are append-only: the services insert them and never change or remove one
-- (a redelivery inserts nothing, `ON CONFLICT DO NOTHING` needs no UPDATE). The table exists
-- once setup has run, hence, again, running this file then.
SELECT format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
              :'schema', 'ledger_entries', :'app_role')
 WHERE to_regclass(format('%I.%I', :'schema', 'ledger_entries')) IS NOT NULL \gexec

-- Unqualified names (the migrations and the services use them) resolve in the schema.
ALTER ROLE :"migration_role" IN DATABASE :"DBNAME" SET search_path = :"schema";
ALTER ROLE :"app_role" IN DATABASE :"DBNAME" SET search_path = :"schema";

COMMIT;
