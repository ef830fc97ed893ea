"""The CLI as a new user meets it (issue 11): mistakes, large files, and the plan's verdict.

Each case is what someone trying zdmproxy for the first time did: a file in the wrong encoding,
a directory, an unreachable database, a refused or empty file, a bad flag, a typo in the SQL.
The answer must name what the user gave, exit with the documented code, and never start a
server or wait for a connection it did not need. Then what ``plan`` tells them: a verdict per
statement, taken from the lock modes, scans and sizes of a real PostgreSQL's catalog, and exit 6
when a statement would block traffic for long (speed itself is measured in bench/plan_scale.py).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from helpers import ITEMS, run_cli
from rich.console import Console

from zdmproxy.cli import plan as plan_command
from zdmproxy.plan.planner import make_plan
from zdmproxy.settings import CONFIG_ENV, Settings

EIGHT_STATEMENTS = "\n".join(
    [
        "CREATE TABLE a (id int);",
        "ALTER TABLE a ADD COLUMN b int;",
        "CREATE INDEX CONCURRENTLY a_b ON a (b);",
        "ALTER TABLE a ALTER COLUMN b TYPE bigint;",
        "ALTER TABLE a ADD COLUMN c int;",
        "ALTER TABLE a ADD COLUMN d int;",
        "ALTER TABLE a ADD COLUMN e int;",
        "ALTER TABLE a ADD COLUMN f int;",
    ]
)
PASSWORD = "s3cret-Pa55"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m zdmproxy`` as a user runs it; bounded, so a hang is a failure, not a stall."""
    command = [sys.executable, "-m", "zdmproxy", *args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZDM_")}
    environment.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)


def sql_file(tmp_path: Path, text: str | bytes, name: str = "m.sql") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def unused_port() -> int:
    """A port nobody listens on (bound, read and released: connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unreachable_dsn() -> tuple[str, int]:
    port = unused_port()
    return f"postgresql://deployer:{PASSWORD}@127.0.0.1:{port}/shop", port


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_file_that_is_not_utf8_is_a_usage_error_naming_the_byte(tmp_path: Path, command: str) -> None:
    path = sql_file(tmp_path, "ALTER TABLE a ADD COLUMN caf\xe9 int;".encode("latin-1"))
    extra = ["--id", "x", "--dsn", unreachable_dsn()[0]] if command == "apply" else []
    result = cli(command, *extra, path)
    assert result.returncode == 2, result.stderr
    assert f"{path}: not UTF-8" in result.stderr and "byte 28 is 0xe9" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_standard_input_that_is_not_utf8_is_a_usage_error_too(command: str) -> None:
    extra = ["--id", "x", "--dsn", unreachable_dsn()[0]] if command == "apply" else []
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZDM_")}
    result = subprocess.run(
        [sys.executable, "-m", "zdmproxy", command, *extra, "-"],
        input="SELECT 1; ALTER TABLE a ADD COLUMN caf\xe9 int;".encode("latin-1"),
        capture_output=True,
        timeout=60,
        env=environment,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "standard input: not UTF-8" in stderr and "byte 38 is 0xe9" in stderr
    assert "Traceback" not in stderr
    # and a UTF-8 one, with the byte order mark a Windows editor writes, still plans
    planned = subprocess.run(
        [sys.executable, "-m", "zdmproxy", "plan", "-"],
        input="\ufeffCREATE TABLE caf\xe9 (id int);".encode(),
        capture_output=True,
        timeout=60,
        env=environment,
    )
    assert planned.returncode == 0, planned.stderr.decode()


def test_a_directory_given_as_file_says_it_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "migrations.sql"
    folder.mkdir()
    result = cli("plan", str(folder))
    assert result.returncode == 2, result.stderr
    assert "is a directory, not a SQL file" in result.stderr and "no such file" not in result.stderr
    # apply takes a folder of versioned files; with --id it must be a FILE, and it says so.
    with_id = cli("apply", "--id", "x", str(folder))
    assert with_id.returncode == 2 and "--id is for a FILE" in with_id.stderr, with_id.stderr


def test_plan_of_a_file_with_a_down_section_shows_what_apply_runs(tmp_path: Path) -> None:
    """A node-pg-migrate / dbmate file: apply runs its up section only, and plan shows that, at the
    file's own line numbers (the down section first here)."""
    script = "-- migrate:down\nDROP TABLE gone;\n\n-- migrate:up\nCREATE TABLE kept (id int);\n"
    result = cli("plan", "--json", sql_file(tmp_path, script))
    assert result.returncode == 0, result.stderr
    statements = json.loads(result.stdout)["statements"]
    assert [s["sql"] for s in statements] == ["CREATE TABLE kept (id int)"], statements
    assert statements[0]["line"] == 5, statements


