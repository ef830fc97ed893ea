"""The lock catalogue without a database: conservative answers, version differences, refusals.

Without catalog facts every answer that depends on the catalog must be the
careful one (a rewrite, a scan, children locked) and must say so in a note;
what PostgreSQL actually does is checked on real servers by
tests/test_lock_catalogue.py.
"""

from __future__ import annotations

import itertools

import pytest

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql.catalogue import classify, mentioned_relations
from zdmproxy.sql.effects import Effects
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, ColumnType, RelationInfo
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName, strongest
from zdmproxy.sql.parse import parse_script

T = RelationName(None, "t")
AEL = LockMode.ACCESS_EXCLUSIVE


def effects(sql: str, version_num: int | None = None, facts: CatalogFacts | None = None) -> Effects:
    (statement,) = parse_script(sql)
    return classify(statement, facts, version_num)


def modes(result: Effects) -> dict[str, LockMode]:
    return {str(lock.relation): lock.mode for lock in result.locks}


# --- conservative answers without a database ---


def test_unknown_default_function_assumes_a_rewrite_and_says_so() -> None:
    result = effects("ALTER TABLE t ADD COLUMN c int DEFAULT my_next_number()")
    assert result.rewrites == (T,)
    assert result.scans == (T,)
    assert any("my_next_number()" in note and "unknown" in note for note in result.notes)


def test_known_volatility_decides_the_rewrite() -> None:
    stable = CatalogFacts(known_functions=frozenset({"my_next_number"}))
    volatile = CatalogFacts(
        known_functions=frozenset({"my_next_number"}), volatile_functions=frozenset({"my_next_number"})
    )
    assert effects("ALTER TABLE t ADD COLUMN c int DEFAULT my_next_number()", facts=stable).rewrites == ()
    assert effects("ALTER TABLE t ADD COLUMN c int DEFAULT my_next_number()", facts=volatile).rewrites == (T,)


def test_alter_column_type_without_facts_assumes_a_rewrite() -> None:
    result = effects("ALTER TABLE t ALTER COLUMN c TYPE varchar(64)")
    assert result.rewrites == (T,)
    assert modes(result) == {"t": AEL}
    assert any("current type is unknown" in note for note in result.notes)


def test_alter_column_type_with_facts_knows_a_free_widening() -> None:
    facts = CatalogFacts(
        relations={
            T: RelationInfo(RelationName("public", "t"), "r", columns={"c": ColumnType("varchar", (32,))})
        }
    )
    assert effects("ALTER TABLE t ALTER COLUMN c TYPE varchar(64)", facts=facts).rewrites == ()
    assert effects("ALTER TABLE t ALTER COLUMN c TYPE varchar(16)", facts=facts).rewrites == (
        RelationName("public", "t"),
    )


def test_drop_index_without_facts_notes_the_unknown_table() -> None:
    result = effects("DROP INDEX t_c_idx")
    assert modes(result) == {"t_c_idx": AEL}
    assert any("the table of index t_c_idx is unknown" in note for note in result.notes)


def test_set_not_null_scans_unless_the_column_is_known_not_null() -> None:
    assert effects("ALTER TABLE t ALTER COLUMN c SET NOT NULL").scans == (T,)
    facts = CatalogFacts(
        relations={T: RelationInfo(T, "r", columns={"c": ColumnType("int4", not_null=True)})}
    )
    assert effects("ALTER TABLE t ALTER COLUMN c SET NOT NULL", facts=facts).scans == ()


def test_truncate_rewrites_without_reading() -> None:
    result = effects("TRUNCATE t")
    assert result.rewrites == (T,)
    assert result.scans == ()


def test_insert_select_reads_its_source_in_full_unless_filtered() -> None:
    assert effects("INSERT INTO t SELECT * FROM old").scans == (RelationName(None, "old"),)
    assert effects("INSERT INTO t SELECT * FROM old WHERE id BETWEEN 1 AND 1000").scans == ()
    assert effects("INSERT INTO t VALUES (1)").scans == ()


