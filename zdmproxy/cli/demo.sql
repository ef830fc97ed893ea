-- The demo's own SQL (`zdmproxy demo`): the application it plays, and the migration it submits.
-- Loaded by name (engine/queries.load_queries); none of it is zdmproxy's engine SQL.

-- name: exists
SELECT to_regclass('demo_accounts') IS NOT NULL

-- name: create_table
CREATE TABLE demo_accounts (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    balance_cents bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
)

-- name: fill_table
INSERT INTO demo_accounts (id, email, balance_cents)
SELECT g, 'user' || g || '@example.com', g % 10000 FROM generate_series(1, $1::bigint) g

-- name: analyze_table
ANALYZE demo_accounts

-- name: read
SELECT email, balance_cents FROM demo_accounts WHERE id = $1

-- name: write
UPDATE demo_accounts SET balance_cents = balance_cents + 1 WHERE id = $1

-- name: hold
-- A report that read the table in a transaction and went idle: it holds AccessShareLock.
BEGIN;
SELECT count(*) FROM demo_accounts WHERE id < 100

-- name: release
COMMIT

-- name: migration
ALTER TABLE demo_accounts ADD COLUMN signup_token uuid NOT NULL DEFAULT gen_random_uuid();
CREATE INDEX demo_accounts_email_idx ON demo_accounts (email);

-- name: naive_column
ALTER TABLE demo_accounts ADD COLUMN referral_token uuid NOT NULL DEFAULT gen_random_uuid()

-- name: naive_index
CREATE INDEX demo_accounts_email_as_written_idx ON demo_accounts (email)

-- name: outcome
-- What the demo's zdmproxy migration left: the same as the statements as written would.
SELECT
    (SELECT attnotnull FROM pg_attribute
      WHERE attrelid = 'demo_accounts'::regclass AND attname = 'signup_token') AS token_not_null,
    (SELECT count(*) FROM demo_accounts WHERE signup_token IS NULL) AS token_nulls,
    (SELECT indisvalid FROM pg_index WHERE indexrelid = 'demo_accounts_email_idx'::regclass) AS index_valid
