"""The lock catalogue on DML, checked against pg_locks on every server version.

Cases found by replaying PostgreSQL's regression scripts (bench/regress_replay.py: foreign_key.sql,
updatable_views.sql, insert.sql, ...). Each runs through tests/test_lock_catalogue.py's own
check (predicted locks == pg_locks, rewrites == changed relfilenodes, scans within the claims),
on its FIXTURE plus the case's ``extra``.
"""

from __future__ import annotations

import pytest
import test_lock_catalogue as catalogue
from test_lock_catalogue import Case

# A partitioned table referencing accounts (its partition key is not in the key: the foreign
# key's query cannot prune it), a partitioned table referenced by another, and rows for both.
PARTITIONED_KEYS = """
INSERT INTO accounts (id, email) VALUES (9101, 'z'), (9102, 'z');
CREATE TABLE pfk (id int, acc bigint REFERENCES accounts ON DELETE CASCADE) PARTITION BY RANGE (id);
CREATE TABLE pfk_1 PARTITION OF pfk FOR VALUES FROM (0) TO (100);
CREATE TABLE pfk_2 PARTITION OF pfk FOR VALUES FROM (100) TO (200);
INSERT INTO pfk SELECT g, 9101 FROM generate_series(1, 150) g;
CREATE TABLE ppk (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE ppk_1 PARTITION OF ppk FOR VALUES FROM (0) TO (3000);
CREATE TABLE ppk_2 PARTITION OF ppk FOR VALUES FROM (3000) TO (6000);
INSERT INTO ppk SELECT generate_series(1, 5000);
CREATE TABLE ref_ppk (id int REFERENCES ppk ON DELETE CASCADE);
CREATE INDEX ref_ppk_id ON ref_ppk (id);
INSERT INTO ref_ppk SELECT generate_series(1, 5000);
ANALYZE;
"""

# Rules: ALSO on a table, INSTEAD on a view that is not automatically updatable; a view renaming
# a referencing column.
RULES = (
    catalogue.VIEWS
    + """
CREATE TABLE audit (id bigint);
CREATE RULE wide_log AS ON DELETE TO wide DO ALSO INSERT INTO audit VALUES (old.id);
CREATE VIEW kv AS SELECT id, v FROM wide OFFSET 0;
CREATE RULE kv_insert AS ON INSERT TO kv DO INSTEAD INSERT INTO wide VALUES (new.id, new.v);
CREATE RULE kv_update AS ON UPDATE TO kv DO INSTEAD UPDATE wide SET v = new.v WHERE id = old.id;
CREATE VIEW renamed AS SELECT id, account_id AS acc FROM orders;
"""
)

# A chain of keys whose actions write: deleting from c1 deletes from c2, which sets c3's key NULL.
CASCADES = """
CREATE TABLE c1 (id int PRIMARY KEY);
CREATE TABLE c2 (id int PRIMARY KEY, c1 int REFERENCES c1 ON DELETE CASCADE ON UPDATE CASCADE);
CREATE INDEX ON c2 (c1);
CREATE TABLE c3 (id int PRIMARY KEY, c2 int REFERENCES c2 ON DELETE SET NULL);
CREATE INDEX ON c3 (c2);
INSERT INTO c1 SELECT generate_series(1, 3000);
INSERT INTO c2 SELECT g, g FROM generate_series(1, 3000) g;
INSERT INTO c3 SELECT g, g FROM generate_series(1, 3000) g;
ANALYZE;
"""

# A table under row security whose policy reads another table, and a role it applies to.
ROW_SECURITY = """
DO $$ BEGIN CREATE ROLE zdm_rls_user; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE secret (id int PRIMARY KEY, v int);
INSERT INTO secret SELECT g, g FROM generate_series(1, 30000) g;
CREATE TABLE allowed (v int);
INSERT INTO allowed SELECT generate_series(1, 1000);  -- rows counted by the check are those it sees
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY secret_p ON secret USING (v IN (SELECT v FROM allowed));
GRANT SELECT ON ALL TABLES IN SCHEMA public TO zdm_rls_user;  -- the check counts every table's rows
GRANT UPDATE ON secret TO zdm_rls_user;
ANALYZE;
SET ROLE zdm_rls_user;
"""

# A key referencing one partition (lp_1) of a partitioned table, not the table.
PARTITION_REFERENCED = """
CREATE TABLE lp (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE lp_1 PARTITION OF lp FOR VALUES FROM (0) TO (5000);
CREATE TABLE lp_2 PARTITION OF lp FOR VALUES FROM (5000) TO (10000);
INSERT INTO lp SELECT generate_series(1, 9000);
CREATE TABLE lref (id int REFERENCES lp_1 ON DELETE CASCADE);
CREATE INDEX ON lref (id);
INSERT INTO lref SELECT generate_series(1, 3000);
ANALYZE;
"""