# --- partitions and inheritance ---

PARENT = RelationName("public", "p")
LEAF_1 = RelationName("public", "p_1")
SUB = RelationName("public", "p_2")
LEAF_2 = RelationName("public", "p_2a")
PARTITIONED = CatalogFacts(
    relations={
        RelationName(None, "p"): RelationInfo(
            PARENT,
            "p",
            children=(ChildInfo(LEAF_1, "r"), ChildInfo(SUB, "p"), ChildInfo(LEAF_2, "r")),
        )
    }
)


def test_without_facts_recursing_statements_note_that_children_are_locked_too() -> None:
    for sql in ("ALTER TABLE t ADD COLUMN c int", "TRUNCATE t", "ALTER TABLE t ALTER COLUMN c SET NOT NULL"):
        result = effects(sql)
        assert modes(result) == {"t": AEL}
        assert any("partitions or inheritance children" in note for note in result.notes), sql


def test_only_reaches_no_children() -> None:
    assert not any("children" in note for note in effects("ALTER TABLE ONLY t ADD COLUMN c int").notes)
    result = effects("ALTER TABLE ONLY p ALTER COLUMN c SET STATISTICS 10", facts=PARTITIONED)
    assert modes(result) == {"public.p": LockMode.SHARE_UPDATE_EXCLUSIVE}


def test_recursing_alter_locks_every_level_and_scans_only_leaves() -> None:
    result = effects("ALTER TABLE p ADD CONSTRAINT c_positive CHECK (c > 0)", facts=PARTITIONED)
    assert modes(result) == {"public.p": AEL, "public.p_1": AEL, "public.p_2": AEL, "public.p_2a": AEL}
    assert result.scans == (LEAF_1, LEAF_2)


def test_truncate_of_a_partitioned_table_rewrites_its_leaves() -> None:
    result = effects("TRUNCATE p", facts=PARTITIONED)
    assert set(modes(result)) == {"public.p", "public.p_1", "public.p_2", "public.p_2a"}
    assert result.rewrites == (LEAF_1, LEAF_2)
    assert result.scans == ()


def test_create_index_on_a_partitioned_table() -> None:
    result = effects("CREATE INDEX p_c_idx ON p (c)", facts=PARTITIONED)
    assert modes(result)["public.p_2a"] is LockMode.SHARE
    assert result.scans == (LEAF_1, LEAF_2)
    assert effects("CREATE INDEX p_c_idx ON ONLY p (c)", facts=PARTITIONED).scans == ()
    with pytest.raises(UnsupportedStatement, match="each partition"):
        effects("CREATE INDEX CONCURRENTLY p_c_idx ON p (c)", facts=PARTITIONED)


def test_dropping_a_partition_locks_its_parent() -> None:
    facts = CatalogFacts(
        relations={RelationName(None, "p_1"): RelationInfo(LEAF_1, "r", partition_of=PARENT)}
    )
    assert modes(effects("DROP TABLE p_1", facts=facts)) == {"public.p_1": AEL, "public.p": AEL}


def test_unique_on_a_partitioned_table_locks_partitions_harder_from_17() -> None:
    sql = "ALTER TABLE p ADD CONSTRAINT k UNIQUE (c)"
    assert modes(effects(sql, 160000, PARTITIONED))["public.p_1"] is LockMode.SHARE
    assert modes(effects(sql, 180000, PARTITIONED))["public.p_1"] is AEL


# --- version differences ---


def test_add_column_constant_default_rewrites_before_11_only() -> None:
    sql = "ALTER TABLE t ADD COLUMN c int DEFAULT 5"
    assert effects(sql, 100000).rewrites == (T,)
    assert effects(sql, 110000).rewrites == ()


