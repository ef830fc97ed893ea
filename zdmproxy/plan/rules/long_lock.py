"""Refuse what no rule makes online: a lock that stops traffic while a large table is read.

VACUUM FULL, CLUSTER and SET TABLESPACE rewrite a table under AccessExclusiveLock and have no
online form in PostgreSQL (a plain REFRESH MATERIALIZED VIEW refills a view under it); other
statements (a rewriting ALTER no rule turns into expand/contract, an ATTACH whose bound no rule
can prove first, ...) read a whole table under a lock that stops reads or writes. This rule
comes last in the registry, so it sees only what the rules before it left as written. When
such a statement reads a table of at least ``MigrationPolicy.long_lock_min_bytes`` (or one
whose size is unknown: without a database the plan cannot tell, and says so), its step carries
``long_lock``: why, and the online way to the same result. ``apply`` refuses it unless the
caller allows long locks.
"""

from __future__ import annotations

import dataclasses

from zdmproxy.plan.model import Phase, RelationSize, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.plan.verdict import blocks_traffic
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.locks import RelationName

# What to do instead, by the words the catalogue's kind starts with or contains (first match).
ALTERNATIVES: tuple[tuple[str, str], ...] = (
    ("VACUUM FULL", "pg_repack or pg_squeeze rebuild the table online; plain VACUUM takes no such lock"),
    ("CLUSTER", "pg_repack --order-by rebuilds the table in index order online"),
    ("SetTableSpace", "pg_repack --tablespace moves the table online"),
    (
        "REFRESH MATERIALIZED VIEW",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view)",
    ),
    ("CREATE INDEX", "CREATE INDEX CONCURRENTLY"),
    ("REINDEX", "REINDEX CONCURRENTLY"),
    ("ATTACH PARTITION", "ADD CONSTRAINT … CHECK (the bound) NOT VALID and VALIDATE it before the ATTACH"),
    ("SET NOT NULL", "CHECK (col IS NOT NULL) NOT VALID, VALIDATE, then SET NOT NULL (no scan)"),
    ("ADD CONSTRAINT", "ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT"),
)
EXPAND_CONTRACT = (
    "expand/contract: a new column or table, a batched backfill, a short swap (pg_repack for a plain rebuild)"
)


def refuse_long_lock(ctx: RuleContext) -> tuple[Step, ...] | None:
    effects = ctx.effects
    if effects.unverified:
        return None
    held = {lock.relation: lock.mode for lock in effects.locks if not lock.created}
    # A plain REFRESH fills the view's new storage from its query under ACCESS EXCLUSIVE: a
    # rewrite that reads no old rows, yet lasts as long as the query (sized by the view).
    filled = effects.rewrites if effects.kind == "REFRESH MATERIALIZED VIEW" else ()
    read = [name for name in (*effects.scans, *filled) if name in held and blocks_traffic(held[name])]
    sizes = _sizes(ctx.facts)
    large: list[tuple[RelationName, int | None]] = []
    for name in read:
        if name in ctx.facts.created:
            continue  # made by an earlier statement of the script: no traffic uses it yet
        if name not in sizes and ctx.from_catalog:
            continue  # not in the database before the script: the script created it, holds no traffic
        size = sizes.get(name)
        if size is None or size >= ctx.policy.long_lock_min_bytes:
            large.append((name, size))
    if not large:
        return None
    mode = max(held[name] for name, _ in large)
    how = "rewrites" if any(name in effects.rewrites for name, _ in large) else "reads"
    tables = ", ".join(
        f"{name} ({RelationSize(name, None, size).describe() if size is not None else 'size unknown'})"
        for name, size in large
    )
    unknown = (
        "" if ctx.from_catalog else "; without a database the table's size is unknown, so it counts as large"
    )
    why = (
        f"{mode.pg_name} stops {mode.blocks()} while it {how} {tables}, and no rule has an online form; "
        f"instead: {_alternative(effects.kind)}{unknown}"
    )
    (step,) = (
        ctx.steps()
        .add(
            ctx.statement.text,
            Phase.SINGLE,
            f"{effects.kind}: refused unless long locks are allowed ({why})",
        )
        .done()
    )
    return (dataclasses.replace(step, long_lock=why),)


def _sizes(facts: CatalogFacts) -> dict[RelationName, int | None]:
    """The size of every relation the catalog knows, partitions included (None: not measured)."""
    found: dict[RelationName, int | None] = {}
    for info in facts.relations.values():
        found[info.name] = info.total_bytes
        for child in info.children:
            found.setdefault(child.name, child.total_bytes)
    return found


def _alternative(kind: str) -> str:
    return next((how for words, how in ALTERNATIVES if words in kind), EXPAND_CONTRACT)
