-- Migration: auth schema for plain PostgreSQL
-- The seed's 001 migration writes RLS policies with auth.uid() and auth.role(), as on
-- Supabase. On plain PostgreSQL the application sets them per transaction or session:
--   SET app.user_id = '<uuid>';  SET app.role = 'admin';
-- Rollback: rollback/000_create_auth_schema_rollback.sql

CREATE SCHEMA IF NOT EXISTS auth;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
AS $$
    SELECT nullif(current_setting('app.user_id', true), '')::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(current_setting('app.role', true), ''), 'anonymous')
$$;

GRANT USAGE ON SCHEMA auth TO PUBLIC;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role() TO PUBLIC;