def test_attach_partition_parent_mode_by_version() -> None:
    sql = "ALTER TABLE t ATTACH PARTITION t_1 FOR VALUES IN (1)"
    assert modes(effects(sql, 110000))["t"] is AEL
    assert modes(effects(sql, 120000))["t"] is LockMode.SHARE_UPDATE_EXCLUSIVE
    assert modes(effects(sql, 120000))["t_1"] is AEL


def test_reindex_concurrently_needs_12() -> None:
    with pytest.raises(UnsupportedStatement, match="PostgreSQL 12"):
        effects("REINDEX INDEX CONCURRENTLY t_c_idx", 110000)
    assert not effects("REINDEX INDEX CONCURRENTLY t_c_idx", 120000).transactional


def test_detach_concurrently_needs_14() -> None:
    with pytest.raises(UnsupportedStatement, match="PostgreSQL 14") as caught:
        effects("ALTER TABLE t DETACH PARTITION t_1 CONCURRENTLY", 130000)
    assert "plain DETACH PARTITION" in caught.value.message
    assert not effects("ALTER TABLE t DETACH PARTITION t_1 CONCURRENTLY", 140000).transactional


# --- refusals say what to do instead ---


@pytest.mark.parametrize(
    ("sql", "instead"),
    [
        ("BEGIN", "remove the transaction control statements"),
        ("COMMIT", "remove the transaction control statements"),
        ("SET lock_timeout = '1s'", "ZDM_LOCK_TIMEOUT"),
        ("CREATE INDEX CONCURRENTLY ON t (c)", "name the index"),
    ],
)
def test_refusals_say_what_to_write_instead(sql: str, instead: str) -> None:
    with pytest.raises(UnsupportedStatement) as caught:
        effects(sql)
    assert instead in caught.value.message
    assert caught.value.as_dict()["code"] == "unsupported_statement"


# --- lock modes ---


def test_conflict_table_is_symmetric() -> None:
    for a, b in itertools.product(LockMode, repeat=2):
        assert a.conflicts_with(b) == b.conflicts_with(a), (a, b)


@pytest.mark.parametrize(
    ("a", "b", "conflict"),
    [
        (LockMode.ACCESS_SHARE, LockMode.ACCESS_EXCLUSIVE, True),
        (LockMode.ACCESS_SHARE, LockMode.EXCLUSIVE, False),
        (LockMode.ROW_EXCLUSIVE, LockMode.SHARE_UPDATE_EXCLUSIVE, False),
        (LockMode.ROW_EXCLUSIVE, LockMode.SHARE, True),
        (LockMode.SHARE_UPDATE_EXCLUSIVE, LockMode.SHARE_UPDATE_EXCLUSIVE, True),
        (LockMode.SHARE, LockMode.SHARE, False),
        (LockMode.ROW_SHARE, LockMode.EXCLUSIVE, True),
        (LockMode.ROW_EXCLUSIVE, LockMode.ROW_EXCLUSIVE, False),
    ],
)
def test_known_conflicts(a: LockMode, b: LockMode, conflict: bool) -> None:
    assert a.conflicts_with(b) is conflict


def test_access_exclusive_conflicts_with_everything_and_access_share_with_it_alone() -> None:
    assert all(AEL.conflicts_with(mode) for mode in LockMode)
    assert [m for m in LockMode if LockMode.ACCESS_SHARE.conflicts_with(m)] == [AEL]


def test_mode_names_round_trip() -> None:
    for mode in LockMode:
        assert LockMode.from_pg_name(mode.pg_name) is mode
    assert AEL.pg_name == "AccessExclusiveLock"
    assert LockMode.SHARE_ROW_EXCLUSIVE.sql_name == "SHARE ROW EXCLUSIVE"


def test_strongest_keeps_one_request_per_relation() -> None:
    requests = [
        LockRequest(T, LockMode.ACCESS_SHARE),
        LockRequest(RelationName(None, "u"), LockMode.SHARE),
        LockRequest(T, AEL),
    ]
    assert [(str(r.relation), r.mode) for r in strongest(requests)] == [("t", AEL), ("u", LockMode.SHARE)]


