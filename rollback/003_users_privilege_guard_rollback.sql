-- Rollback for: 003_users_privilege_guard
--
-- Restores 002's state exactly: users_audit without row level security (neither
-- enabled nor forced) and no policies on it, users without the guard trigger. The
-- audit rows stay (the table belongs to 001). No CASCADE: anything that came to depend
-- on the guard function makes this fail and say what.

DROP POLICY IF EXISTS users_audit_insert_policy ON users_audit;
DROP POLICY IF EXISTS users_audit_select_policy ON users_audit;
ALTER TABLE users_audit NO FORCE ROW LEVEL SECURITY;
ALTER TABLE users_audit DISABLE ROW LEVEL SECURITY;

DROP TRIGGER IF EXISTS users_guard_privileged_columns ON users;
DROP FUNCTION IF EXISTS users_guard_privileged_columns();