# A disabled rule, and a key whose triggers are all disabled.
DISABLED = """
CREATE TABLE audit (id bigint);
CREATE RULE keyless_log AS ON INSERT TO keyless DO ALSO INSERT INTO audit VALUES (new.id);
ALTER TABLE keyless DISABLE RULE keyless_log;
ALTER TABLE orders DISABLE TRIGGER ALL;
"""

# HASH on two integer columns (moduli 2 and 4), and RANGE on two columns with a LIST partition
# below it.
ROUTING = """
CREATE TABLE hp (a int, b bigint, c text) PARTITION BY HASH (a, b);
CREATE TABLE hp_a PARTITION OF hp FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE hp_b PARTITION OF hp FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE hp_c PARTITION OF hp FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE TABLE mr (a int, b int, c int) PARTITION BY RANGE (a, b);
CREATE TABLE mr_1 PARTITION OF mr FOR VALUES FROM (MINVALUE, MINVALUE) TO (10, 5);
CREATE TABLE mr_2 PARTITION OF mr FOR VALUES FROM (10, 5) TO (20, MAXVALUE) PARTITION BY LIST (c);
CREATE TABLE mr_2a PARTITION OF mr_2 FOR VALUES IN (1, 2);
CREATE TABLE mr_2d PARTITION OF mr_2 DEFAULT;
"""

