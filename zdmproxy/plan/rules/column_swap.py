"""Replacing a column through expand/contract: what ALTER COLUMN ... TYPE and RENAME COLUMN
become when running them as written would lock the table for a rewrite or break the application
version that still uses the old column.

Expand (every step short, each with its way back, which may run twice: IF EXISTS): the
replacing column is added beside the old one; a trigger keeps it in sync with every write (both
ways for a rename, so old and new application versions can write at once); a batched backfill
fills the existing rows; the old column's NOT NULL (as a validated ``CHECK (new IS NOT
NULL)``), CHECKs (``NOT VALID`` then ``VALIDATE``) and indexes (``CREATE INDEX CONCURRENTLY``)
are rebuilt on it under staging names.

Contract is one short transaction, so no application ever sees a half-swapped table: the trigger
and its function go, the old column is dropped (its values live on in the new one, so nothing is
lost), the new one takes its name, default and NOT NULL (the validated CHECK spares the scan), and
the rebuilt indexes and constraints take the old ones' names. The end state is the statement's as
written except that the column is now the table's last.

Applications connect as before: no view schema per version (pgroll's way needs each application
version to set its search_path); the sync trigger is what lets both versions run at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.stream import RawStream
from pglast.visitors import Visitor

from zdmproxy.plan.model import Backfill, Phase, Step
from zdmproxy.plan.rules.context import RuleContext, StepBuilder
from zdmproxy.plan.rules.long_lock import refuse_long_lock
from zdmproxy.sql.facts import ConstraintInfo, IndexInfo, RelationInfo
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import quote_ident, quote_relation
from zdmproxy.sql.versions import major

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1


@dataclass(frozen=True)
class Swap:
    """One column replaced by another.

    ``staging`` is the new column's name during expand (the final ``new`` name for a rename; a
    free name beside the old one for a type change). Generated SQL names the table as ``written``
    (the search path resolves it as it resolved the statement). ``forward`` computes the new column's value
    from a row (an expression over the table's columns; None: the old column's value, converted
    by assignment as ALTER COLUMN TYPE without USING does). ``both_ways``: writes to the new
    column flow back to the old one (a rename, where the new application version writes it).
    """

    table: RelationInfo
    written: RelationName  # the table as the statement names it: the facts know it by that name
    old: str
    new: str
    staging: str
    type_sql: str
    forward: ast.Node | None = None
    both_ways: bool = False


def object_name(*parts: str) -> str:
    """A name for an object zdmproxy creates, cut to PostgreSQL's 63 bytes with a digest that
    keeps two long names apart."""
    name = "_".join(parts)
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER - 9].decode(errors="ignore") + "_" + digest


def refusal(info: RelationInfo, column: str) -> str | None:
    """Why the column cannot be replaced with the end state kept equal, or None when it can."""
    facts = info.columns.get(column)
    if info.relkind != "r" or info.children or info.partition_of is not None:
        return "only a plain table without partitions or inheritance children is handled"
    if facts is None or facts.sql_type is None:
        return f"column {column} is not in the catalog facts"
    if facts.identity or facts.generated or any(c.generated for c in info.columns.values()):
        return "identity and generated columns (and tables with generated columns) are not handled"
    if info.column_views.get(column):
        return f"column {column} is used by a view"
    keys = [*info.foreign_keys, *info.referenced_by]
    if any(column in (fk.columns if fk.table == info.name else fk.referenced_columns) for fk in keys):
        return f"column {column} is part of a foreign key"
    if not info.primary_key:
        return "the table has no primary key to backfill by"
    for con in _constraints_on(info, column):
        if con.kind not in ("c", "u", "p", "n") or _deferrable(con):
            return f"constraint {con.name} on column {column} cannot be rebuilt online"
        if con.kind in ("u", "p") and _index(info, con.index) is None:
            return f"the index of constraint {con.name} is not in the catalog facts"
    return None


def _deferrable(con: ConstraintInfo) -> bool:
    """A DEFERRABLE key (USING INDEX would need the clause carried over; not done)."""
    if con.kind not in ("u", "p") or con.definition is None:
        return False
    (raw,) = parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {con.definition}")
    statement = raw.stmt
    assert isinstance(statement, ast.AlterTableStmt) and statement.cmds
    constraint = statement.cmds[0].def_
    return isinstance(constraint, ast.Constraint) and bool(constraint.deferrable)


def refused_as_written(ctx: RuleContext, why: str) -> tuple[Step, ...] | None:
    """When no expand/contract keeps the end state: the long-lock refusal, if the statement as
    written takes one, with ``why`` added to its reason; None (as written) when it does not."""
    refused = refuse_long_lock(ctx)
    if not refused:
        return None
    return tuple(dataclasses.replace(step, reason=f"{step.reason}; {why}") for step in refused)


def _constraints_on(info: RelationInfo, column: str) -> list[ConstraintInfo]:
    return [c for c in info.constraints if column in c.columns]


def _index(info: RelationInfo, name: str | None) -> IndexInfo | None:
    return next((i for i in info.index_definitions if i.name == name), None)


class _Columns(Visitor):
    """Renames (or only finds) a column in an expression or index definition; ``row`` prefixes
    every column reference (``NEW``: the expression then reads a trigger's row)."""

    def __init__(self, old: str | None = None, new: str | None = None, row: str | None = None) -> None:
        super().__init__()
        self.old, self.new, self.row = old, new, row
        self.found = False

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        last = (node.fields or ())[-1]
        if not isinstance(last, ast.String):
            return
        name = str(last.sval)
        if name == self.old:
            self.found = True
            name = self.new or name
        if self.row is not None or name != last.sval:
            prefix = (ast.String(sval=self.row),) if self.row else tuple(node.fields or ())[:-1]
            node.fields = (*prefix, ast.String(sval=name))

    def visit_IndexElem(self, ancestors: object, node: ast.IndexElem) -> None:
        if node.name == self.old:
            self.found = True
            node.name = self.new or node.name


def deparse(node: ast.Node) -> str:
    """SQL text of a parse tree node (pglast)."""
    return str(RawStream()(node))


def _rebuilt_index(definition: str, swap: Swap, name: str) -> str | None:
    """The index ``definition`` over the staging column, named ``name`` (the index rule builds it
    CONCURRENTLY); None when it does not use the old column."""
    (raw,) = parse_sql(definition)
    index = raw.stmt
    assert isinstance(index, ast.IndexStmt)
    renamer = _Columns(swap.old, swap.staging)
    renamer(index)
    if not renamer.found:
        return None
    index.idxname = name
    if index.relation is not None:  # named as the statement names it, as the facts know it
        index.relation.schemaname, index.relation.relname = swap.written.schema, swap.written.name
    return deparse(index)


def _rebuilt_check(con: ConstraintInfo, swap: Swap, name: str) -> str:
    """``ADD CONSTRAINT name CHECK (...)`` over the staging column (NOT VALID if the old one is:
    the constraint rule adds a valid one NOT VALID, then validates it)."""
    table = quote_relation(swap.written)
    (raw,) = parse_sql(f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(name)} {con.definition}")
    statement = raw.stmt
    assert isinstance(statement, ast.AlterTableStmt)
    _Columns(swap.old, swap.staging)(statement)
    return deparse(statement)


def _forward_sql(swap: Swap, row: str | None = None) -> str:
    """The new column's value for a row, as SQL (``row``: read from a trigger's record)."""
    if swap.forward is None:
        return f"{row}.{quote_ident(swap.old)}" if row else quote_ident(swap.old)
    (raw,) = parse_sql(f"SELECT {deparse(swap.forward)}")  # a copy: the statement's tree stays as written
    select = raw.stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    expr = select.targetList[0].val
    assert expr is not None
    if row:
        _Columns(row=row)(expr)
    return deparse(expr)


def _trigger_body(swap: Swap) -> str:
    new, old = f"NEW.{quote_ident(swap.staging)}", f"NEW.{quote_ident(swap.old)}"
    if not swap.both_ways:
        return f"BEGIN {new} := {_forward_sql(swap, 'new')}; RETURN NEW; END"
    # The old version writes the old column, the new version the new one: whichever a write
    # changed wins, on insert the one given (the new column has no default until contract).
    was_old, was_new = f"OLD.{quote_ident(swap.old)}", f"OLD.{quote_ident(swap.staging)}"
    return (
        f"BEGIN IF TG_OP = 'INSERT' THEN IF {new} IS NULL THEN {new} := {old}; ELSE {old} := {new}; "
        f"END IF; ELSIF {old} IS DISTINCT FROM {was_old} THEN {new} := {old}; "
        f"ELSIF {new} IS DISTINCT FROM {was_new} THEN {old} := {new}; END IF; RETURN NEW; END"
    )


def swap_steps(ctx: RuleContext, swap: Swap, what: str) -> tuple[Step, ...]:
    """The expand steps and the contract swap replacing ``swap.old`` (``what``: the statement,
    for the reasons)."""
    info = swap.table
    table = quote_relation(swap.written)
    column = info.columns[swap.old]
    staging = quote_ident(swap.staging)
    schema = quote_ident(info.name.schema) + "." if info.name.schema else ""
    function = schema + quote_ident(object_name("zdm_sync", info.name.name, swap.old))
    # BEFORE triggers fire in name order: this one comes after the table's own (zzz), so a value
    # they adjust is the value copied.
    trigger = quote_ident(object_name("zzz_zdm_sync", swap.old))
    helper = object_name(swap.staging, "zdm_not_null")
    build = ctx.steps().add(
        f"ALTER TABLE {table} ADD COLUMN {staging} {swap.type_sql}",
        Phase.EXPAND,
        f"{what}: the replacing column {swap.staging}, added empty (no rewrite, a brief lock)",
        revert=f"ALTER TABLE {table} DROP COLUMN IF EXISTS {staging}",
    )
    build.add(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $zdm$ {_trigger_body(swap)} $zdm$",
        Phase.EXPAND,
        f"{what}: the function keeping {swap.staging} in step with {swap.old} on every write",
        revert=f"DROP FUNCTION IF EXISTS {function}()",
    )
    build.add(
        f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        Phase.EXPAND,
        f"{what}: from now on every written row carries {swap.staging}",
        revert=f"DROP TRIGGER IF EXISTS {trigger} ON {table}",
    )
    assignment = f"{staging} = {_forward_sql(swap)}"
    build.add(
        f"UPDATE {table} SET {assignment}",
        Phase.BACKFILL,
        f"{what}: the rows written before the trigger, in short keyset batches",
        backfill=Backfill(info.name, info.primary_key, assignment),
    )
    if column.not_null:
        _through_rules(
            ctx,
            build,
            f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(helper)} CHECK ({staging} IS NOT NULL)",
            f"{what}: NOT NULL on {swap.staging} as a check",
            f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {quote_ident(helper)}",
        )
    renames = _rebuild(ctx, build, swap, table)
    return _contract(build, swap, table, function, trigger, helper, renames, what).done()


