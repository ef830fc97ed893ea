"""parse_script without a database: statements, their texts and positions, and syntax errors.

Positions are 0-based character offsets into the script (not byte offsets), so
a plan or an editor can point at the statement or the offending token even
when multi-byte characters come before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import ast
from pglast.enums import AlterTableType

from zdmproxy.errors import SqlParseError
from zdmproxy.sql.names import quote_ident
from zdmproxy.sql.parse import Statement, parse_script


def located(script: str, statement: Statement) -> str:
    return script[statement.position : statement.position + len(statement.text)]


def test_multi_statement_script_positions_lines_and_texts() -> None:
    script = (
        "-- add the column first\n"
        "ALTER TABLE accounts ADD COLUMN note text;\n"
        "\n"
        "  CREATE INDEX CONCURRENTLY accounts_note_idx ON accounts (note) ;\n"
        "/* then */ UPDATE accounts SET note = 'x' WHERE id = 1;SELECT 1"
    )
    statements = parse_script(script)
    assert [s.text for s in statements] == [
        "ALTER TABLE accounts ADD COLUMN note text",
        "CREATE INDEX CONCURRENTLY accounts_note_idx ON accounts (note)",
        "UPDATE accounts SET note = 'x' WHERE id = 1",
        "SELECT 1",
    ]
    assert [s.line for s in statements] == [2, 4, 5, 5]
    assert [s.position for s in statements] == [
        script.index("ALTER"),
        script.index("CREATE"),
        script.index("UPDATE"),
        script.index("SELECT 1"),
    ]
    for statement in statements:
        assert located(script, statement) == statement.text
    assert [type(s.node) for s in statements] == [
        ast.AlterTableStmt,
        ast.IndexStmt,
        ast.UpdateStmt,
        ast.SelectStmt,
    ]


def test_positions_count_characters_not_bytes() -> None:
    script = "SELECT 'éé€😀';  SELECT 2;\nCOMMENT ON TABLE t IS 'ü';"
    first, second, third = parse_script(script)
    assert second.position == script.index("SELECT 2")
    assert third.position == script.index("COMMENT")
    assert (third.line, located(script, third)) == (2, "COMMENT ON TABLE t IS 'ü'")
    assert located(script, first) == "SELECT 'éé€😀'"


@pytest.mark.parametrize(
    "script", ["", "   \n\t ", "-- only a comment", "/* a block */\n-- and a line\n", ";;"]
)
def test_scripts_without_statements_parse_to_nothing(script: str) -> None:
    assert parse_script(script) == ()


def test_comments_inside_a_statement_stay_in_its_text() -> None:
    (statement,) = parse_script("ALTER TABLE t /* why */ ADD COLUMN c int -- trailing\n;")
    assert statement.text == "ALTER TABLE t /* why */ ADD COLUMN c int -- trailing"


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "SELECT 'é';\n",
        "-- ünïcödé comment 😀\nSELECT '€€€';\n",
        "COMMENT ON TABLE t IS '漢字かな';  ",
    ],
)
def test_syntax_error_points_exactly_at_the_offending_token(prefix: str) -> None:
    script = prefix + "ALTER TABLE accounts ADD COLUMN note text WHERE id = 1"
    with pytest.raises(SqlParseError) as caught:
        parse_script(script)
    error = caught.value
    assert error.position == script.index("WHERE")
    assert script[error.position :].startswith("WHERE")
    assert error.line == script.count("\n", 0, error.position) + 1
    assert error.column == error.position - (script.rfind("\n", 0, error.position) + 1) + 1
    assert error.as_dict()["position"] == error.position
    assert error.pg is not None and error.pg.sqlstate == "42601"


def test_syntax_error_at_end_of_input() -> None:
    script = "SELECT 'ü';\nALTER TABLE"
    with pytest.raises(SqlParseError) as caught:
        parse_script(script)
    assert caught.value.line == 2
    assert caught.value.position == len(script)


# --- property: generated DDL parses back into exactly one statement of the expected kind ---

# Any character PostgreSQL accepts in a quoted identifier; NAMEDATALEN truncates at 63 bytes.
identifiers = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
).filter(lambda name: len(name.encode()) <= 63)
types = st.sampled_from(["int", "bigint", "text", "varchar(32)", "numeric(10,2)", "timestamptz", "uuid"])


@dataclass(frozen=True)
class Generated:
    sql: str
    node_type: type[ast.Node]
    check: Callable[[ast.Node], bool]


@st.composite
def ddl(draw: st.DrawFn) -> Generated:
    table, column, other = draw(identifiers), draw(identifiers), draw(identifiers)
    t, c, o = quote_ident(table), quote_ident(column), quote_ident(other)
    kind = draw(st.sampled_from(["add_column", "create_index", "rename", "check", "drop", "create_table"]))
    if kind == "add_column":
        return Generated(
            f"ALTER TABLE {t} ADD COLUMN {c} {draw(types)}",
            ast.AlterTableStmt,
            lambda n: (
                n.relation.relname == table
                and n.cmds[0].subtype == AlterTableType.AT_AddColumn
                and n.cmds[0].def_.colname == column
            ),
        )
    if kind == "create_index":
        concurrently = draw(st.sampled_from(["", " CONCURRENTLY"]))
        unique = draw(st.sampled_from(["", "UNIQUE "]))
        return Generated(
            f"CREATE {unique}INDEX{concurrently} {o} ON {t} ({c})",
            ast.IndexStmt,
            lambda n: (
                n.idxname == other
                and n.relation.relname == table
                and n.concurrent == bool(concurrently)
                and n.unique == bool(unique)
                and n.indexParams[0].name == column
            ),
        )
    if kind == "rename":
        return Generated(
            f"ALTER TABLE {t} RENAME COLUMN {c} TO {o}",
            ast.RenameStmt,
            lambda n: n.relation.relname == table and n.subname == column and n.newname == other,
        )
    if kind == "check":
        bound = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
        return Generated(
            f"ALTER TABLE {t} ADD CONSTRAINT {o} CHECK ({c} > {bound}) NOT VALID",
            ast.AlterTableStmt,
            lambda n: n.cmds[0].def_.conname == other and n.cmds[0].def_.skip_validation,
        )
    if kind == "drop":
        return Generated(
            f"DROP TABLE {o}.{t}",
            ast.DropStmt,
            lambda n: [part.sval for part in n.objects[0]] == [other, table],
        )
    return Generated(
        f"CREATE TABLE {t} ({c} {draw(types)} NOT NULL)",
        ast.CreateStmt,
        lambda n: n.relation.relname == table and n.tableElts[0].colname == column,
    )


@given(ddl(), st.sampled_from(["", "  ", "\n-- lead\n", "/* é */ "]), st.sampled_from(["", ";", " ;\n"]))
def test_generated_ddl_parses_back_into_one_statement(generated: Generated, lead: str, trail: str) -> None:
    script = lead + generated.sql + trail
    (statement,) = parse_script(script)
    assert isinstance(statement.node, generated.node_type)
    assert statement.text == generated.sql
    assert located(script, statement) == generated.sql
    assert generated.check(statement.node)
    # The text round-trips: parsing it alone gives the same tree.
    (again,) = parse_script(statement.text)
    assert again.node == statement.node


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00'"), max_size=30)
)
def test_syntax_error_position_survives_any_text_before_it(literal: str) -> None:
    script = f"SELECT '{literal}';\nALTER TABLE t ADD COLUMN c int WHERE"
    with pytest.raises(SqlParseError) as caught:
        parse_script(script)
    assert caught.value.position == script.rindex("WHERE")
