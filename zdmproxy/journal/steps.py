"""Steps as the journal stores them, and the checksum that identifies a migration's SQL.

A migration's plan is frozen when it is first recorded: a resumed run
executes the recorded steps, so a plan that would come out differently
today (other table sizes, a newer zdmproxy) cannot change what "step 3"
means half-way through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from zdmproxy.plan.model import Backfill, Phase, Step
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName
from zdmproxy.sql.parse import Statement


def checksum(statements: Iterable[Statement]) -> str:
    """sha256 of the statements as PostgreSQL's parser splits them, each stripped and with
    line endings normalised: whitespace and comments between statements do not change it."""
    text = "\n;\n".join(s.text.replace("\r\n", "\n").replace("\r", "\n") for s in statements)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _name(value: RelationName) -> list[str | None]:
    return [value.schema, value.name]


def _relation(value: list[str | None]) -> RelationName:
    schema, name = value
    assert name is not None
    return RelationName(schema, name)


def encode(step: Step) -> dict[str, Any]:
    """Every field of ``step``, as JSON-ready values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if f.name == "locks":
            value = [
                {"relation": _name(r.relation), "mode": r.mode.pg_name, "kind": r.kind, "created": r.created}
                for r in value
            ]
        elif f.name in ("rewrites", "scans"):
            value = [_name(r) for r in value]
        elif f.name == "phase":
            value = value.value
        elif f.name == "backfill" and value is not None:
            value = {**dataclasses.asdict(value), "table": _name(value.table), "key": list(value.key)}
        out[f.name] = value
    return out


def decode(data: dict[str, Any]) -> Step:
    """The Step ``encode`` wrote; fields this zdmproxy does not know are an error, not ignored."""
    values = dict(data)
    values["locks"] = tuple(
        LockRequest(_relation(r["relation"]), LockMode.from_pg_name(r["mode"]), r["kind"], r["created"])
        for r in values["locks"]
    )
    values["rewrites"] = tuple(_relation(r) for r in values["rewrites"])
    values["scans"] = tuple(_relation(r) for r in values["scans"])
    values["phase"] = Phase(values["phase"])
    if values.get("backfill") is not None:
        backfill = dict(values["backfill"])
        values["backfill"] = Backfill(
            **{**backfill, "table": _relation(backfill["table"]), "key": tuple(backfill["key"])}
        )
    return Step(**values)


def rows(steps: Iterable[Step], start: int = 0) -> str:
    """The steps as the JSON array ``insert_steps`` reads."""
    return json.dumps(
        [
            {
                "index": index,
                "sql": step.sql,
                "phase": step.phase.value,
                "kind": step.kind,
                "transactional": step.transactional,
                "spec": encode(step),
            }
            for index, step in enumerate(steps, start=start)
        ]
    )
