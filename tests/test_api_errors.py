"""Bad input gets a 4xx problem document that says what was wrong, never a 500, and nothing is
recorded or run; a daemon with a token refuses requests without it."""

from __future__ import annotations

import asyncpg
import pytest
from daemon_helpers import in_process

from zdmproxy.api.limits import MAX_BODY_BYTES

JSON = {"content-type": "application/json"}

BAD_BODIES = [
    ('{"sql": "CREATE TABLE t (id int)"', 400, "malformed_json"),
    ("[1, 2]", 422, "invalid_request"),
    ('{"sql": "CREATE TABLE t (id int)", "sq1": "typo"}', 422, "invalid_request"),
    ('{"sql": ""}', 422, "invalid_request"),
    ('{"sql": "  -- only a comment\\n"}', 400, "usage"),
    ('{"sql": "CREAT TABLE t (id int)"}', 400, "parse_error"),
    ('{"sql": "BEGIN; CREATE TABLE t (id int); COMMIT;"}', 422, "unsupported_statement"),
    ('{"sql": "DROP TABLE IF EXISTS t"}', 422, "unsupported_statement"),
    ('{"sql": "CREATE TABLE t (id int)", "policy": {"lock_timeout_ms": -1}}', 422, "invalid_request"),
    ('{"sql": "CREATE TABLE t (id int)", "policy": {"nope": 1}}', 422, "invalid_request"),
    ('{"sql": "CREATE TABLE t (id int); -- \\u0000"}', 422, "invalid_request"),
    ('{"sql": "CREATE TABLE t (id int)", "version": "1\\u0000"}', 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_bodies_are_refused_before_anything_is_recorded(
    dsn: str, body: str, status: int, code: str
) -> None:
    async with in_process(dsn) as api:
        answer = await api.client.put("/v1/migrations/m1", content=body, headers=JSON)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["code"] == code and problem["status"] == status and problem["detail"]
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM zdmproxy.migrations") == 0
        assert await conn.fetchval("SELECT to_regclass('t')") is None
    finally:
        await conn.close()


async def test_parse_error_carries_sqlstate_and_position(dsn: str) -> None:
    async with in_process(dsn) as api:
        answer = await api.client.put("/v1/migrations/m1", json={"sql": "CREATE TABLE t (id int);\nCREAT x"})
    problem = answer.json()
    assert problem["sqlstate"] == "42601" and problem["position"] == 25
    assert "line 2" in problem["detail"]


@pytest.mark.parametrize("bad_id", ["x" * 64, "é" * 32, "a b", "semi;colon", "quote'", "dollar$"])
async def test_bad_ids(dsn: str, bad_id: str) -> None:
    async with in_process(dsn) as api:
        answer = await api.client.put(f"/v1/migrations/{bad_id}", json={"sql": "CREATE TABLE t (id int)"})
        assert answer.status_code == 400 and answer.json()["code"] == "usage", answer.text
        posted = await api.client.post(
            "/v1/migrations", json={"id": bad_id, "sql": "CREATE TABLE t (id int)"}
        )
        assert posted.status_code in (400, 422) and posted.json()["code"] in ("usage", "invalid_request")
        for path in (f"/v1/migrations/{bad_id}", f"/v1/migrations/{bad_id}/events"):
            assert (await api.client.get(path)).status_code == 400


async def test_bad_last_event_id(dsn: str) -> None:
    async with in_process(dsn) as api:
        table = {"sql": "CREATE TABLE t (id int)"}
        await api.client.put("/v1/migrations/m1", params={"wait": 30}, json=table)
        for bad in ("x", "-1", str(2**63)):
            answer = await api.client.get("/v1/migrations/m1/events", headers={"Last-Event-ID": bad})
            assert answer.status_code == 422 and answer.json()["code"] == "invalid_request"


async def test_oversized_body_is_413(dsn: str) -> None:
    sql = "CREATE TABLE t (id int);" + "-- padding\n" * (MAX_BODY_BYTES // 11 + 1)
    async with in_process(dsn) as api:
        answer = await api.client.put("/v1/migrations/big", json={"sql": sql})
        assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"

        async def chunks():  # no Content-Length: counted as it streams in
            yield b'{"sql": "'
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536
            yield b'"}'

        streamed = await api.client.put("/v1/migrations/big", content=chunks(), headers=JSON)
        assert streamed.status_code == 413, streamed.text


async def test_unknown_route_and_method_are_problems(dsn: str) -> None:
    async with in_process(dsn) as api:
        missing = await api.client.get("/v1/nothing")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        method = await api.client.delete("/v1/migrations/m1")
        assert method.status_code == 405 and method.json()["code"] == "method_not_allowed"


async def test_token(dsn: str) -> None:
    token = "s3cret-token-0123456789"
    async with in_process(dsn, token=token) as api:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": token}):
            answer = await api.client.get("/v1/migrations", headers=headers)
            assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
            assert (await api.client.get("/metrics", headers=headers)).status_code == 401
        ok = await api.client.get("/v1/migrations", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert (await api.client.get("/healthz")).status_code == 200  # probes need no token
        assert (await api.client.get("/readyz")).status_code == 200
