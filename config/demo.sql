-- The demo migration: a table with data, then schema changes zdmproxy runs safely.
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz DEFAULT now());
INSERT INTO accounts (id, email) SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 100000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint, amount_cents int NOT NULL);
INSERT INTO orders SELECT g, 1 + g % 100000, g % 5000 FROM generate_series(1, 200000) g;

-- Expand: a nullable column with a constant default is a catalog-only change (PostgreSQL 11+).
ALTER TABLE accounts ADD COLUMN plan text DEFAULT 'free';
-- Index without blocking writes; a failed build would be cleaned up and retried.
CREATE INDEX CONCURRENTLY orders_account_id_idx ON orders (account_id);
-- Foreign key in two steps: a brief lock without a scan, then a validation that blocks no writes.
ALTER TABLE orders ADD CONSTRAINT orders_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_account_fk;
