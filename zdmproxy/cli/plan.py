"""``zdmproxy plan``: the locks, rewrites and steps of a SQL file, with or without a database,
and a verdict per statement that CI can gate on (exit 6: something would block traffic for long).

The output is written straight to standard output, one statement at a time, as plain text (with
a few ANSI styles on a terminal) or JSON from the standard library's encoder: rendering each
statement through rich (markup parsing, a Table per statement, ``print_json``'s re-parse and
highlighting) cost ~94% of the time of a large plan and grew faster than the file. Time and
memory now grow linearly with the number of statements (bench/plan_scale.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from zdmproxy.cli.shared import err, out, read_script, run_async
from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import connect
from zdmproxy.errors import ExitCode
from zdmproxy.journal.folder import up_section
from zdmproxy.plan.model import Plan, PlannedStatement
from zdmproxy.plan.planner import make_plan
from zdmproxy.plan.verdict import Level, Verdict, verdicts
from zdmproxy.policy import MigrationPolicy
from zdmproxy.settings import load_settings
from zdmproxy.sql.parse import parse_script

_CHUNK = 500  # statements rendered per write (and per progress update)

_Style = Callable[[str, str], str]  # (text, style name) -> text, with ANSI codes on a terminal


def run(args: argparse.Namespace) -> int:
    script = up_section(read_script(args.file), args.file)  # what apply would run
    dsn = args.dsn
    with _Progress(err) as progress:
        progress.phase(f"planning {len(script.encode()) / 2**20:.1f} MB of SQL")
        # The configured policy (ZDM_ variables, config file): what apply would refuse, plan shows.
        policy = load_settings().policy()
        plan = (
            run_async(_plan_with_catalog(script, dsn, policy), dsn=dsn)
            if dsn
            else make_plan(script, policy=policy)
        )
        judged = verdicts(plan)
        if out.is_terminal:  # the output scrolling by is the progress; a bar would garble it
            progress.close()
        progress.phase("printing the plan", total=len(plan.statements))
        stream = out.file
        try:
            if args.json:
                _write_json(plan, judged, stream, progress)
            else:
                _write_text(plan, judged, stream, progress, color=out.color_system is not None)
            stream.flush()
        except BrokenPipeError:
            # The reader went away (`plan big.sql | head`): stop quietly, as other command-line
            # tools do; pointing stdout at /dev/null keeps the interpreter's final flush silent.
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    long = sum(verdict.level is Level.LONG_LOCK for verdict in judged)
    return int(ExitCode.BLOCKS_TRAFFIC if long else ExitCode.OK)


async def _plan_with_catalog(script: str, dsn: str, policy: MigrationPolicy) -> Plan:
    parse_script(script)  # a syntax error is reported before connecting
    session = await connect(dsn, "zdmproxy:plan")
    try:
        return await plan_script(session, script, policy)
    finally:
        await session.close()


def _write_json(plan: Plan, judged: tuple[Verdict, ...], stream: IO[str], progress: _Progress) -> None:
    """``plan.as_dict()`` with a verdict per statement, one statement per line.

    Written statement by statement with the C encoder (no ``indent``, which falls back to the
    pure-Python one at ~10x the cost), so the document never sits in memory as one string and
    a statement's line can be found with grep; any JSON reader sees the same object.
    """
    head = json.dumps(dataclasses.replace(plan, statements=()).as_dict(), ensure_ascii=False)
    before, empty, after = head.rpartition('"statements": []')
    assert empty, "Plan.as_dict() holds its statements under 'statements'"
    stream.write(before + '"statements": [')
    for start in range(0, len(plan.statements), _CHUNK):
        end = min(start + _CHUNK, len(plan.statements))
        chunk = [
            json.dumps(_statement_dict(plan.statements[index], judged[index]), ensure_ascii=False)
            for index in range(start, end)
        ]
        stream.write(("," if start else "") + "\n" + ",\n".join(chunk))
        progress.advance(end - start)
    stream.write(("\n]" if plan.statements else "]") + after + "\n")


def _statement_dict(planned: PlannedStatement, verdict: Verdict) -> dict[str, object]:
    """The plan contract's statement object, plus its verdict (an added key: nothing renamed)."""
    return {**planned.as_dict(), "verdict": verdict.as_dict()}


_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_VERDICT_STYLE = {
    Level.SAFE: "green",
    Level.BRIEF_LOCK: "yellow",
    Level.LONG_LOCK: "red",
    Level.UNKNOWN: "yellow",
}


