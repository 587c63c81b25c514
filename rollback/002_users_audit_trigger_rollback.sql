-- Rollback for: 002_users_audit_trigger
--
-- Keeps the rows already in users_audit: the table belongs to 001.

DROP TRIGGER IF EXISTS users_audit_row ON users;
DROP FUNCTION IF EXISTS users_audit_row();