def test_unreachable_database_names_host_and_port_and_the_real_step_count(tmp_path: Path) -> None:
    dsn, port = unreachable_dsn()
    result = cli("apply", "--dsn", dsn, "--id", "eight", sql_file(tmp_path, EIGHT_STATEMENTS))
    assert result.returncode == 69, result.stderr
    assert f"host 127.0.0.1 port {port}" in result.stderr and "database shop" in result.stderr
    assert "eight: none of its 8 step(s) ran" in result.stderr
    assert "0 of 0" not in result.stderr
    as_json = cli("apply", "--json", "--dsn", dsn, "--id", "eight", sql_file(tmp_path, EIGHT_STATEMENTS))
    assert as_json.returncode == 69 and f"port {port}" in as_json.stdout
    status = cli("status", "--dsn", dsn, "eight")
    assert status.returncode == 69 and f"host 127.0.0.1 port {port}" in status.stderr
    plan = cli("plan", "--dsn", dsn, sql_file(tmp_path, EIGHT_STATEMENTS))
    assert plan.returncode == 69 and f"host 127.0.0.1 port {port}" in plan.stderr
    for shown in (result, as_json, status, plan):
        assert PASSWORD not in shown.stdout + shown.stderr


def test_a_password_never_appears_when_the_url_is_wrong(tmp_path: Path) -> None:
    path = sql_file(tmp_path, EIGHT_STATEMENTS)
    for dsn in (
        f"postgresql://deployer:{PASSWORD}@127.0.0.1:notaport/shop",
        f"mysql://deployer:{PASSWORD}@127.0.0.1/shop",
        f"postgresql://deployer:{PASSWORD}@host.invalid/shop",
    ):
        result = cli("apply", "--dsn", dsn, "--id", "x", path)
        assert result.returncode in (69, 78), result.stderr
        assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("BEGIN;\nALTER TABLE a ADD COLUMN z int;\nCOMMIT;", "BEGIN/COMMIT"),
        ("SET lock_timeout = '1s';\nALTER TABLE a ADD COLUMN z int;", "SET in a migration"),
    ],
)
def test_a_refused_file_is_refused_before_connecting(tmp_path: Path, sql: str, refusal: str) -> None:
    dsn, _ = unreachable_dsn()
    result = cli("apply", "--dsn", dsn, "--id", "x", sql_file(tmp_path, sql))
    assert result.returncode == 1 and refusal in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr
    # Nor is a throwaway server started only to refuse the file.
    embedded = cli("apply", "--embedded", "--id", "x", sql_file(tmp_path, sql))
    assert embedded.returncode == 1 and refusal in embedded.stderr, embedded.stderr
    assert "embedded" not in embedded.stderr


@pytest.mark.parametrize("text", ["", "\n\n", "-- nothing yet\n/* later */\n"])
def test_an_empty_file_is_a_usage_error_saying_nothing_to_apply(tmp_path: Path, text: str) -> None:
    dsn, _ = unreachable_dsn()
    path = sql_file(tmp_path, text)
    result = cli("apply", "--dsn", dsn, "--id", "x", path)
    assert result.returncode == 2, result.stderr
    assert f"{path}: holds no SQL statement" in result.stderr and "nothing to apply" in result.stderr
    assert "cannot reach" not in result.stderr  # decided before connecting


