-- Migration: fill users_audit on every INSERT, UPDATE and DELETE of users
-- Rollback: rollback/002_users_audit_trigger_rollback.sql
--
-- The application tells the trigger who and where, per transaction or session:
--   SET LOCAL app.user_id = '<uuid>';        -- becomes changed_by (via auth.uid())
--   SET LOCAL app.client_ip = '203.0.113.7'; -- becomes ip_address (must be a valid inet)
--   SET LOCAL app.user_agent = 'Mozilla/5.0 ...';
--
-- Design notes:
-- * SECURITY DEFINER: application roles need no INSERT right on users_audit, so they
--   cannot forge audit rows; the trigger writes them as the migration's owner.
-- * A definer function must not trust the caller's search_path: it is pinned to
--   pg_catalog and pg_temp, and the audit table is addressed through the schema of
--   the table that fired the trigger (TG_TABLE_SCHEMA). A temporary table named
--   users_audit cannot capture the rows.
-- * Secrets are never copied into the log: password_hash and two_factor_secret are
--   removed from old_values/new_values.
-- * AFTER ROW trigger: it sees the final row, including updated_at set by the BEFORE
--   trigger of 001, and does not run for rows skipped by ON CONFLICT DO NOTHING.

CREATE OR REPLACE FUNCTION users_audit_row()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    secret_keys CONSTANT text[] := ARRAY['password_hash', 'two_factor_secret'];
    old_doc jsonb;
    new_doc jsonb;
    subject uuid;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_doc := to_jsonb(OLD) - secret_keys;
        subject := OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_doc := to_jsonb(NEW) - secret_keys;
        subject := NEW.id;
    END IF;

    EXECUTE format(
        'INSERT INTO %I.users_audit '
        '(user_id, action, changed_by, old_values, new_values, ip_address, user_agent) '
        'VALUES ($1, $2, $3, $4, $5, $6, $7)',
        TG_TABLE_SCHEMA)
    USING
        subject,
        TG_OP,
        auth.uid(),
        old_doc,
        new_doc,
        nullif(current_setting('app.client_ip', true), '')::inet,
        nullif(current_setting('app.user_agent', true), '');

    RETURN NULL;  -- AFTER trigger: the return value is ignored
END;
$fn$;

COMMENT ON FUNCTION users_audit_row() IS
    'Writes one users_audit row per changed users row (asyncmig sample migration 002).';

CREATE TRIGGER users_audit_row
    AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW
    EXECUTE FUNCTION users_audit_row();
