"""Partition and inheritance trees: what a statement that recurses reaches.

A statement on a partitioned table or an inheritance parent often acts on
every table below it as well (ALTER TABLE without ONLY, TRUNCATE, DROP of a
partitioned table, CREATE INDEX on a partitioned table, DML on the parent):
each child is locked, and the children that hold rows are scanned or
rewritten. Which statements recurse, and with which mode, is decided by the
catalogue; this module only walks the tree the catalog facts describe, and
says so in a note when there are no facts to walk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import ChildInfo, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName

EVERY_CHILD = "partitions or inheritance children"
PARTITIONS = "partitions"


@dataclass(frozen=True)
class Tree:
    """A relation and, when the statement recurses, the children it reaches.

    ``recurse`` is whether the statement acts on the children at all (no ONLY,
    and a kind of statement that recurses into this kind of tree); ``reaches``
    names them for the note written when the facts are unknown.
    """

    name: RelationName
    info: RelationInfo | None
    recurse: bool
    reaches: str = EVERY_CHILD

    @property
    def children(self) -> tuple[ChildInfo, ...]:
        return self.info.children if self.recurse and self.info is not None else ()

    @property
    def partitioned(self) -> bool:
        return self.info is not None and self.info.is_partitioned

    def storage(self) -> list[RelationName]:
        """The relations of the tree that hold rows: what a scan reads or a rewrite replaces.

        A partitioned table has no storage of its own; without facts the
        relation itself is assumed to hold rows.
        """
        own = [] if self.partitioned else [self.name]
        return own + [child.name for child in self.children if child.has_storage]

    def lock(self, out: EffectsBuilder, mode: LockMode, child_mode: LockMode | None = None) -> None:
        """Lock the relation with ``mode``, and every child it reaches with ``child_mode`` or the same."""
        out.lock(self.name, mode)
        self.lock_children(out, child_mode or mode)

    def lock_children(self, out: EffectsBuilder, mode: LockMode) -> None:
        for child in self.children:
            out.lock(child.name, mode)
        if self.recurse and self.info is None:
            out.note(
                f"{self.name} is unknown without a database: if it has {self.reaches}, "
                "they are locked too (and scanned or rewritten with it)"
            )

    def scan(self, out: EffectsBuilder) -> None:
        for relation in self.storage():
            out.scan(relation)

    def rewrite(self, out: EffectsBuilder, *, reads: bool = True) -> None:
        for relation in self.storage():
            out.rewrite(relation, reads=reads)


def pruned(tree: Tree, stops: Callable[[ChildInfo], bool]) -> Tree:
    """``tree`` with only the children recursion reaches when it stops below a child where
    ``stops`` holds: that child is still reached (and locked), its own children only through
    another parent. Children whose parents are unknown are reached, as before."""
    if tree.info is None or not tree.recurse:
        return tree
    expandable = {tree.name}
    kept = []
    for child in tree.info.children:  # parents come before their children
        if child.parents and not expandable.intersection(child.parents):
            continue
        kept.append(child)
        if not stops(child):
            expandable.add(child.name)
    return dataclasses.replace(tree, info=dataclasses.replace(tree.info, children=tuple(kept)))