def test_a_bad_flag_value_is_named_as_typed(tmp_path: Path) -> None:
    dsn, _ = unreachable_dsn()
    path = sql_file(tmp_path, EIGHT_STATEMENTS)
    result = cli("apply", "--dsn", dsn, "--id", "x", "--queue-budget-ms", "-5", path)
    assert result.returncode == 2, result.stderr
    assert "--queue-budget-ms -5:" in result.stderr and "ZDM_" not in result.stderr
    both = cli("apply", "--dsn", dsn, "--id", "x", "--queue-budget-ms", "0", "--deadline-s", "-1", path)
    assert (
        both.returncode == 2 and "--queue-budget-ms 0:" in both.stderr and "--deadline-s -1:" in both.stderr
    )
    # The same value from the environment is named by its variable, as the operator set it.
    from_env = cli("apply", "--dsn", dsn, "--id", "x", path, env={"ZDM_QUEUE_BUDGET_MS": "-5"})
    assert from_env.returncode == 78 and "ZDM_QUEUE_BUDGET_MS" in from_env.stderr, from_env.stderr


@pytest.mark.parametrize(
    ("sql", "where"),
    [
        ("ALTER TABLE a ADD COLUMN;", 'line 1, column 25: syntax error at or near ";"'),
        ("SELECT 1;\nSELECT 'unterminated;", "line 2, column 8: syntax error: unterminated quoted string"),
    ],
)
def test_a_syntax_error_says_so_once(tmp_path: Path, sql: str, where: str) -> None:
    result = cli("plan", sql_file(tmp_path, sql))
    assert result.returncode == 1 and where in result.stderr, result.stderr
    assert result.stderr.count("syntax error") == 1
    as_json = cli("plan", "--json", sql_file(tmp_path, sql))
    error = json.loads(as_json.stdout)["error"]
    assert error["message"].count("syntax error") == 1
    # position: a 0-based character offset into the file, as the README's example says.
    assert sql[error["position"]] in ";'"


# What each statement does to application traffic as apply runs it (the plan's steps, the worst
# one), on a 10,000-row table the catalog knows: (script, the verdict of its last statement, what
# the reason must say).
VERDICTS = [
    ("ALTER TABLE items ADD COLUMN x int", "brief_lock", "AccessExclusiveLock on public.items"),
    # Rewrites as written; planned as expand/contract, whose worst step is a brief swap.
    ("ALTER TABLE items ALTER COLUMN a TYPE bigint", "brief_lock", "no scan, no rewrite"),
    ("VACUUM FULL items", "long_lock", "rewrites public.items (~10.0k rows"),
    ("CREATE INDEX items_a ON items (a)", "safe", "lets reads and writes through, while it reads"),
    ("CREATE INDEX CONCURRENTLY items_a ON items (a)", "safe", "lets reads and writes through"),
    ("TRUNCATE items", "brief_lock", "the old rows are not read"),
    ("ALTER TABLE items ADD CONSTRAINT a_pos CHECK (a >= 0)", "brief_lock", "steps, the strongest step 1"),
    (
        "ALTER TABLE items ADD CONSTRAINT a_pos CHECK (a >= 0) NOT VALID;\n"
        "ALTER TABLE items VALIDATE CONSTRAINT a_pos",
        "safe",
        "ShareUpdateExclusiveLock on public.items lets reads and writes through, while it reads",
    ),
    ("UPDATE items SET n = 1 WHERE id = 1", "safe", "RowExclusiveLock on public.items"),
    ("CREATE TABLE fresh (id int);\nCREATE INDEX fresh_id ON fresh (id)", "safe", "only tables this script"),
    ("DO $$ BEGIN PERFORM 1; END $$", "unknown", "not in the lock catalogue"),
]


