"""The engine's pure decisions, without a database: retry classification, lock ordering,
what counts as debris, which blockers may be cancelled, policy validation."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest

from zdmproxy.engine.attempt import lock_statements
from zdmproxy.engine.blockers import Target, is_cancellable_autovacuum
from zdmproxy.engine.debris import Probe, debris_probes
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.outcomes import Outcome, classify_failure
from zdmproxy.errors import ConfigError
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.settings import load_settings
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName


def pg_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("boom")


@pytest.mark.parametrize(
    ("error", "we_cancelled", "waiting", "expected"),
    [
        (asyncpg.exceptions.LockNotAvailableError, False, True, Outcome.LOCK_TIMEOUT),
        (asyncpg.exceptions.QueryCanceledError, True, True, Outcome.WATCHDOG_CANCELLED),
        (asyncpg.exceptions.QueryCanceledError, False, True, Outcome.LOCK_WAIT_TIMED_OUT),
        (asyncpg.exceptions.QueryCanceledError, False, False, Outcome.STATEMENT_TIMEOUT),
        (asyncpg.exceptions.DeadlockDetectedError, False, False, Outcome.DEADLOCK),
        (asyncpg.exceptions.SerializationError, False, False, Outcome.SERIALIZATION_FAILURE),
        (asyncpg.exceptions.AdminShutdownError, False, False, Outcome.CONNECTION_LOST),
        (asyncpg.exceptions.IdleInTransactionSessionTimeoutError, False, False, Outcome.CONNECTION_LOST),
        (asyncpg.exceptions.TransactionTimeoutError, False, False, Outcome.CONNECTION_LOST),
        (asyncpg.exceptions.PostgresSyntaxError, False, False, Outcome.FAILED),
        (asyncpg.exceptions.UndefinedTableError, False, False, Outcome.FAILED),
        (asyncpg.exceptions.InsufficientPrivilegeError, False, False, Outcome.FAILED),
    ],
)
def test_classify_failure(
    error: type[asyncpg.PostgresError], we_cancelled: bool, waiting: bool, expected: Outcome
) -> None:
    outcome = classify_failure(pg_error(error), we_cancelled=we_cancelled, waiting_for_lock=waiting)
    assert outcome == expected
    assert outcome.retryable == (expected not in {Outcome.STATEMENT_TIMEOUT, Outcome.FAILED})


def test_lost_connection_is_retryable() -> None:
    outcome = classify_failure(ConnectionResetError(), we_cancelled=False, waiting_for_lock=False)
    assert outcome == Outcome.CONNECTION_LOST and outcome.retryable


def test_tables_are_locked_strongest_first_and_only_tables() -> None:
    def target(oid: int, name: str, mode: LockMode, kind: str = "table") -> Target:
        return Target(oid, LockRequest(RelationName("public", name), mode, kind))

    statements = lock_statements(
        [
            target(1, "orders", LockMode.SHARE_ROW_EXCLUSIVE),
            target(2, "accounts", LockMode.ACCESS_EXCLUSIVE),
            target(3, "accounts_pkey", LockMode.ACCESS_EXCLUSIVE, kind="index"),
        ]
    )
    assert statements == [
        'LOCK TABLE ONLY "public"."accounts" IN ACCESS EXCLUSIVE MODE',
        'LOCK TABLE ONLY "public"."orders" IN SHARE ROW EXCLUSIVE MODE',
    ]


def test_debris_of_concurrent_builds() -> None:
    cic, ric, ric_table, dic = make_plan(
        "CREATE INDEX CONCURRENTLY items_a_idx ON s.items (a);"
        "REINDEX INDEX CONCURRENTLY s.items_b_idx;"
        "REINDEX TABLE CONCURRENTLY s.items;"
        "DROP INDEX CONCURRENTLY s.items_d_idx;"
    ).steps
    # A plain CREATE INDEX as one transactional step (the planner would make it CONCURRENTLY).
    plain = dataclasses.replace(cic, sql="CREATE INDEX items_a_idx ON s.items (a)", transactional=True)
    assert debris_probes(cic) == [Probe("invalid_index", ('"s"."items_a_idx"',))]
    assert debris_probes(ric) == [Probe("reindex_debris", ('"s"."items_b_idx"', "items_b_idx"))]
    assert debris_probes(ric_table) == [Probe("reindex_debris", ('"s"."items"', None))]
    assert debris_probes(dic) == []  # the retry drops the INVALID index anyway
    assert debris_probes(plain) == []  # transactional: a failure leaves nothing behind


def blocker(backend_type: str, query: str) -> Blocker:
    return Blocker(1, "", "active", backend_type, 1.0, 1.0, query)


def test_only_ordinary_autovacuum_is_cancellable() -> None:
    """Whether a worker vacuums to prevent wraparound is decided from the catalog (the
    ``wraparound`` the query computes), never from its query text; unknown means hands off."""
    worker = blocker("autovacuum worker", "autovacuum: VACUUM public.items")
    assert is_cancellable_autovacuum(dataclasses.replace(worker, wraparound=False))
    assert not is_cancellable_autovacuum(dataclasses.replace(worker, wraparound=True))
    assert not is_cancellable_autovacuum(worker)  # not known
    assert not is_cancellable_autovacuum(blocker("client backend", "VACUUM items"))


def test_blocker_description_names_what_an_operator_needs() -> None:
    idle = Blocker(4711, "reporting", "idle in transaction", "client backend", 2100.0, 2100.0, "SELECT 1")
    assert idle.describe() == (
        "pid 4711 app 'reporting', idle in transaction for 35 min, transaction open 35 min: SELECT 1"
    )


def test_lock_timeout_escalates_up_to_its_cap() -> None:
    policy = MigrationPolicy(lock_timeout_ms=1000, lock_timeout_max_ms=2000, lock_timeout_growth=1.5)
    assert [policy.lock_timeout_for(n) for n in (1, 2, 3)] == [1000, 1500, 2000]


def test_inconsistent_policy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="lock_timeout_max_ms"):
        load_settings(lock_timeout_ms=3000, lock_timeout_max_ms=1000)


def test_a_first_lock_timeout_above_the_default_maximum_raises_the_maximum() -> None:
    """--lock-timeout-ms 3000 alone must work; a maximum set too must be consistent with it."""
    assert load_settings().policy(lock_timeout_ms=3000).lock_timeout_max_ms == 3000
    assert load_settings().policy(lock_timeout_ms=500).lock_timeout_max_ms == 2000
    with pytest.raises(ConfigError, match="raise ZDM_LOCK_TIMEOUT_MAX_MS too"):
        load_settings().policy(lock_timeout_ms=3000, lock_timeout_max_ms=2500)


def test_two_prepared_transactions_are_two_blockers_in_the_summary() -> None:
    """They share pid 0 (pg_blocking_pids says so): the report must tell them apart by gid."""
    from zdmproxy.engine.runner import StepReport

    (step,) = make_plan("ALTER TABLE items ADD COLUMN x int").steps

    def prepared(gid: str) -> Blocker:
        return Blocker(0, "", None, None, 3600.0, None, "", gid=gid, owner="app", database="db")

    report = StepReport(0, step, waits=[(prepared("a"), prepared("b")), (prepared("a"),)])
    summary = report.blocked_summary()
    assert len(summary) == 2 and "'a'" in summary[0] and "2 times" in summary[0] and "'b'" in summary[1]


def test_a_blocker_seen_while_committing_is_described_as_it_blocked() -> None:
    """The last poll can catch a blocker mid-COMMIT (state 'idle', locks not yet released);
    the report must still say what kept us waiting: the idle transaction."""
    from zdmproxy.engine.runner import StepReport

    (step,) = make_plan("ALTER TABLE items ADD COLUMN x int").steps

    def seen(state: str, query: str) -> Blocker:
        return Blocker(4711, "reporting", state, "client backend", 30.0, 30.0, query)

    report = StepReport(
        0, step, waits=[(seen("idle in transaction", "SELECT 1"),), (seen("idle", "COMMIT"),)]
    )
    assert "idle in transaction for 30.0 s" in report.blocked_summary()[0]
