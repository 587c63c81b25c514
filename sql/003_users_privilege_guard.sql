-- Migration: privileged columns of users change only for admins; users_audit under RLS
-- Rollback: rollback/003_users_privilege_guard_rollback.sql
--
-- Closes two holes the seed's 001 leaves (001 itself stays exactly as the seed wrote it):
-- * users_update_policy has no WITH CHECK, so a customer may UPDATE their own row with
--   role = 'admin' or email_verified = true. An application that reads the role from
--   the row at login is then compromised.
-- * users_audit has no row level security: anyone with SELECT reads everyone's trail.
--
-- Who counts as an admin: auth.role() IN ('admin', 'super_admin'), the same test 001's
-- policies use. The application sets it per transaction (SET LOCAL app.role = 'admin').
--
-- Privileged columns (changed only by an admin; anyone else gets SQLSTATE 42501 naming
-- the columns):
--   role                    what the application grants at login;
--   email_verified,
--   phone_verified          proof of ownership the application trusts;
--   failed_login_attempts,
--   locked_until            account lockout: a locked-out user must not lift it;
--   deleted_at              soft deletion: a deleted account must not restore itself.
-- Granting or revoking 'super_admin' (NEW or OLD role is super_admin) needs super_admin:
-- an admin cannot promote anyone, themselves included, above admin.
-- Not privileged, still written by the user's own session: name, phone, avatar_url,
-- addresses, metadata (the application must not keep grants in it), password_hash,
-- two_factor_enabled/secret (the application asks for re-authentication), and the login
-- bookkeeping last_login_at/last_login_ip (forging them grants nothing). id is already
-- pinned by users_update_policy (its USING doubles as WITH CHECK). Assigning a column
-- its current value is not a change (an ORM writing the whole row back keeps working).
--
-- Design notes:
-- * A BEFORE UPDATE trigger, not a policy: a WITH CHECK expression cannot see OLD, so
--   it cannot tell "became admin" from "was admin". The trigger compares OLD and NEW
--   with IS DISTINCT FROM, so it also covers INSERT ... ON CONFLICT DO UPDATE and values
--   changed by other BEFORE triggers (which UPDATE OF <columns> would miss).
-- * Triggers fire for every role, RLS bypass or not: the table owner and superusers
--   are held to the rule too. Maintenance by hand sets app.role for its transaction:
--     BEGIN; SET LOCAL app.role = 'admin'; UPDATE users SET role = ...; COMMIT;
--   INSERT is not guarded: 001 has no INSERT policy, so only the owner creates users.
-- * The guard is SECURITY INVOKER (it needs no rights of its own) with a fixed
--   search_path, so a caller's objects cannot stand in for pg_catalog's.
-- * users_audit: ENABLE and FORCE ROW LEVEL SECURITY. Rows are visible to admins and to
--   the user they concern (user_id = auth.uid()). FORCE, because an application that
--   connects as the owner must obey too. The audit trigger of 002 is SECURITY DEFINER
--   (it runs as the owner), so with FORCE its INSERT needs a policy: the insert policy
--   admits rows written from inside a trigger (pg_trigger_depth() > 0) and nothing else,
--   so even the owner cannot add an audit row by hand. No UPDATE or DELETE policy: the
--   log is append-only for everyone subject to RLS (retention jobs run as a role with
--   BYPASSRLS). Application roles still need GRANT SELECT ON users_audit to read it;
--   no role gets INSERT.
-- * FORCE also reaches pg_dump: a dump of users_audit taken as the (non-superuser)
--   owner fails ("query would be affected by row-level security policy"). Dump as a
--   superuser or a role with BYPASSRLS; pg_dump --enable-row-security would silently
--   dump only the rows the policies show. A restore is unaffected: pg_dump enables
--   RLS after the data is loaded.
-- * users is not FORCEd: 001 has no INSERT or DELETE policy, so forcing it would stop
--   the owner creating and deleting accounts (seeds, sign-up, erasure). Its escalation
--   hole is closed by the trigger, which holds for the owner anyway.

CREATE FUNCTION users_guard_privileged_columns()
RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    acting_role CONSTANT text := auth.role();
    changed text[];
BEGIN
    changed := array_remove(ARRAY[
        CASE WHEN NEW.role IS DISTINCT FROM OLD.role THEN 'role' END,
        CASE WHEN NEW.email_verified IS DISTINCT FROM OLD.email_verified
             THEN 'email_verified' END,
        CASE WHEN NEW.phone_verified IS DISTINCT FROM OLD.phone_verified
             THEN 'phone_verified' END,
        CASE WHEN NEW.failed_login_attempts IS DISTINCT FROM OLD.failed_login_attempts
             THEN 'failed_login_attempts' END,
        CASE WHEN NEW.locked_until IS DISTINCT FROM OLD.locked_until
             THEN 'locked_until' END,
        CASE WHEN NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
             THEN 'deleted_at' END
    ], NULL);

    IF cardinality(changed) = 0 THEN
        RETURN NEW;
    END IF;

    IF acting_role NOT IN ('admin', 'super_admin') THEN
        RAISE EXCEPTION 'only an admin may change users.%',
                array_to_string(changed, ', users.')
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('app.role is %L, user %s.', acting_role, OLD.id),
                  HINT = 'An administrator''s transaction runs SET LOCAL app.role = ''admin''.';
    END IF;

    IF NEW.role IS DISTINCT FROM OLD.role
       AND 'super_admin' IN (OLD.role, NEW.role)
       AND acting_role <> 'super_admin' THEN
        RAISE EXCEPTION 'only a super_admin may grant or revoke the super_admin role'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('user %s: %s -> %s, app.role is %L.',
                                  OLD.id, OLD.role, NEW.role, acting_role);
    END IF;

    RETURN NEW;
END;
$fn$;

COMMENT ON FUNCTION users_guard_privileged_columns() IS
    'Lets only admins change privileged columns of users (asyncmig sample migration 003).';

CREATE TRIGGER users_guard_privileged_columns
    BEFORE UPDATE ON users
    FOR EACH ROW
    EXECUTE FUNCTION users_guard_privileged_columns();

ALTER TABLE users_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE users_audit FORCE ROW LEVEL SECURITY;

CREATE POLICY users_audit_select_policy ON users_audit
    FOR SELECT
    USING (auth.uid() = user_id OR auth.role() IN ('admin', 'super_admin'));

CREATE POLICY users_audit_insert_policy ON users_audit
    FOR INSERT
    WITH CHECK (pg_trigger_depth() > 0);