@pytest.mark.parametrize(("sql", "level", "why"), VERDICTS, ids=[case[0][:40] for case in VERDICTS])
async def test_plan_gives_each_statement_a_verdict(
    dsn: str, tmp_path: Path, sql: str, level: str, why: str
) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)
    finally:
        await admin.close()
    as_json = await run_cli("plan", "--json", "--dsn", dsn, sql=sql, tmp_path=tmp_path)
    statements = json.loads(as_json.stdout)["statements"]
    verdict = statements[-1]["verdict"]
    assert verdict["level"] == level and why in verdict["why"], verdict
    long = any(s["verdict"]["level"] == "long_lock" for s in statements)
    assert as_json.code == (6 if long else 0), as_json.stderr
    # The human plan ends with the same verdicts, one line per statement, then the conclusion.
    text = await run_cli("plan", "--dsn", dsn, sql=sql, tmp_path=tmp_path)
    assert text.code == as_json.code
    tail = text.stdout.rstrip("\n").splitlines()[-len(statements) - 1 :]
    label = level.replace("_", " ")
    assert tail[-2].startswith(f"{len(statements)}. line ") and f": {label}: {verdict['why']}" in tail[-2]
    assert ("would block traffic for long (exit 6)" in tail[-1]) is long


def test_plan_json_keeps_the_contract_and_adds_a_verdict(tmp_path: Path) -> None:
    """Every key of the plan contract stays as it was (others rely on it); "verdict" is added."""
    result = cli("plan", "--json", sql_file(tmp_path, EIGHT_STATEMENTS))
    assert result.returncode == 0, result.stderr
    expected = make_plan(EIGHT_STATEMENTS).as_dict()
    got = json.loads(result.stdout)
    for statement in got["statements"]:
        assert statement.pop("verdict")["level"] == "safe"  # every table is created by the script
    assert got == expected


def test_plan_of_many_statements_prints_every_one_and_nothing_on_a_non_terminal(tmp_path: Path) -> None:
    many = "\n".join(f"ALTER TABLE t{i % 50} ADD COLUMN c{i} int;" for i in range(3000))
    path = sql_file(tmp_path, many)
    text = cli("plan", path)
    assert text.returncode == 0 and text.stderr == "", text.stderr  # no progress bar in a pipe
    assert "\n3000. line 3000: ALTER TABLE t49 ADD COLUMN c2999 int" in text.stdout
    assert text.stdout.count(": brief lock: AccessExclusiveLock on t") == 3000
    as_json = cli("plan", "--json", path)
    assert as_json.returncode == 0 and as_json.stderr == ""
    statements = json.loads(as_json.stdout)["statements"]
    assert len(statements) == 3000 and statements[-1]["position"] == many.rindex("ALTER")


def test_progress_shows_only_after_its_delay_on_a_terminal() -> None:
    """The display starts from a timer: quick work shows nothing; slow work shows the phase."""
    quick = io.StringIO()
    with plan_command._Progress(Console(file=quick, force_terminal=True), delay_s=3600) as progress:
        progress.phase("planning", total=10)
        progress.advance(10)
    assert quick.getvalue() == ""
    slow = io.StringIO()
    with plan_command._Progress(Console(file=slow, force_terminal=True), delay_s=0) as progress:
        assert progress.started.wait(10)
        progress.phase("printing the plan", total=4)
        progress.advance(2)
        progress.refresh()
    assert "printing the plan" in slow.getvalue() and "2/4" in slow.getvalue()
    piped = io.StringIO()
    with plan_command._Progress(Console(file=piped), delay_s=0) as progress:
        progress.phase("planning")
    assert piped.getvalue() == "" and not progress.started.is_set()


