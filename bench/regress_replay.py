"""Replay a SQL script (PostgreSQL's regression scripts are the intended input) and compare,
before every statement, what the lock catalogue predicts with what PostgreSQL takes.

Each statement, in order, on a throwaway database of each server version: the catalog facts
are read as `plan --dsn` reads them, the statement is classified, then it runs inside
BEGIN ... ROLLBACK while its own pg_locks rows are read, and finally it runs for real so the
next statement sees the state the script expects (statements between the script's own
BEGIN and ROLLBACK/COMMIT only run inside the measurement). Compared: the strongest mode per
table, view, materialized view or foreign table that existed before the statement.

Each statement is counted as exact, missed (the two differ; printed), not catalogued (the
catalogue said it cannot know), refused, or failed (PostgreSQL raised an error: a statement the
script expects to fail, or one that needs another script's objects).

The scripts are not part of this repository: fetch them from PostgreSQL's source tree
(src/test/regress/sql/*.sql). psql meta-commands (lines starting with a backslash) are skipped.

A statement that does not parse (the scripts test syntax errors too) is counted as failed, and
the rest of the script goes on. ``--from N`` runs the statements that start before character N
of the file without measuring them, so a part of a long script is measured on the state the
script's earlier statements leave (``--to N``: stop there).

Run: ``.venv/bin/python bench/regress_replay.py [--versions 15 18] [--from N] [--to N] FILE.sql ...``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg
from pglast import ast, split

from zdmproxy.engine.catalog import read_facts
from zdmproxy.errors import SqlParseError, ZdmError
from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.locks import LockMode
from zdmproxy.sql.parse import Statement, parse_script

ROOT: Final = Path(__file__).resolve().parent.parent
# tests/ is not a package (pytest puts it on sys.path), so this is the only way to reuse its cluster helper.
sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import ClusterPool, find_bin_dir  # noqa: E402

HELD: Final = """
SELECT l.relation::int8 AS oid, l.mode FROM pg_locks l
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
RELATIONS: Final = """
SELECT c.oid::int8 AS oid, n.nspname || '.' || c.relname AS name, c.relkind::text AS relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'pg_toast', 'information_schema')
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # not catalogued: the statement and why


def statements(text: str) -> list[tuple[int, Statement | None]]:
    """Each statement of ``text`` with the character it starts at; None for one that does not parse.

    pglast's scanner splits at top-level semicolons, so a syntax error costs one statement only.
    """
    found: list[tuple[int, Statement | None]] = []
    for piece in split(text, with_parser=False, only_slices=True):
        try:
            parsed = parse_script(text[piece])
        except SqlParseError:
            found.append((piece.start, None))
            continue
        found.extend((piece.start + s.position, s) for s in parsed)
    return found


async def replay(dsn: str, text: str, start: int = 0, stop: int | None = None) -> Tally:
    """Replay ``text`` (a script without psql meta-commands) on a new database of the server at
    ``dsn``, measuring the statements that start in [start, stop)."""
    tally = Tally()
    admin = await asyncpg.connect(dsn)
    name = f"replay_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/" + name)
    in_script_transaction = False
    try:
        for position, statement in statements(text):
            if stop is not None and position >= stop:
                break
            if statement is None:
                if position >= start:
                    tally.counts["failed"] += 1
                continue
            node = statement.node
            if isinstance(node, ast.TransactionStmt):
                in_script_transaction = node.kind is not None and node.kind.name in (
                    "TRANS_STMT_BEGIN",
                    "TRANS_STMT_START",
                )
                continue
            if position >= start:
                tally.counts[await _measure(conn, statement, tally)] += 1
            if isinstance(node, ast.CopyStmt) and node.filename is None:
                continue  # COPY FROM STDIN would wait for data that is in the script, not on the wire
            if not in_script_transaction:
                # A failure is one the script expects, or one the measurement already counted.
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute(statement.text)
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    return tally


async def _measure(conn: asyncpg.Connection, statement: Statement, tally: Tally) -> str:
    try:
        effects = classify(statement, await read_facts(conn, [statement]))
    except ZdmError:
        return "refused"
    relations = {r["oid"]: r["name"] for r in await conn.fetch(RELATIONS)}
    taken: dict[str, LockMode] = {}
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(statement.text)
        for row in await conn.fetch(HELD):
            if row["oid"] in relations:
                relation, mode = relations[row["oid"]], LockMode.from_pg_name(row["mode"])
                taken[relation] = max(taken.get(relation, mode), mode)
    except asyncpg.PostgresError:
        return "failed"
    finally:
        await transaction.rollback()
    if effects.unverified:
        tally.unverified.append(f"{statement.text[:100]!r}: {effects.unverified[:160]}")
        return "not catalogued"
    existing = set(relations.values())
    predicted = {
        str(lock.relation): lock.mode
        for lock in effects.locks
        if not lock.created and lock.kind == "table" and str(lock.relation) in existing
    }
    if predicted == taken:
        return "exact"
    tally.misses.append(
        f"{statement.text[:100]!r}: predicted {_modes(predicted)}, PostgreSQL took {_modes(taken)}"
    )
    return "missed"


def _modes(locks: dict[str, LockMode]) -> str:
    return "{" + ", ".join(f"{rel}: {mode.pg_name}" for rel, mode in sorted(locks.items())) + "}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="+", type=Path)
    parser.add_argument("--versions", nargs="+", type=int, default=[15, 18])
    parser.add_argument("--from", dest="start", type=int, default=0, help="measure from this character")
    parser.add_argument("--to", dest="stop", type=int, default=None, help="stop at this character")
    args = parser.parse_args()
    pool = ClusterPool()
    try:
        for major in args.versions:
            if find_bin_dir(major) is None:
                print(f"PostgreSQL {major}: not installed, skipped")
                continue
            dsn = pool.get(major).dsn()
            for script in args.scripts:
                # Meta-commands become blanks of the same length: character positions stay the file's.
                lines = script.read_text().split("\n")
                text = "\n".join(" " * len(x) if x.lstrip().startswith("\\") else x for x in lines)
                tally = await replay(dsn, text, args.start, args.stop)
                counts = ", ".join(f"{kind} {n}" for kind, n in sorted(tally.counts.items()))
                print(f"PostgreSQL {major}, {script.name}: {counts}")
                for miss in tally.misses:
                    print(f"  missed {miss}")
                for what in tally.unverified:
                    print(f"  not catalogued {what}")
    finally:
        pool.stop_all()


if __name__ == "__main__":
    asyncio.run(main())
