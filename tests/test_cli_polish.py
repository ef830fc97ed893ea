"""The CLI for people: generated policy flags, --help with defaults, shell completion, the live
progress display and the destructive-statement prompt on a terminal (a real pseudo-terminal)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from daemon_helpers import serve
from helpers import ITEMS, idle_blocker, run_cli, write_sql

from zdmproxy.policy import MigrationPolicy

VENV_BIN = Path(sys.executable).parent


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdmproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_every_policy_setting_is_an_apply_flag_with_its_default() -> None:
    shown = _cli("apply", "--help", env={"COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    blocks: dict[str, str] = {}  # each option with its help, however argparse wrapped it
    for line in shown.stdout.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            blocks[flag] = line
        elif line.startswith("    ") and blocks:
            blocks[flag] += " " + line.strip()
    lines = {flag: " ".join(text.split()) for flag, text in blocks.items()}
    for name, field in MigrationPolicy.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in lines, f"{flag} missing from apply --help"
        assert f"ZDM_{name.upper()}" in lines[flag]
        assert "default: " in lines[flag], f"{flag}: --help does not show its default"
        if isinstance(field.default, int | float) and not isinstance(field.default, bool):
            default = int(field.default) if float(field.default).is_integer() else field.default
            assert re.search(rf"default: {default}\b", lines[flag]), lines[flag]


def test_a_generated_flag_is_validated_by_the_model_and_named_as_typed(tmp_path: Path) -> None:
    path = write_sql(tmp_path, "SELECT 1;")
    bad = _cli(
        "apply", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--id", "x", "--max-attempts", "0", str(path)
    )
    assert bad.returncode == 2, bad.stderr
    assert "--max-attempts 0:" in bad.stderr and "ZDM_" not in bad.stderr


async def test_a_generated_flag_reaches_the_engine(dsn: str, tmp_path: Path) -> None:
    """--lock-timeout-max-ms was never hand-mapped: the attempt's lock_timeout shows it arrived."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)
    finally:
        await admin.close()
    result = await run_cli(
        "apply",
        "--dsn",
        dsn,
        "--id",
        "flags",
        "--json",
        "--lock-timeout-ms",
        "2500",
        "--lock-timeout-max-ms",
        "2600",
        sql="ALTER TABLE items ADD COLUMN note text;",
        tmp_path=tmp_path,
    )
    assert result.code == 0, result.stderr
    steps: list[dict[str, Any]] = result.json()["steps"]  # type: ignore[assignment]
    (step,) = steps
    assert [a["lock_timeout_ms"] for a in step["attempts"]] == [2500]


def test_completion_scripts_complete_the_generated_flags() -> None:
    bash = _cli("completion", "bash")
    assert bash.returncode == 0 and bash.stderr == ""
    line = "zdmproxy apply --lock-timeout-m"
    script = (
        'eval "$1"; COMP_WORDS=(zdmproxy apply --lock-timeout-m); COMP_CWORD=2; '
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}; _shtab_zdmproxy; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
    completed = subprocess.run(
        ["bash", "-c", script, "_", bash.stdout], capture_output=True, text=True, timeout=30
    )
    assert sorted(completed.stdout.split()) == ["--lock-timeout-max-ms", "--lock-timeout-ms"], (
        completed.stderr
    )
    zsh = _cli("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef zdmproxy")
    assert "--queue-budget-ms" in zsh.stdout


# -- on a terminal ----------------------------------------------------------------------------


@dataclass
class Screen:
    code: int
    text: str  # everything written to the terminal, escape sequences removed