def _write_text(
    plan: Plan, judged: tuple[Verdict, ...], stream: IO[str], progress: _Progress, *, color: bool
) -> None:
    def style(text: str, name: str) -> str:
        return f"\x1b[{_STYLES[name]}m{text}\x1b[0m" if color else text

    source = "from the database catalog" if plan.from_catalog else "without a database (assumptions noted)"
    stream.write(f"{style('Plan', 'bold')} for PostgreSQL {plan.server_version_num // 10000}, {source}\n")
    for start in range(0, len(plan.statements), _CHUNK):
        lines: list[str] = []
        end = min(start + _CHUNK, len(plan.statements))
        for number, planned in enumerate(plan.statements[start:end], start=start + 1):
            _statement_lines(number, planned, style, lines)
        stream.write("\n".join(lines) + "\n")
        progress.advance(end - start)
    stream.write(f"\n{style('Verdict', 'bold')}\n")
    width = len(str(len(plan.statements)))
    for start in range(0, len(judged), _CHUNK):
        lines = []
        for number, (planned, verdict) in enumerate(
            zip(plan.statements[start : start + _CHUNK], judged[start : start + _CHUNK], strict=True),
            start=start + 1,
        ):
            level = style(verdict.level.label, _VERDICT_STYLE[verdict.level])
            where = f"{number:>{width}}. line {planned.statement.line} {planned.effects.kind}"
            lines.append(f"{where}: {level}: {verdict.why}")
        stream.write("\n".join(lines) + "\n")
    stream.write(_conclusion(judged, style) + "\n")


def _statement_lines(number: int, planned: PlannedStatement, style: _Style, lines: list[str]) -> None:
    effects = planned.effects
    lines.append(f"\n{style(f'{number}.', 'bold')} line {planned.statement.line}: {planned.statement.text}")
    rows = [
        (
            str(lock.relation),
            lock.mode.pg_name,
            "nobody (created by this statement)" if lock.created else lock.mode.blocks(),
        )
        for lock in effects.locks
    ]
    if rows:
        widths = [max(len(row[i]) for row in (("relation", "lock", "blocks"), *rows)) for i in range(2)]
        header = f"   {'relation':<{widths[0]}}  {'lock':<{widths[1]}}  blocks"
        lines.append(style(header, "dim"))
        lines.extend(f"   {r:<{widths[0]}}  {m:<{widths[1]}}  {b}" for r, m, b in rows)
    for step in planned.steps:
        lines.append(f"   {style(step.phase.value, 'cyan')}: {step.reason}")
        if step.sql != planned.statement.text:  # a rule's step: what runs instead
            lines.append(f"      {style(step.sql, 'dim')}")
        if step.destructive:
            lines.append(f"   {style('destructive', 'red')}: {step.destructive} (needs --allow-destructive)")
        if step.long_lock:
            lines.append(f"   {style('long lock', 'red')}: refused unless --allow-long-locks")
    for note in effects.notes:
        lines.append(f"   {style('note', 'yellow')}: {note}")


def _conclusion(judged: tuple[Verdict, ...], style: _Style) -> str:
    counts = {level: sum(v.level is level for v in judged) for level in Level}
    parts = [f"{level.label} {counts[level]}" for level in Level if counts[level]]
    summary = ", ".join(parts) if parts else "no statements"
    if counts[Level.LONG_LOCK]:
        return style(
            f"{summary}: {counts[Level.LONG_LOCK]} statement(s) would block traffic for long (exit 6)", "red"
        )
    return f"{summary}: nothing would block traffic for long"


class _Progress:
    """A progress display on standard error for work that takes over a second.

    Nothing is shown when standard error is not a terminal (CI logs, pipes), nor for work
    that ends within the first second: a timer starts the display only then. rich's Live
    must not redirect standard output, or the plan itself would go to standard error.
    """

    def __init__(self, console: Console, *, delay_s: float = 1.0) -> None:
        self.started = threading.Event()  # set once the display is on the terminal
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._timer: threading.Timer | None = None
        if console.is_terminal:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._timer = threading.Timer(delay_s, self._start)
            self._timer.daemon = True

    def __enter__(self) -> _Progress:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        assert self._bar is not None  # close() joins this timer before it lets go of the bar
        self._bar.start()
        self.started.set()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def phase(self, description: str, total: int | None = None) -> None:
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, steps: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, steps)

    def close(self) -> None:
        """Stop (and erase) the display; it is not shown again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
            self._timer = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
