"""One verdict per planned statement: does it stop application traffic, and for how long,
as ``apply`` runs it (the plan's steps, judged one by one; the worst step is the verdict)?

A reviewer (or a CI job) needs one answer per statement, derived from the plan's facts only —
the lock modes the catalogue knows, whether the statement rewrites or scans a table, and the
table sizes when the catalog was read — never from a guess of how long a rewrite takes:

- **safe**: no lock that stops reads or writes on a table in use (a traffic-blocking lock is
  one that conflicts with ``RowExclusiveLock``, what writes take, or ``AccessShareLock``, what
  reads take);
- **brief lock**: such a lock, held only for a catalog change (no scan, no rewrite): it still
  queues behind open transactions, which is what ``apply`` guards against;
- **long lock**: such a lock held while the statement reads a whole table (a scan, or a rewrite
  that copies the rows): traffic stops for as long as the table takes to read. ``zdmproxy plan``
  exits 6 when any statement gets this verdict. A statement no rule makes online, on a large
  table, is refused by ``apply`` unless long locks are allowed (its step's ``long_lock`` says
  why, and the online alternative): its verdict says so;
- **unknown**: the lock catalogue does not know what the statement locks (``apply`` refuses it
  unless unverified locks are allowed).

Tables created earlier in the same script do not count: no application traffic uses them yet,
and they hold only the rows the script itself put there.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum

from zdmproxy.plan.model import Plan, PlannedStatement, Step
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName


class Level(StrEnum):
    SAFE = "safe"
    BRIEF_LOCK = "brief_lock"
    LONG_LOCK = "long_lock"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Verdict:
    level: Level
    why: str

    def line(self) -> str:
        return f"{self.level.label}: {self.why}"

    def as_dict(self) -> dict[str, object]:
        return {"level": self.level.value, "why": self.why}


def blocks_traffic(mode: LockMode) -> bool:
    """Would application reads or writes wait for a lock held in ``mode``?"""
    return mode.conflicts_with(LockMode.ROW_EXCLUSIVE) or mode.conflicts_with(LockMode.ACCESS_SHARE)


def verdicts(plan: Plan) -> tuple[Verdict, ...]:
    """The verdict of each statement of ``plan``, in order."""
    created: set[RelationName] = set()
    out = []
    for planned in plan.statements:
        out.append(judge(planned, created))  # not a copy per statement: that is quadratic
        created.update(lock.relation for lock in planned.effects.locks if lock.created)
    return tuple(out)


def judge(planned: PlannedStatement, created_earlier: AbstractSet[RelationName] = frozenset()) -> Verdict:
    """The verdict of one statement as ``apply`` runs it: its worst step (a rule may have made
    an online plan of a statement that, as written, would hold a long lock); ``created_earlier``
    holds the relations the script's earlier statements created."""
    if planned.effects.unverified:
        return Verdict(Level.UNKNOWN, f"not in the lock catalogue ({planned.effects.unverified})")
    refused = next((step.long_lock for step in planned.steps if step.long_lock), None)
    if refused is not None:
        return Verdict(Level.LONG_LOCK, f"apply refuses it unless --allow-long-locks: {refused}")
    sizes = {size.relation: size.describe() for size in planned.sizes}
    judged = [_judge_step(step, created_earlier, sizes) for step in planned.steps]
    worst = max(range(len(judged)), key=lambda i: _SEVERITY.index(judged[i].level))
    if len(judged) == 1:
        return judged[0]
    step = planned.steps[worst]
    return Verdict(
        judged[worst].level,
        f"{len(judged)} steps, the strongest step {worst + 1} ({step.kind}): {judged[worst].why}",
    )


_SEVERITY = (Level.SAFE, Level.BRIEF_LOCK, Level.LONG_LOCK, Level.UNKNOWN)


def _judge_step(
    step: Step, created_earlier: AbstractSet[RelationName], sizes: dict[RelationName, str]
) -> Verdict:
    if step.unverified:
        return Verdict(Level.UNKNOWN, f"not in the lock catalogue ({step.unverified})")
    in_use = [lock for lock in step.locks if not lock.created and lock.relation not in created_earlier]
    blocking = [lock for lock in in_use if blocks_traffic(lock.mode)]
    read = [name for name in step.scans if name not in created_earlier]

    def sized(names: list[RelationName]) -> str:
        return ", ".join(f"{name} ({sizes[name]})" if sizes.get(name) else str(name) for name in names)

    if not blocking:
        if not in_use:
            new = "" if not step.locks else " (only tables this script creates)"
            return Verdict(Level.SAFE, f"takes no lock on tables in use{new}")
        scanning = f", while it reads {sized(read)}" if read else ""
        if read and step.backfill is not None:
            scanning += " in short keyset batches"
        return Verdict(Level.SAFE, f"{_held(in_use)} lets reads and writes through{scanning}")
    stops = max(lock.mode for lock in blocking).blocks()
    if read:
        how = "rewrites" if any(name in step.rewrites for name in read) else "scans"
        return Verdict(Level.LONG_LOCK, f"{_held(blocking)} blocks {stops} while it {how} {sized(read)}")
    emptied = [name for name in step.rewrites if name not in created_earlier]
    if emptied:  # TRUNCATE: new, empty storage; the old rows are not read
        how = f"new empty storage for {', '.join(map(str, emptied))}, the old rows are not read"
    else:
        how = "no scan, no rewrite"
    return Verdict(Level.BRIEF_LOCK, f"{_held(blocking)} blocks {stops}; {how}")


def _held(locks: list[LockRequest]) -> str:
    """``ShareRowExclusiveLock on public.a, public.b``, strongest mode first."""
    by_mode: dict[LockMode, list[str]] = {}
    for lock in sorted(locks, key=lambda lock: -lock.mode):
        by_mode.setdefault(lock.mode, []).append(str(lock.relation))
    return "; ".join(f"{mode.pg_name} on {', '.join(names)}" for mode, names in by_mode.items())