async def on_terminal(
    *args: str,
    answer: str | None = None,
    when: tuple[str, Callable[[], Awaitable[object]]] | None = None,
    env: dict[str, str] | None = None,
) -> Screen:
    """Run zdmproxy with standard input and standard error on a pseudo-terminal, as a person
    would: ``answer`` is typed once the prompt shows; ``when`` = (text, action): the action runs
    once the text has appeared on screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140"}
    environment.pop("NO_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zdmproxy",
        *args,
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**environment, **(env or {})},
    )
    os.close(slave)
    seen = b""

    def read() -> bytes:
        try:
            return os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            return b""

    try:
        async with asyncio.timeout(90):
            while data := await asyncio.to_thread(read):
                seen += data
                if answer is not None and b"Run them?" in seen:
                    os.write(master, answer.encode() + b"\r")
                    answer = None
                if when is not None and when[0].encode() in seen:
                    await when[1]()
                    when = None
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "", seen.decode(errors="replace"))
    return Screen(code, text)


async def _items(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)
    finally:
        await admin.close()


async def _exists(dsn: str, table: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await conn.close()


@pytest.mark.parametrize(("answer", "dropped"), [("y", True), ("n", False)])
async def test_destructive_statement_asks_on_a_terminal(
    dsn: str, tmp_path: Path, answer: str, dropped: bool
) -> None:
    await _items(dsn)
    path = write_sql(tmp_path, "DROP TABLE items;")
    screen = await on_terminal("apply", "--dsn", dsn, "--id", "drop", str(path), answer=answer)
    assert "Run them?" in screen.text and "DROP TABLE items" in screen.text
    assert screen.code == (0 if dropped else 1), screen.text
    assert await _exists(dsn, "items") is not dropped
    if not dropped:
        assert "--allow-destructive" in screen.text  # refused as before, saying how to allow it


async def test_yes_answers_the_prompt_in_advance(dsn: str, tmp_path: Path) -> None:
    await _items(dsn)
    path = write_sql(tmp_path, "DROP TABLE items;")
    screen = await on_terminal("apply", "--dsn", dsn, "--id", "drop", "--yes", str(path))
    assert screen.code == 0, screen.text
    assert "Run them?" not in screen.text
    assert not await _exists(dsn, "items")


async def test_yes_without_a_terminal_does_not_allow_destructive(dsn: str, tmp_path: Path) -> None:
    """A script must name what it permits: --yes is an answer to a person's prompt only."""
    await _items(dsn)
    result = await run_cli(
        "apply", "--dsn", dsn, "--id", "drop", "--yes", sql="DROP TABLE items;", tmp_path=tmp_path
    )
    assert result.code == 1 and "--allow-destructive" in result.stderr
    assert await _exists(dsn, "items")


async def _apply_behind_blocker(dsn: str, tmp_path: Path, env: dict[str, str] | None = None) -> Screen:
    """Apply two ALTERs (the second one splits into a backfill) while 'reporting' holds a lock
    on items, on a terminal; the blocker commits once the screen says it is waited for."""
    await _items(dsn)
    path = write_sql(
        tmp_path,
        "ALTER TABLE items ADD COLUMN note text;\n"
        "ALTER TABLE items ADD COLUMN seen timestamptz NOT NULL DEFAULT clock_timestamp();",
    )
    blocker = await idle_blocker(dsn, "items")
    try:
        return await on_terminal(
            "apply", "--dsn", dsn, "--id", "live", str(path), when=("reporting", blocker.close), env=env
        )
    finally:
        await blocker.close()


async def test_live_display_shows_the_step_its_blocker_and_the_backfill(dsn: str, tmp_path: Path) -> None:
    screen = await _apply_behind_blocker(dsn, tmp_path)
    assert screen.code == 0, screen.text
    assert "▶ running step 1" in screen.text
    assert re.search(r"waiting for pid \d+ app 'reporting'", screen.text), screen.text
    assert re.search(r"backfill .*10,000 rows", screen.text), screen.text  # the bar, at its end
    assert "backfill done: 10000" in screen.text  # and the summary line that stays


async def test_no_color_gives_plain_lines_on_a_terminal(dsn: str, tmp_path: Path) -> None:
    screen = await _apply_behind_blocker(dsn, tmp_path, env={"NO_COLOR": "1"})
    assert screen.code == 0, screen.text
    assert "▶ running" not in screen.text and "\x1b[" not in screen.text
    assert "waiting for" in screen.text and "backfill done: 10000" in screen.text


async def test_apply_through_a_daemon_shows_the_runs_events(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ZDM_DAEMON_URL the run happens in the daemon; its event stream is rendered here
    as an in-process run's events are (plain lines without a terminal)."""
    await _items(dsn)
    served = await serve(tmp_path, "--dsn", dsn)
    monkeypatch.setenv("ZDM_DAEMON_URL", served.url)
    try:
        result = await run_cli(
            "apply",
            "--id",
            "seen",
            sql="ALTER TABLE items ADD COLUMN seen timestamptz NOT NULL DEFAULT clock_timestamp();",
            tmp_path=tmp_path,
        )
    finally:
        assert await served.stop() == 0
    assert result.code == 0, result.stderr
    assert '[1] ALTER TABLE "public"."items" ADD COLUMN "seen"' in result.stderr
    assert "backfill done: 10000" in result.stderr and "✓" in result.stderr
    assert "seen: succeeded (through the daemon" in result.stderr