def _through_rules(ctx: RuleContext, build: StepBuilder, sql: str, what: str, revert: str) -> None:
    """``sql`` planned by the other rules (NOT VALID then VALIDATE, CONCURRENTLY); a step they
    leave as written (a CHECK that was NOT VALID already) runs in the expand with ``revert``."""
    first = build.add_planned(sql, ctx.replan)
    build.built[first:] = [
        dataclasses.replace(
            step,
            phase=Phase.EXPAND if step.phase is Phase.SINGLE else step.phase,
            revert=revert if step.phase is Phase.SINGLE else step.revert,
            reason=f"{what}: {step.reason}",
        )
        for step in build.built[first:]
    ]


def _rebuild(ctx: RuleContext, build: StepBuilder, swap: Swap, table: str) -> list[str]:
    """The old column's CHECKs and indexes rebuilt on the staging column; returns the contract's
    statements that give them the old ones' names."""
    info = swap.table
    schema = quote_ident(info.name.schema) + "." if info.name.schema else ""
    renames = []
    for con in _constraints_on(info, swap.old):
        if con.kind != "c":
            continue
        staged = object_name(con.name, "zdm")
        _through_rules(
            ctx,
            build,
            _rebuilt_check(con, swap, staged),
            f"check {con.name} on {swap.staging}",
            f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {quote_ident(staged)}",
        )
        renames.append(
            f"ALTER TABLE {table} RENAME CONSTRAINT {quote_ident(staged)} TO {quote_ident(con.name)}"
        )
    for index in info.index_definitions:
        staged = object_name(index.name, "zdm")
        sql = _rebuilt_index(index.definition, swap, staged)
        if sql is None:
            continue
        _through_rules(
            ctx,
            build,
            sql,
            f"index {index.name} rebuilt on {swap.staging}",
            f"DROP INDEX CONCURRENTLY IF EXISTS {schema}{quote_ident(staged)}",
        )
        backing = next((c for c in info.constraints if c.index == index.name and c.kind in ("u", "p")), None)
        if backing is None:
            renames.append(f"ALTER INDEX {schema}{quote_ident(staged)} RENAME TO {quote_ident(index.name)}")
        else:
            kind = "PRIMARY KEY" if backing.kind == "p" else "UNIQUE"
            renames.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(backing.name)} {kind} "
                f"USING INDEX {quote_ident(staged)}"
            )
    return renames


