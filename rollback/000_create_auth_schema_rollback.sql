-- Rollback for: 000_create_auth_schema
--
-- Runs after 001's rollback (newest first), so no policy uses these functions any
-- more. No CASCADE: if something else has been put into the auth schema, this fails
-- and says what, instead of silently dropping it.

DROP FUNCTION IF EXISTS auth.role();
DROP FUNCTION IF EXISTS auth.uid();
DROP SCHEMA IF EXISTS auth;
