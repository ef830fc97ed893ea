"""schemathesis over /openapi.json against a real ``zdmproxy serve``: whatever it sends, the
answer is never a 5xx, and the document it answers with is the one the schema promises."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from daemon_helpers import free_port
from hypothesis import HealthCheck, given, settings


@pytest.fixture
def daemon_url(dsn: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdmproxy", "serve", "--dsn", dsn, "--port", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
        assert "internal error" not in (tmp_path / "daemon.log").read_text()


def test_no_server_errors(daemon_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{daemon_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            if case.method == "PUT" or case.formatted_path == "/v1/migrations":
                case.query = {**(case.query or {}), "wait": 0}  # answer at once, whatever it runs
            response = case.call(timeout=10)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            if response.status_code >= 400 and response.status_code != 405:
                assert response.headers["content-type"] == ["application/problem+json"], response.text
                assert response.json()["code"]

        check()