def test_a_cte_is_not_a_table() -> None:
    result = effects("WITH recent AS (SELECT * FROM t) SELECT * FROM recent")
    assert modes(result) == {"t": LockMode.ACCESS_SHARE}
    assert result.scans == (T,)


def test_drop_column_used_by_a_view_is_flagged() -> None:
    items = RelationName("public", "items")
    view = RelationName("public", "item_totals")
    facts = CatalogFacts(
        server_version_num=180000,
        relations={RelationName(None, "items"): RelationInfo(items, "r", column_views={"a": (view,)})},
    )
    (plain,) = parse_script("ALTER TABLE items DROP COLUMN a")
    (cascade,) = parse_script("ALTER TABLE items DROP COLUMN a CASCADE")
    (other,) = parse_script("ALTER TABLE items DROP COLUMN b")
    assert "used by view public.item_totals: DROP COLUMN fails without CASCADE" in " ".join(
        classify(plain, facts).notes
    )
    assert "used by view public.item_totals: CASCADE drops them too" in " ".join(
        classify(cascade, facts).notes
    )
    assert classify(other, facts).notes == ()


def test_drop_table_used_by_views_is_flagged() -> None:
    items = RelationName("public", "items")
    view = RelationName("public", "item_totals")
    facts = CatalogFacts(
        server_version_num=180000,
        relations={RelationName(None, "items"): RelationInfo(items, "r", views=(view,))},
    )
    (plain,) = parse_script("DROP TABLE items")
    (cascade,) = parse_script("DROP TABLE items CASCADE")
    assert classify(plain, facts).notes == (
        "public.items is used by public.item_totals: DROP fails without CASCADE",
    )
    assert classify(cascade, facts).notes == (
        "public.items is used by public.item_totals: CASCADE drops them too",
    )


# --- what the catalogue will not guess ---


@pytest.mark.parametrize(
    "sql",
    [
        "DROP SCHEMA side CASCADE",
        "DROP TYPE addr CASCADE",
        "DROP STATISTICS orders_stats",
        "DROP FUNCTION touch() CASCADE",
        "ALTER DOMAIN posint ADD CONSTRAINT pos CHECK (VALUE > 0)",
        "ALTER TYPE addr ADD ATTRIBUTE city text CASCADE",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO public",
        "REFRESH MATERIALIZED VIEW order_totals",
        "CALL do_things()",
    ],
)
def test_without_the_facts_it_needs_a_statement_is_not_catalogued_and_claims_no_lock(sql: str) -> None:
    result = effects(sql)
    assert result.unverified and result.locks == ()


def test_a_write_through_a_view_with_instead_triggers_is_not_catalogued() -> None:
    view = RelationName("public", "v")
    facts = CatalogFacts(
        relations={
            RelationName(None, "v"): RelationInfo(view, "v", view_definition="SELECT id FROM t", instead=True)
        }
    )
    assert effects("INSERT INTO v VALUES (1)", facts=facts).unverified
    plain = CatalogFacts(
        relations={RelationName(None, "v"): RelationInfo(view, "v", view_definition="SELECT id FROM t")}
    )
    assert modes(effects("INSERT INTO v VALUES (1)", facts=plain)) == {
        "public.v": LockMode.ROW_EXCLUSIVE,
        "t": LockMode.ROW_EXCLUSIVE,
    }


def test_lock_table_takes_exactly_the_mode_written() -> None:
    for mode in LockMode:
        assert modes(effects(f"LOCK TABLE ONLY t IN {mode.sql_name} MODE")) == {"t": mode}