def test_plan_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """``zdmproxy plan big.sql | head``: the output outgrows the pipe, the reader leaves."""
    path = sql_file(tmp_path, "\n".join(f"ALTER TABLE t ADD COLUMN c{i} int;" for i in range(3000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdmproxy", "plan", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(100).startswith(b"Plan for PostgreSQL")
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert code in (0, 6)


async def test_a_timeout_the_server_cannot_take_is_refused_before_anything_runs(
    dsn: str, tmp_path: Path
) -> None:
    """PostgreSQL's timeouts are an int of milliseconds. A statement_timeout of 3,000,000 s would
    be refused by the server's SET (22023) at the first step, after the journal started the
    migration: refused as typed instead (exit 2), while the largest the server takes runs."""
    path = sql_file(tmp_path, "CREATE TABLE a (id int); ALTER TABLE a ADD COLUMN b int;")
    too_long = cli("apply", "--dsn", dsn, "--id", "x", "--statement-timeout-s", "3000000", path)
    assert too_long.returncode == 2, too_long.stderr
    assert "--statement-timeout-s 3000000:" in too_long.stderr and "24.8 days" in too_long.stderr
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT to_regclass('a')") is None
        largest = cli("apply", "--dsn", dsn, "--id", "y", "--statement-timeout-s", "2147483.647", path)
        assert largest.returncode == 0, largest.stderr
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 'b'") == 1
    finally:
        await admin.close()


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_duration_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    dsn, _ = unreachable_dsn()
    path = sql_file(tmp_path, EIGHT_STATEMENTS)
    result = cli("apply", "--dsn", dsn, "--id", "x", "--watchdog-interval-ms", value, path)
    assert result.returncode == 2, result.stderr
    assert f"--watchdog-interval-ms {value}: Input should be a finite number" in result.stderr


def test_every_setting_a_message_or_the_readme_names_exists() -> None:
    """A refusal that says "configure ZDM_LOCK_TIMEOUT" sends the user to a variable nothing
    reads: every ZDM_ name in zdmproxy's messages and docs is a setting (or the config file's)."""
    root = Path(__file__).parent.parent
    known = {CONFIG_ENV} | {f"ZDM_{name.upper()}" for name in Settings.model_fields}
    texts = [*sorted((root / "zdmproxy").rglob("*.py")), root / "README.md"]
    unknown = {
        f"{path.relative_to(root)}: {name}"
        for path in texts
        for name in re.findall(r"\bZDM_[A-Z0-9_]*[A-Z0-9]", path.read_text())
        if name not in known
    }
    assert not unknown


def test_a_set_statement_is_refused_naming_settings_that_exist(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "SET lock_timeout = '1s';\nALTER TABLE a ADD COLUMN b int;")
    result = cli("plan", path)
    assert result.returncode == 1, result.stderr
    named = set(re.findall(r"ZDM_[A-Z_]+[A-Z]", result.stderr))
    assert named == {"ZDM_LOCK_TIMEOUT_MS", "ZDM_STATEMENT_TIMEOUT_S"}, result.stderr
    env = {"ZDM_LOCK_TIMEOUT_MS": "-1", "ZDM_STATEMENT_TIMEOUT_S": "-1"}
    checked = cli(
        "apply", "--dsn", unreachable_dsn()[0], "--id", "x", sql_file(tmp_path, "SELECT 1", "n.sql"), env=env
    )
    assert checked.returncode == 78 and all(name in checked.stderr for name in named), checked.stderr


async def test_a_read_only_database_is_refused_as_such_not_as_missing_grants(
    dsn: str, tmp_path: Path
) -> None:
    """A standby's address (or default_transaction_read_only, the same 25006 to a client): the
    refusal says read-only and what to point at, not which grants the role lacks."""
    admin = await asyncpg.connect(dsn)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    finally:
        await admin.close()
    result = cli("apply", "--dsn", dsn, "--id", "x", sql_file(tmp_path, "CREATE TABLE a (id int);"))
    assert result.returncode == 78, result.stderr
    assert "the database is read-only" in result.stderr and "target_session_attrs=read-write" in result.stderr
    assert "GRANT" not in result.stderr


@pytest.mark.parametrize(
    ("sql", "where", "why"),
    [
        ("\\i other.sql\nCREATE TABLE a (id int);", "line 1, column 1", "a psql meta-command"),
        ("CREATE TABLE a (id int);\n  \\set x 1\n", "line 2, column 3", "a psql meta-command"),
        (
            "CREATE TABLE t (a int);\nCOPY t FROM stdin;\n1\n2\n\\.\n",
            "line 3, column 1",
            "COPY ... FROM stdin",
        ),
    ],
)
def test_a_psql_script_says_what_in_it_is_not_sql(tmp_path: Path, sql: str, where: str, why: str) -> None:
    """A file written for psql (an \\i, a pg_dump's COPY data) fails at a line that is not SQL:
    say what that line is, not only "syntax error at or near"."""
    result = cli("plan", sql_file(tmp_path, sql))
    assert result.returncode == 1, result.stderr
    assert where in result.stderr and why in result.stderr, result.stderr
