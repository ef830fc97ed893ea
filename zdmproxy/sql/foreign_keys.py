"""What foreign keys make other statements lock on the other table.

DML fires a foreign key's triggers, whose queries lock the other table:
inserting rows, or updating key columns, checks the referenced rows (ROW
SHARE on the referenced table, ``SELECT ... FOR KEY SHARE``); deleting rows of
a referenced table, or updating its key columns, runs the key's action on the
referencing table (ROW SHARE to look for NO ACTION and RESTRICT, ROW
EXCLUSIVE to write for CASCADE, SET NULL and SET DEFAULT). PostgreSQL skips the
trigger when no row changes, when the key is unchanged, and for an inserted
key that is all NULL: the catalogue claims what the statement may take.
Looking for referencing rows reads the referencing table in full unless an
index starts with the key's columns.
Checked against pg_locks by tests/test_lock_catalogue.py.
"""

from __future__ import annotations

from pglast import ast

from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import ForeignKey, RelationInfo
from zdmproxy.sql.locks import LockMode

RS = LockMode.ROW_SHARE
RE = LockMode.ROW_EXCLUSIVE


def dml_locks(node: ast.Node, info: RelationInfo | None, out: EffectsBuilder) -> None:
    """The other tables an INSERT, UPDATE or DELETE on the table ``info`` describes may lock."""
    if info is None:
        return
    if isinstance(node, ast.InsertStmt):
        checked = info.foreign_keys
        actions: tuple[ForeignKey, ...] = ()
    elif isinstance(node, ast.UpdateStmt):
        assigned = {str(target.name) for target in node.targetList or () if isinstance(target, ast.ResTarget)}
        checked = tuple(fk for fk in info.foreign_keys if assigned & set(fk.columns))
        actions = tuple(fk for fk in info.referenced_by if assigned & set(fk.referenced_columns))
    elif isinstance(node, ast.DeleteStmt):
        checked, actions = (), info.referenced_by
    else:
        return
    for fk in checked:
        out.lock(fk.referenced, RS)
    updating = isinstance(node, ast.UpdateStmt)
    for fk in actions:
        action = fk.on_update if updating else fk.on_delete
        out.lock(fk.table, RE if ForeignKey.action_writes(action) else RS)
        if not fk.indexed:
            out.scan(fk.table)
            out.note(f"no index on {fk.table} ({', '.join(fk.columns)}): each row changed reads it in full")
        if ForeignKey.action_writes(action):
            out.note(f"{fk.name} changes rows of {fk.table}: its foreign keys and triggers fire there too")


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
