"""Metrics: fed by the engine's events, read from memory, no migration id as a label."""

from __future__ import annotations

import asyncio

import asyncpg
from daemon_helpers import in_process, settled
from helpers import ITEMS, idle_blocker
from prometheus_client.parser import text_string_to_metric_families

from zdmproxy.engine.events import Blocker, Event, EventKind
from zdmproxy.metrics import MAX_APPLICATIONS, Metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_blocked_migration_is_counted_and_timed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items", app="reporting")
    try:
        async with in_process(dsn) as api:
            await api.client.put("/v1/migrations/secret-id-42", json={"sql": "ALTER TABLE items ADD x int"})
            async with asyncio.timeout(20):
                while not await conn.fetchval(
                    "SELECT EXISTS (SELECT FROM zdmproxy.events WHERE kind = 'waiting_for_blockers')"
                ):
                    await asyncio.sleep(0.05)
            await blocker.execute("ROLLBACK")
            assert (await settled(api.client, "secret-id-42"))["state"] == "succeeded"
            await conn.close()  # a scrape must not need the database
            text = (await api.client.get("/metrics")).text
    finally:
        await blocker.close()
        if not conn.is_closed():
            await conn.close()
    samples = _samples(text)
    assert samples[("zdmproxy_attempts_total", (("outcome", "succeeded"),))] == 1
    assert samples[("zdmproxy_step_duration_seconds_count", (("outcome", "succeeded"),))] == 1
    assert samples[("zdmproxy_lock_wait_seconds_count", ())] == 1
    assert samples[("zdmproxy_lock_wait_seconds_sum", ())] > 0
    assert samples[("zdmproxy_blockers_seen_total", (("application_name", "reporting"),))] >= 1
    assert samples[("zdmproxy_migrations", (("state", "succeeded"),))] == 1
    assert samples[("zdmproxy_migrations", (("state", "running"),))] == 0
    assert "secret-id-42" not in text
    assert all(name.startswith("zdmproxy_") for name, _ in samples)


def test_blocker_labels_are_bounded() -> None:
    metrics = Metrics()
    sink = metrics.sink()
    for n in range(MAX_APPLICATIONS + 30):
        blocker = Blocker(n, f"app-{n}", "idle in transaction", "client backend", 1.0, 1.0, "")
        sink(Event(EventKind.WAITING_FOR_BLOCKERS, 0, "waiting", blockers=(blocker,)))
    labels = {
        labels
        for name, labels in _samples(metrics.exposition().decode())
        if name == "zdmproxy_blockers_seen_total"
    }
    assert len(labels) == MAX_APPLICATIONS + 1
    assert (("application_name", "other"),) in labels


def test_throttle_signals_are_a_bounded_label() -> None:
    metrics = Metrics()
    sink = metrics.sink()
    for message in (
        "paused: replica lag 48.0 MB > 16.0 MB (standby1); autovacuum (pid 7) is working on the table",
        "slowed: 3 session(s) waited behind a batch, up to 120 ms > 100 ms",
        "live throttle keys ignored (only backfill_* apply): ['x']",
        "paused: something never heard of " + "x" * 50,
    ):
        sink(Event(EventKind.BACKFILL_THROTTLED, 0, message))
    counted = {
        labels: value
        for (name, labels), value in _samples(metrics.exposition().decode()).items()
        if name == "zdmproxy_backfill_throttled_total"
    }
    assert counted == {
        (("signal", "replica lag"),): 1,
        (("signal", "autovacuum"),): 1,
        (("signal", "other"),): 3,
    }
