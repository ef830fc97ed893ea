from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import asyncpg
import pytest
from pgcluster import Cluster, ClusterPool, candidate_bin_dir, find_bin_dir

PG_VERSIONS: Final = (15, 18)


def _version_params() -> list[Any]:
    # A missing version shows up as a skip in the report instead of vanishing.
    params = []
    for major in PG_VERSIONS:
        marks = []
        if find_bin_dir(major) is None:
            reason = f"PostgreSQL {major} not installed: no {candidate_bin_dir(major)}/initdb"
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(major, id=f"pg{major}", marks=marks))
    return params


@pytest.fixture(scope="session")
def pg_clusters() -> Iterator[ClusterPool]:
    """Owns the servers, so a version starts only when first needed and stops once."""
    pool = ClusterPool()
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session", params=_version_params())
def pg_server(request: pytest.FixtureRequest, pg_clusters: ClusterPool) -> Cluster:
    """Served from the pool: pytest would tear a parametrized session fixture down
    whenever the parameter changes, restarting servers for interleaved tests."""
    major: int = request.param
    return pg_clusters.get(major)


@pytest.fixture
async def dsn(pg_server: Cluster) -> AsyncIterator[str]:
    """A fresh database per test: far cheaper than a cluster, and tests cannot leak
    tables, locks or settings into each other."""
    name = f"zdm_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    yield pg_server.dsn(name)

    admin = await asyncpg.connect(pg_server.dsn())
    try:
        # A test that leaked a connection (or a lock waiter) must not block the drop.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
