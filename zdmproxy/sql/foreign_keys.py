"""What foreign keys make other statements lock on the other table.

DML fires a foreign key's triggers, whose queries lock the other table:
inserting rows, or updating key columns, checks the referenced rows (ROW
SHARE on the referenced table, ``SELECT ... FOR KEY SHARE``); deleting rows of
a referenced table, or updating its key columns, runs the key's action on the
referencing table (ROW SHARE to look for NO ACTION and RESTRICT, ROW
EXCLUSIVE to write for CASCADE, SET NULL and SET DEFAULT). What the text shows
is decided exactly (a NULL in every written key, referenced columns set to
themselves); PostgreSQL also skips the trigger when no row changes or a value
happens to stay the same: there the catalogue claims what the statement may take.
Looking for referencing rows reads the referencing table in full unless an
index starts with the key's columns.
Checked against pg_locks by tests/test_lock_catalogue.py.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import CmdType, OnConflictAction

from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, ForeignKey, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName

RS = LockMode.ROW_SHARE
RE = LockMode.ROW_EXCLUSIVE


def dml_locks(
    node: ast.Node,
    info: RelationInfo | None,
    out: EffectsBuilder,
    *,
    columns_known: bool = True,
    facts: CatalogFacts | None = None,
) -> None:
    """The other tables an INSERT, UPDATE or DELETE on the table ``info`` describes may lock.

    A key is checked (its referenced table locked) unless every row's new key has a NULL
    (ri_NullCheck: MATCH SIMPLE passes it, MATCH FULL passes an all-NULL key and rejects the
    rest); its action runs (its referencing table locked) unless the statement leaves the
    referenced columns as they are (RI_FKey_pk_upd_check_required). ``SET key = key`` on the
    referencing side is still claimed: PostgreSQL checks it for rows its own transaction inserted.
    A partitioned table on the other side is queried without ONLY: its partitions are locked
    too, those the key's values rule out only on a custom plan (the catalogue claims them all).
    """
    if info is None:
        return
    keys = info.foreign_keys + info.foreign_key_copies
    incoming = info.referenced_by + info.referenced_by_copies
    if not isinstance(node, ast.InsertStmt):
        # Keys referencing a partition the statement reaches (``info``'s children, as pruned).
        reached = {child.name for child in info.children}
        incoming += tuple(fk for fk in info.referenced_below if fk.referenced in reached)
    if not columns_known and not isinstance(node, ast.DeleteStmt):
        # Written through a view: the statement names the view's columns, not the table's.
        inserting = isinstance(node, ast.InsertStmt)
        _lock(keys, () if inserting else incoming, not inserting, out, facts)
        if isinstance(node, ast.MergeStmt):
            _lock((), incoming, False, out, facts)
        return
    if isinstance(node, ast.InsertStmt):
        checked = tuple(fk for fk in keys if not _inserts_null_keys(node, fk, info))
        actions: tuple[ForeignKey, ...] = ()
        conflict = node.onConflictClause
        if conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE:
            # ON CONFLICT DO UPDATE updates the rows it meets: as an UPDATE of its SET list.
            assigned = {str(t.name): t.val for t in conflict.targetList or () if isinstance(t, ast.ResTarget)}
            _lock(
                (),
                tuple(fk for fk in incoming if _changes(assigned, fk.referenced_columns)),
                True,
                out,
                facts,
            )
    elif isinstance(node, ast.UpdateStmt):
        assigned = {
            str(target.name): target.val
            for target in node.targetList or ()
            if isinstance(target, ast.ResTarget)
        }
        checked = tuple(
            fk
            for fk in keys
            if set(assigned) & set(fk.columns) and not any(_is_null(assigned.get(c)) for c in fk.columns)
        )
        actions = tuple(fk for fk in incoming if _changes(assigned, fk.referenced_columns))
    elif isinstance(node, ast.DeleteStmt):
        checked, actions = (), incoming
    else:
        return
    _lock(checked, actions, isinstance(node, ast.UpdateStmt), out, facts)


def merge_locks(
    node: ast.MergeStmt, info: RelationInfo | None, out: EffectsBuilder, facts: CatalogFacts | None = None
) -> None:
    """A MERGE's actions fire the keys' triggers as INSERT, UPDATE and DELETE do."""
    if info is None:
        return
    keys = info.foreign_keys + info.foreign_key_copies
    incoming = info.referenced_by + info.referenced_by_copies
    for clause in node.mergeWhenClauses or ():
        if clause.commandType == CmdType.CMD_INSERT:
            _lock(keys, (), False, out, facts)
        elif clause.commandType == CmdType.CMD_UPDATE:
            assigned = {str(t.name): t.val for t in clause.targetList or () if isinstance(t, ast.ResTarget)}
            checked = tuple(fk for fk in keys if set(assigned) & set(fk.columns))
            _lock(
                checked, tuple(fk for fk in incoming if _changes(assigned, fk.referenced_columns)), True, out
            )
        elif clause.commandType == CmdType.CMD_DELETE:
            _lock((), incoming, False, out, facts)


# Keys whose actions write tables whose keys' actions write tables ...: deeper chains than this
# are not followed (and said so).
MAX_CASCADE_DEPTH = 10


def _lock(
    checked: tuple[ForeignKey, ...],
    actions: tuple[ForeignKey, ...],
    updating: bool,
    out: EffectsBuilder,
    facts: CatalogFacts | None = None,
    depth: int = 0,
) -> None:
    for fk in (fk for fk in checked if fk.checks_enabled):
        out.lock(fk.referenced, RS)
        _lock_partitions(fk.referenced, fk.referenced_partitions, RS, out)
    for fk in (fk for fk in actions if fk.actions_enabled):
        action = fk.on_update if updating else fk.on_delete
        mode = RE if ForeignKey.action_writes(action) else RS
        out.lock(fk.table, mode)
        _lock_partitions(fk.table, fk.table_partitions, mode, out)
        if not fk.indexed:
            for table in [c.name for c in fk.table_partitions if c.has_storage] or [fk.table]:
                out.scan(table)
            out.note(f"no index on {fk.table} ({', '.join(fk.columns)}): each row changed reads it in full")
        if ForeignKey.action_writes(action):
            _cascade(fk, action, updating, out, facts, depth)


def _cascade(
    fk: ForeignKey, action: str, updating: bool, out: EffectsBuilder, facts: CatalogFacts | None, depth: int
) -> None:
    """An action that writes is a DELETE (ON DELETE CASCADE) or an UPDATE of the key's columns
    (CASCADE, SET NULL, SET DEFAULT) on the referencing table: its own keys fire there in turn —
    the actions of the keys that reference it, and the checks of its keys on those columns
    (none for SET NULL: the new key has a NULL)."""
    child = facts.resolve(fk.table) if facts is not None else None
    if child is None or depth >= MAX_CASCADE_DEPTH:
        out.note(f"{fk.name} changes rows of {fk.table}: its foreign keys and triggers fire there too")
        return
    deleting = not updating and action == "c"
    out.note_triggers(
        child.triggers_on("DELETE" if deleting else "UPDATE"), "DELETE" if deleting else "UPDATE"
    )
    incoming = child.referenced_by + child.referenced_by_copies
    if deleting:
        _lock((), incoming, False, out, facts, depth + 1)
        return
    columns = set(fk.columns)
    keys = child.foreign_keys + child.foreign_key_copies
    checked = () if action == "n" else tuple(k for k in keys if columns & set(k.columns))
    changed = tuple(k for k in incoming if columns & set(k.referenced_columns))
    _lock(checked, changed, True, out, facts, depth + 1)


def _lock_partitions(
    table: RelationName, partitions: tuple[ChildInfo, ...], mode: LockMode, out: EffectsBuilder
) -> None:
    for partition in partitions:
        out.lock(partition.name, mode)
    if partitions:
        out.note(
            f"a foreign key's query on partitioned {table} locks the partitions the key's values do not "
            "rule out: the catalogue claims them all"
        )


def _is_null(expr: ast.Node | None) -> bool:
    """A constant NULL (cast or not)."""
    while isinstance(expr, ast.TypeCast):
        expr = expr.arg
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


def _changes(assigned: dict[str, ast.Node | None], columns: tuple[str, ...]) -> bool:
    """Whether an UPDATE's SET list may change one of ``columns``: ``SET id = id`` does not."""
    for column in set(assigned) & set(columns):
        value = assigned[column]
        fields = value.fields if isinstance(value, ast.ColumnRef) else None
        if not fields or not isinstance(fields[-1], ast.String) or fields[-1].sval != column:
            return True
    return False


