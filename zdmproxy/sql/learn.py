"""What a script's earlier statements teach the catalogue about its later ones.

Catalog facts are read before the script runs, so a constraint the script
adds is unknown to them; yet the most common safe migration is exactly
``ADD CONSTRAINT … NOT VALID`` followed by ``VALIDATE CONSTRAINT`` in the same
file, and validating a foreign key also locks the referenced table. Only
relations the catalog already knows are updated: for a table the script
creates, every other fact (children, foreign-key parents) is unknown too, and
the catalogue's cautious answers for unknown relations must stay in force.
"""

from __future__ import annotations

import copy
import dataclasses

from pglast import ast
from pglast.enums import AlterTableType, ConstrType
from pglast.stream import RawStream

from zdmproxy.sql.facts import CatalogFacts, ConstraintInfo, IndexInfo
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.parse import Statement
from zdmproxy.sql.types import not_null_check_column

_KINDS = {
    ConstrType.CONSTR_FOREIGN: "f",
    ConstrType.CONSTR_CHECK: "c",
    ConstrType.CONSTR_PRIMARY: "p",
    ConstrType.CONSTR_UNIQUE: "u",
    ConstrType.CONSTR_EXCLUSION: "x",
    ConstrType.CONSTR_NOTNULL: "n",
}


def _created_table(node: ast.Node) -> RelationName | None:
    """The table or materialized view a CREATE TABLE [AS] / SELECT INTO statement creates."""
    if isinstance(node, ast.CreateStmt) and node.relation is not None:
        return range_var_name(node.relation)
    if isinstance(node, ast.CreateTableAsStmt) and node.into is not None and node.into.rel is not None:
        return range_var_name(node.into.rel)
    if isinstance(node, ast.SelectStmt) and node.intoClause is not None and node.intoClause.rel is not None:
        return range_var_name(node.intoClause.rel)
    return None


def learn(facts: CatalogFacts, statement: Statement) -> CatalogFacts:
    """``facts`` as they will be after ``statement`` ran: named constraints it adds (a CHECK
    with its expression), validates or drops, columns it makes NOT NULL, and named indexes it
    creates, and the tables it creates (empty of traffic, holding only the script's own rows)."""
    node = statement.node
    created = _created_table(node)
    if created is not None:
        return dataclasses.replace(facts, created=facts.created | {created})
    if isinstance(node, ast.IndexStmt):
        return _learn_index(facts, node)
    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return facts
    written = range_var_name(node.relation)
    info = facts.resolve(written)
    if info is None:
        return facts
    added = []
    validated: set[str] = set()
    dropped: set[str] = set()
    not_null: set[str] = set()
    for cmd in node.cmds or ():
        con = cmd.def_
        if cmd.subtype == AlterTableType.AT_ValidateConstraint and cmd.name:
            validated.add(cmd.name)
        if cmd.subtype == AlterTableType.AT_DropConstraint and cmd.name:
            dropped.add(cmd.name)
        if cmd.subtype == AlterTableType.AT_SetNotNull and cmd.name:
            not_null.add(cmd.name)
        if isinstance(con, ast.Constraint) and con.contype == ConstrType.CONSTR_NOTNULL:
            not_null.update(str(key.sval) for key in con.keys or ())  # attnotnull, even NOT VALID (18)
        if cmd.subtype != AlterTableType.AT_AddConstraint or not isinstance(con, ast.Constraint):
            continue
        if not con.conname or con.contype not in _KINDS:
            continue
        referenced = facts.qualify(range_var_name(con.pktable)) if con.pktable is not None else None
        added.append(
            ConstraintInfo(
                name=con.conname,
                kind=_KINDS[con.contype],
                validated=not con.skip_validation,
                no_inherit=bool(con.is_no_inherit),
                referenced=referenced,
                definition=_check_definition(con),
                not_null_column=_not_null_column(con),
                columns=tuple(str(key.sval) for key in con.keys or ()),
            )
        )
    if not (added or validated or dropped or not_null):
        return facts
    kept = (
        dataclasses.replace(c, validated=True) if c.name in validated else c
        for c in info.constraints
        if c.name not in dropped
    )
    columns = {
        name: dataclasses.replace(column, not_null=True) if name in not_null else column
        for name, column in info.columns.items()
    }
    updated = dataclasses.replace(info, constraints=(*kept, *added), columns=columns)
    # A dropped constraint's name (and its index's) is free again for the names PostgreSQL chooses.
    gone = [c for c in info.constraints if c.name in dropped]
    return dataclasses.replace(
        facts,
        relations={**facts.relations, written: updated},
        constraint_names_in_use=facts.constraint_names_in_use
        - {RelationName(info.name.schema, c.name) for c in gone},
        names_in_use=facts.names_in_use - {RelationName(info.name.schema, c.index) for c in gone if c.index},
    )


def _check_definition(con: ast.Constraint) -> str | None:
    """A CHECK's definition as pg_get_constraintdef spells its shape (``CHECK (expr)``)."""
    if con.contype != ConstrType.CONSTR_CHECK or con.raw_expr is None:
        return None
    return f"CHECK ({RawStream()(con.raw_expr)})"


def _not_null_column(con: ast.Constraint) -> str | None:
    """The column of a ``CHECK (col IS NOT NULL)``: valid, it spares SET NOT NULL its scan."""
    if con.contype != ConstrType.CONSTR_CHECK or con.raw_expr is None:
        return None
    return not_null_check_column(RawStream()(con.raw_expr))


def _learn_index(facts: CatalogFacts, node: ast.IndexStmt) -> CatalogFacts:
    """A named index the statement creates joins its table's indexes (attaching a partition
    builds the parent's indexes the partition lacks)."""
    written = range_var_name(node.relation)
    info = facts.resolve(written)
    if info is None or not node.idxname:
        return facts
    index = RelationName(info.name.schema, node.idxname)
    built = copy.copy(node)
    built.concurrent = built.if_not_exists = False  # the index it leaves, as pg_get_indexdef shows it
    definition = IndexInfo(node.idxname, RawStream()(built))
    updated = dataclasses.replace(
        info, indexes=(*info.indexes, index), index_definitions=(*info.index_definitions, definition)
    )
    return dataclasses.replace(facts, relations={**facts.relations, written: updated})
