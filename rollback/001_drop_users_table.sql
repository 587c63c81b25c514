-- Rollback for: 001_create_users_table (the seed's file name for it)
--
-- Reverse order of creation. Dropping a table drops its indexes, triggers and
-- policies too; they are named here anyway so the file reads as the inverse of 001
-- and fails loudly (no CASCADE) if a later migration still depends on something.

DROP TABLE IF EXISTS users_audit;

DROP POLICY IF EXISTS users_update_policy ON users;
DROP POLICY IF EXISTS users_select_policy ON users;

DROP TRIGGER IF EXISTS update_users_updated_at ON users;
DROP FUNCTION IF EXISTS update_updated_at_column();

DROP TABLE IF EXISTS users;
