-- Migration: create users
-- Author: someone
BEGIN;
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
CREATE INDEX users_email_idx ON users (email);
COMMIT;