def _inserts_null_keys(node: ast.InsertStmt, fk: ForeignKey, info: RelationInfo) -> bool:
    """Whether every row an ``INSERT ... VALUES`` writes has a NULL in the key's columns (a
    column left out takes its default: NULL when it has none)."""
    select = node.selectStmt
    rows = select.valuesLists if isinstance(select, ast.SelectStmt) else None
    if not rows or node.onConflictClause is not None:
        return False
    columns = [str(t.name) for t in node.cols or ()] or list(info.columns)
    for row in rows:
        values = dict(zip(columns, row, strict=False))
        if not any(_null_in(values, column, info) for column in fk.columns):
            return False
    return True


def _null_in(values: dict[str, ast.Node], column: str, info: RelationInfo) -> bool:
    if column in values:
        value = values[column]
        if isinstance(value, ast.SetToDefault):
            return _no_default(column, info)
        return _is_null(value)
    return _no_default(column, info)


def _no_default(column: str, info: RelationInfo) -> bool:
    facts = info.columns.get(column)
    return facts is not None and facts.default is None and not facts.identity and not facts.generated


def rebuilt_by_type_change(info: RelationInfo | None, column: str | None) -> list[ForeignKey]:
    """The foreign keys ALTER COLUMN ... TYPE rebuilds: those with the column on either side.

    A rebuilt key is dropped and added again, which takes ACCESS EXCLUSIVE on the
    other table too.
    """
    if info is None or column is None:
        return []
    return [fk for fk in info.foreign_keys if column in fk.columns] + [
        fk for fk in info.referenced_by if column in fk.referenced_columns
    ]