def _contract(
    build: StepBuilder,
    swap: Swap,
    table: str,
    function: str,
    trigger: str,
    helper: str,
    renames: list[str],
    what: str,
) -> StepBuilder:
    column = swap.table.columns[swap.old]
    new = quote_ident(swap.new)
    staging = quote_ident(swap.staging)
    sqls = [
        f"DROP TRIGGER {trigger} ON {table}",
        f"DROP FUNCTION {function}()",
        f"ALTER TABLE {table} DROP COLUMN {quote_ident(swap.old)}",
    ]
    if column.owned_sequence is not None:  # a serial's sequence would go with the old column
        sqls.insert(2, f"ALTER SEQUENCE {column.owned_sequence} OWNED BY {table}.{staging}")
    if column.not_null:  # while the helper check still names the column as it is now
        named = next((c for c in swap.table.constraints if c.kind == "n" and swap.old in c.columns), None)
        if named is not None and build.version >= 180000:
            # 18 names NOT NULL constraints (a rename keeps the name): the old column's is gone now.
            sqls.append(f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(named.name)} NOT NULL {staging}")
        else:
            sqls.append(f"ALTER TABLE {table} ALTER COLUMN {staging} SET NOT NULL")
        sqls.append(f"ALTER TABLE {table} DROP CONSTRAINT {quote_ident(helper)}")
    if swap.staging != swap.new:
        sqls.append(f"ALTER TABLE {table} RENAME COLUMN {staging} TO {new}")
    if column.default is not None:
        sqls.append(f"ALTER TABLE {table} ALTER COLUMN {new} SET DEFAULT {column.default}")
    sqls.extend(renames)
    return build.add_transaction(
        sqls,
        Phase.CONTRACT,
        f"{what}: one short transaction swaps {swap.new} in (NOT NULL proven by the validated "
        f"check, no scan on PostgreSQL {major(build.version)}); the old column's values live on in it",
        kind="column swap",
        destructive=None,
    )
