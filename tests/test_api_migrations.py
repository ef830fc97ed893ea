"""The HTTP API end to end against a real PostgreSQL: submit, wait, status, idempotency, events."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from daemon_helpers import count_runs_table, in_process

TWO_STEPS = "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ADD COLUMN note text;"


async def test_submit_wait_status(dsn: str) -> None:
    async with in_process(dsn) as api:
        put = await api.client.put("/v1/migrations/add-t", params={"wait": 30}, json={"sql": TWO_STEPS})
        assert put.status_code == 201, put.text
        body = put.json()
        assert body["state"] == "succeeded"
        assert [s["state"] for s in body["steps"]] == ["succeeded", "succeeded"]
        assert body["runs"] == 1 and body["attempts"]

        got = await api.client.get("/v1/migrations/add-t")
        assert got.status_code == 200 and got.json()["state"] == "succeeded"
        listed = await api.client.get("/v1/migrations")
        assert [m["id"] for m in listed.json()["migrations"]] == ["add-t"]

        again = await api.client.put("/v1/migrations/add-t", params={"wait": 5}, json={"sql": TWO_STEPS})
        assert again.status_code == 200 and again.json()["runs"] == 1  # returned, not run again

        other = await api.client.put("/v1/migrations/add-t", json={"sql": "CREATE TABLE u (id int)"})
        assert other.status_code == 409
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["code"] == "checksum_conflict"

    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0"
        )
        assert {r["attname"] for r in columns} == {"id", "note"}
        assert await conn.fetchval("SELECT to_regclass('u')") is None
    finally:
        await conn.close()


async def test_post_and_unknown_id(dsn: str) -> None:
    async with in_process(dsn) as api:
        post = await api.client.post(
            "/v1/migrations", params={"wait": 30}, json={"id": "v1.2:add_t@x+y", "sql": TWO_STEPS}
        )
        assert post.status_code == 201 and post.json()["state"] == "succeeded"
        missing = await api.client.get("/v1/migrations/nope")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_same_id_fifty_times_at_once_runs_once(dsn: str) -> None:
    await count_runs_table(dsn)
    sql = "INSERT INTO runs (what) VALUES ('once'); CREATE TABLE once (id int);"
    async with in_process(dsn) as api:
        put = api.client.put
        answers = await asyncio.gather(
            *(put("/v1/migrations/once", params={"wait": 30}, json={"sql": sql}) for _ in range(50))
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 49 + [201]
    assert {a.json()["state"] for a in answers} == {"succeeded"}
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM runs") == 1
        assert await conn.fetchval("SELECT runs FROM zdmproxy.migrations WHERE id = 'once'") == 1
    finally:
        await conn.close()


async def test_events_resume_after_last_event_id(dsn: str) -> None:
    async with in_process(dsn) as api:
        await api.client.put("/v1/migrations/ev", params={"wait": 30}, json={"sql": TWO_STEPS})
        whole = await api.client.get("/v1/migrations/ev/events")
        assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/event-stream")
        events = _parse(whole.text)
        ids = [e["id"] for e in events if "id" in e]
        kinds = [e["event"] for e in events if "id" in e]
        assert kinds.count("step_started") == 2 and kinds.count("step_succeeded") == 2
        assert events[-1]["event"] == "state" and json.loads(events[-1]["data"])["state"] == "succeeded"

        # A client cut off after the third event reconnects: it gets exactly the ones after it.
        resumed = await api.client.get("/v1/migrations/ev/events", headers={"Last-Event-ID": ids[2]})
        again = [e["id"] for e in _parse(resumed.text) if "id" in e]
        assert again == ids[3:]


def _parse(stream: str) -> list[dict[str, str]]:
    events = []
    for block in stream.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


async def test_expand_then_contract_through_the_api(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 100) g"
    )
    rename = {"sql": "ALTER TABLE users RENAME COLUMN name TO full_name"}
    try:
        async with in_process(dsn) as api:
            path = "/v1/migrations/rename"
            expand = await api.client.put(path, params={"wait": 30, "phase": "expand"}, json=rename)
            assert expand.status_code == 201, expand.text
            assert (expand.json()["state"], expand.json()["phase"]) == ("paused", "expand")
            # Both application versions work now.
            await conn.execute("INSERT INTO users (id, name) VALUES (1001, 'old')")
            await conn.execute("INSERT INTO users (id, full_name) VALUES (1002, 'new')")
            again = await api.client.put(path, params={"wait": 30, "phase": "expand"}, json=rename)
            assert again.status_code == 200 and again.json()["runs"] == expand.json()["runs"]

            contract = await api.client.put(path, params={"wait": 30, "phase": "contract"}, json=rename)
            assert (contract.json()["state"], contract.json()["phase"]) == ("succeeded", "contract")
            bad = await api.client.put(path, params={"phase": "sideways"}, json=rename)
            assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
        names = await conn.fetch("SELECT full_name FROM users WHERE id > 1000 ORDER BY id")
        assert [r["full_name"] for r in names] == ["old", "new"]
    finally:
        await conn.close()


async def test_what_the_policy_refuses_is_judged_on_the_catalog_plan(dsn: str) -> None:
    """A long lock is refused by table size, which only the catalog knows: VACUUM FULL of a small
    table runs; of a table above the policy's size it is a 4xx before anything is recorded, never
    a migration left queued that a ?wait would return unfinished."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small VALUES (1)")
    finally:
        await conn.close()
    async with in_process(dsn) as api:
        small = await api.client.put(
            "/v1/migrations/vf", params={"wait": 30}, json={"sql": "VACUUM FULL small"}
        )
        assert small.status_code == 201 and small.json()["state"] == "succeeded", small.text
        large = await api.client.post(
            "/v1/migrations",
            params={"wait": 30},
            json={"id": "vf-large", "sql": "VACUUM FULL small", "policy": {"long_lock_min_bytes": 0}},
        )
        assert large.status_code in (400, 422) and "--allow-long-locks" in large.json()["detail"], large.text
        missing = await api.client.get("/v1/migrations/vf-large")
        assert missing.status_code == 404