ROUTED = CatalogFacts(
    relations={
        RelationName(None, "p"): RelationInfo(
            PARENT,
            "p",
            columns={"id": ColumnType("int8"), "day": ColumnType("int4")},
            partition_key="RANGE (day)",
            children=(
                ChildInfo(LEAF_1, "r", bound="FOR VALUES FROM (MINVALUE) TO (10)"),
                ChildInfo(SUB, "p", bound="FOR VALUES FROM (10) TO (20)"),
                ChildInfo(LEAF_2, "r", depth=2, bound="FOR VALUES IN (1)"),
                ChildInfo(RelationName("public", "p_other"), "r", bound="DEFAULT"),
            ),
        )
    }
)


@pytest.mark.parametrize(
    ("sql", "partitions"),
    [
        ("INSERT INTO p VALUES (1, -3)", {"public.p_1"}),
        ("INSERT INTO p (day, id) VALUES (25, 1), (NULL, 2)", {"public.p_other"}),
        ("INSERT INTO p VALUES (1, 5), (2, 30)", {"public.p_1", "public.p_other"}),
    ],
)
def test_constant_keys_route_to_the_partitions_the_bounds_name(sql: str, partitions: set[str]) -> None:
    result = effects(sql, facts=ROUTED)
    assert set(modes(result)) - {"public.p"} == partitions
    assert not result.notes


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO p VALUES (1, 15)",  # into a partition that is partitioned again
        "INSERT INTO p SELECT 1, 5",
        "INSERT INTO p VALUES (1, now())",
    ],
)
def test_rows_whose_partition_cannot_be_told_say_so(sql: str) -> None:
    result = effects(sql, facts=ROUTED)
    # Every partition is claimed: the one the rows land in must not be missed.
    (parent,) = ROUTED.relations.values()
    assert set(modes(result)) == {"public.p", *(str(child.name) for child in parent.children)}
    assert any("cannot tell" in note for note in result.notes)


@pytest.mark.parametrize(
    "sql", ["DROP CAST (int AS text)", "DROP TRANSFORM FOR int LANGUAGE sql", "DROP CAST (a AS b) CASCADE"]
)
def test_objects_named_by_types_are_no_relations(sql: str) -> None:
    """DROP CAST names two types, not a relation: no lock, no crash (it raised AttributeError)."""
    (statement,) = parse_script(sql)
    assert mentioned_relations(statement) == []
    assert effects(sql).locks == ()


def test_a_publication_set_table_is_not_catalogued() -> None:
    """SET TABLE also locks the tables it takes out of the publication, which no fact lists."""
    assert effects("ALTER PUBLICATION p SET TABLE t").unverified
    assert not effects("ALTER PUBLICATION p ADD TABLE t").unverified
    assert not effects("ALTER PUBLICATION p SET (publish = 'insert')").unverified


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE PUBLICATION p FOR TABLES IN SCHEMA s",
        "CREATE PUBLICATION p FOR ALL TABLES",
        "ALTER PUBLICATION p ADD TABLES IN SCHEMA s",
        "ALTER PUBLICATION p DROP TABLES IN SCHEMA s",
    ],
)
def test_publications_of_schemas_lock_no_table(sql: str) -> None:
    """A schema or ALL TABLES names no table, and PostgreSQL locks none (pg_locks cases in
    tests/test_lock_catalogue.py): catalogued, not refused as unknown."""
    result = effects(sql)
    assert result.unverified is None and result.locks == ()


def test_dropping_an_attribute_with_cascade_is_not_catalogued() -> None:
    """DROP ATTRIBUTE ... CASCADE drops what depends on the attribute in any table (alter_table.sql:
    a CHECK on a column of the type locks that table), which no fact lists; the typed tables are
    known, the dependents are not."""
    facts = CatalogFacts(typed_tables={'"ct"': ((RelationName("public", "tt"), "r"),)})
    assert effects("ALTER TYPE ct DROP ATTRIBUTE y CASCADE", facts=facts).unverified
    added = effects("ALTER TYPE ct ADD ATTRIBUTE z int CASCADE", facts=facts)
    assert added.unverified is None and modes(added)["public.tt"] == AEL
