"""The architecture and the standards are checked, not just drawn: import-linter's layer
contracts (pyproject.toml), ruff and mypy --strict run as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["lint-imports"],
        ["ruff", "check", "zdmproxy", "tests", "bench"],
        ["ruff", "format", "--check", "zdmproxy", "tests", "bench"],
        ["mypy"],
    ],
    ids=["import-linter", "ruff", "ruff-format", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