CASES: dict[str, Case] = {
    # RI_FKey_check: a key with a NULL passes without looking at the referenced table.
    "insert_null_key": Case("INSERT INTO orders (id, account_id, ref) VALUES (200000, NULL, NULL)"),
    "insert_key_left_out": Case("INSERT INTO orders (id, amount) VALUES (200001, DEFAULT)"),
    "insert_one_row_with_key": Case(
        "INSERT INTO orders (id, account_id, ref) VALUES (200002, NULL, NULL), (200003, NULL, 1)"
    ),
    "update_key_to_null": Case("UPDATE orders SET account_id = NULL, ref = NULL WHERE id = 1"),
    # RI_FKey_pk_upd_check_required: a referenced key set to itself runs no action.
    "update_referenced_key_to_itself": Case(
        "UPDATE accounts SET id = id WHERE id = 9002", extra=catalogue.KEYS
    ),
    # A partitioned referencing table is queried without ONLY: the action reaches its partitions.
    "delete_referenced_by_partitioned": Case("DELETE FROM accounts WHERE id = 9101", extra=PARTITIONED_KEYS),
    # A partition's copies of its parent's keys fire on its rows, on both sides.
    "insert_into_referencing_partition": Case("INSERT INTO pfk_1 VALUES (5, 9102)", extra=PARTITIONED_KEYS),
    "delete_from_referenced_partition": Case("DELETE FROM ppk_1 WHERE id = 5", extra=PARTITIONED_KEYS),
    # The rewriter adds a rule's actions to the statement, or puts them in its place.
    "delete_with_also_rule": Case("DELETE FROM wide WHERE id = 1", extra=RULES),
    "insert_into_view_with_instead_rule": Case("INSERT INTO kv VALUES (5000, 1)", extra=RULES),
    "update_view_with_instead_rule": Case("UPDATE kv SET v = 6 WHERE id = 5", extra=RULES),
    # Through a view: an INSERT writes the base table only, its foreign keys fire.
    "insert_through_view_on_inheritance_parent": Case("INSERT INTO base_v VALUES (5)", extra=RULES),
    "insert_through_view_renaming_key": Case("INSERT INTO renamed VALUES (300000, 1)", extra=RULES),
    # MERGE fires the foreign keys' triggers, and writes through views from 17 on.
    "merge_insert_checks_key": Case(
        "MERGE INTO kids t USING (VALUES (500000, 9001)) AS s(id, acc) ON t.id = s.id "
        "WHEN NOT MATCHED THEN INSERT (id, acc) VALUES (s.id, s.acc)",
        extra=catalogue.KEYS,
        planner_decides=frozenset({"public.kids"}),
    ),
    "merge_into_view": Case(
        "MERGE INTO wide_v t USING (VALUES (1, 5)) AS s(id, v) ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET v = s.v",
        min_version=17,
        extra=catalogue.VIEWS,
        planner_decides=frozenset({"public.wide"}),
    ),
    # Tuple routing, as PostgreSQL does it: hashes, row-wise range bounds, partitions below partitions.
    "insert_hash_one_row": Case("INSERT INTO hp VALUES (1, 1, 'x')", extra=ROUTING),
    "insert_hash_rows": Case(
        "INSERT INTO hp (a, b) VALUES (2, 5), (3, NULL), (-4, 123456789012), (NULL, -9)", extra=ROUTING
    ),
    "insert_two_column_range_and_below": Case(
        "INSERT INTO mr VALUES (10, 4, 1), (10, 5, 1), (15, 100, 7)", extra=ROUTING
    ),
    "insert_column_left_out_is_null": Case("INSERT INTO mr (a, b) VALUES (15, 0)", extra=ROUTING),
    # A data-modifying WITH query is a statement of its own; a WITH name never hides a write target.
    "with_update_then_select": Case(
        "WITH t AS (UPDATE wide SET v = v + 1 WHERE id = 1 RETURNING *) SELECT * FROM t",
        extra=catalogue.VIEWS,
    ),
    "with_delete_then_select": Case(
        "WITH d AS (DELETE FROM pets WHERE id = 1 RETURNING owner) SELECT count(*) FROM d",
        extra=catalogue.KEYS,
    ),
    "insert_into_table_named_like_with_query": Case(
        "WITH keyless AS (SELECT 42 AS id) INSERT INTO keyless SELECT id FROM keyless"
    ),
    # The planner prunes partitions for constants on the key: those it prunes are never locked.
    "delete_pruned_by_hash_key": Case("DELETE FROM hp WHERE a = 1 AND b = 1", extra=ROUTING),
    "update_setting_a_lower_key_keeps_that_level": Case(
        "UPDATE mr SET c = 5 WHERE a = 15 AND b = 100", extra=ROUTING
    ),
    "select_pruned_by_range_key": Case("SELECT * FROM mr WHERE a = 10 AND b = 4", extra=ROUTING),
    "select_pruned_below_by_is_null": Case("SELECT count(*) FROM mr m WHERE m.c IS NULL", extra=ROUTING),
    # Disabled rules and triggers fire nothing.
    "insert_with_disabled_rule": Case("INSERT INTO keyless VALUES (5)", extra=DISABLED),
    "insert_with_key_triggers_disabled": Case(
        "INSERT INTO orders (id, account_id) VALUES (600000, 1)", extra=DISABLED
    ),
    # FOR UPDATE / SHARE: ROW SHARE on what it locks (through views, into subqueries, OF by alias).
    "select_for_update_through_view": Case(
        "SELECT * FROM wide_v WHERE id = 1 FOR UPDATE",
        extra=catalogue.VIEWS,
        planner_decides=frozenset({"public.wide"}),
    ),
    "select_for_share_of_one_table": Case(
        "SELECT * FROM base b JOIN keyless k ON b.id = k.id FOR SHARE OF b"
    ),
    "select_for_update_of_subquery": Case(
        "SELECT * FROM (SELECT id FROM keyless) s, accounts a WHERE a.id = s.id AND a.id = 1 FOR UPDATE OF s"
    ),
    # An action that writes fires the keys of the table it writes, at any depth.
    "delete_cascading_twice": Case("DELETE FROM c1 WHERE id = 5", extra=CASCADES),
    # A WITH name hides neither a recursive view's own name nor a WITH query's write target.
    "create_or_replace_recursive_view": Case(
        "CREATE OR REPLACE RECURSIVE VIEW nums (n) AS VALUES (1) UNION ALL SELECT n+1 FROM nums WHERE n < 9",
        extra="CREATE RECURSIVE VIEW nums (n) AS VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 5;",
    ),
    "create_rule_with_data_modifying_with": Case(
        "CREATE RULE keyless_ins AS ON INSERT TO keyless DO INSTEAD "
        "WITH t1 AS (INSERT INTO audit VALUES (1) RETURNING id) INSERT INTO audit2 SELECT id FROM t1",
        extra="CREATE TABLE audit (id bigint); CREATE TABLE audit2 (id bigint);",
    ),
    # ON CONFLICT DO UPDATE of a referenced key runs the keys' actions, as an UPDATE does.
    "insert_on_conflict_updating_referenced_key": Case(
        "INSERT INTO accounts (id, email) VALUES (9002, 'z') ON CONFLICT (id) DO UPDATE SET id = 9004",
        extra=catalogue.KEYS,
    ),
    # Row security: the policies' subqueries are read, for a role they apply to.
    "select_under_row_security": Case("SELECT * FROM secret WHERE id = 5", extra=ROW_SECURITY),
    "update_under_row_security": Case("UPDATE secret SET v = 2 WHERE id = 1", extra=ROW_SECURITY),
    # A key referencing a partition fires when a statement on the partitioned table reaches it.
    "delete_reaching_a_referenced_partition": Case("DELETE FROM lp WHERE id = 7", extra=PARTITION_REFERENCED),
    "delete_pruning_a_referenced_partition": Case(
        "DELETE FROM lp WHERE id = 7000", extra=PARTITION_REFERENCED
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
async def test_dml_matches_pg_locks(
    dsn: str, pg_server: object, case_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalogue.CASES, case_id, CASES[case_id])
    await catalogue.test_catalogue_matches_pg_locks(dsn, pg_server, case_id)
