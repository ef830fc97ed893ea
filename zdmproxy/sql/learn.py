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

import dataclasses

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from zdmproxy.sql.facts import CatalogFacts, ConstraintInfo
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.parse import Statement

_KINDS = {
    ConstrType.CONSTR_FOREIGN: "f",
    ConstrType.CONSTR_CHECK: "c",
    ConstrType.CONSTR_PRIMARY: "p",
    ConstrType.CONSTR_UNIQUE: "u",
    ConstrType.CONSTR_EXCLUSION: "x",
    ConstrType.CONSTR_NOTNULL: "n",
}


def learn(facts: CatalogFacts, statement: Statement) -> CatalogFacts:
    """``facts`` as they will be after ``statement`` ran (named constraints it adds)."""
    node = statement.node
    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return facts
    written = range_var_name(node.relation)
    info = facts.resolve(written)
    if info is None:
        return facts
    added = []
    for cmd in node.cmds or ():
        con = cmd.def_
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
            )
        )
    if not added:
        return facts
    updated = dataclasses.replace(info, constraints=(*info.constraints, *added))
    return dataclasses.replace(facts, relations={**facts.relations, written: updated})
