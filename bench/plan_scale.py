"""How ``zdmproxy plan`` scales with the size of the file: cost per statement at 1k, 10k, 100k.

A plan of a 5 MB file once took 9.5 minutes and 470 MB, ~94% of it in rich's rendering, which
grew faster than the file (issue 11). This measures, for files of N statements (a mix of what
migrations hold: CREATE TABLE, ADD COLUMN, CREATE INDEX [CONCURRENTLY], ALTER COLUMN TYPE,
ADD CONSTRAINT ... NOT VALID, VALIDATE CONSTRAINT, UPDATE), without a database:

- the whole process, ``zdmproxy plan FILE`` and ``zdmproxy plan --json FILE`` with standard
  output to /dev/null: CPU seconds (user + system, the kernel's accounting of the reaped
  child), wall seconds and peak RSS, median of --runs runs; an empty file gives the fixed cost
  (interpreter start-up and imports), and the cost per statement is (median - fixed) / N;
- in one process, where the CPU time goes: parsing (``parse_script``, the sql layer), the rest
  of ``make_plan`` (classification, facts), the verdicts, and rendering text and JSON.

Linear means the per-statement cost stays flat from 1k to 100k. CPU time is reported rather than
wall time because the machine is shared with other test suites; wall time is shown beside it.

Run: ``.venv/bin/python bench/plan_scale.py [--sizes 1000 10000 100000] [--runs 3]``; it writes
``bench/results/plan_scale-<date>.md`` and prints the same Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rich.console import Console

from zdmproxy.cli import plan as plan_command
from zdmproxy.plan.planner import make_plan
from zdmproxy.plan.verdict import verdicts
from zdmproxy.sql.parse import parse_script

ROOT: Final = Path(__file__).resolve().parent.parent

MIX: Final = (
    "CREATE TABLE t{i} (id bigint PRIMARY KEY, a int, b text);",
    "ALTER TABLE t{i} ADD COLUMN c{i} int;",
    "CREATE INDEX CONCURRENTLY t{i}_a_idx ON t{i} (a);",
    "ALTER TABLE t{i} ALTER COLUMN a TYPE bigint;",
    "ALTER TABLE t{i} ADD CONSTRAINT t{i}_a_chk CHECK (a > 0) NOT VALID;",
    "ALTER TABLE t{i} VALIDATE CONSTRAINT t{i}_a_chk;",
    "CREATE INDEX t{i}_b_idx ON t{i} (b);",
    "UPDATE t{i} SET a = 1 WHERE id = 5;",
)


def script(statements: int) -> str:
    """``statements`` statements, eight per table, one per line."""
    return "".join(MIX[i % len(MIX)].format(i=i // len(MIX)) + "\n" for i in range(statements))


@dataclass(frozen=True)
class Run:
    cpu_s: float
    wall_s: float
    peak_mb: float
    exit_code: int


def run_cli(args: list[str], timeout_s: float) -> Run:
    """One ``zdmproxy`` process, its output to /dev/null; CPU and peak RSS from wait4 (the
    kernel's accounting of that child alone). Killed, and the bench stopped, past ``timeout_s``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdmproxy", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by wait4: Popen must not wait for it again
    if code not in (0, 6):
        raise SystemExit(f"zdmproxy {' '.join(args)} exited {code} after {wall:.0f} s")
    return Run(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, code)


@dataclass(frozen=True)
class Phases:
    parse_s: float
    plan_s: float  # make_plan minus parsing
    verdict_s: float
    text_s: float
    json_s: float


def phases(text: str) -> Phases:
    """CPU seconds of each phase of a plan, in this process (the garbage collector left on:
    it is part of what the CLI pays)."""
    clock = time.process_time
    gc.collect()
    start = clock()
    parse_script(text)
    parsed = clock()
    plan = make_plan(text)
    planned = clock()
    judged = verdicts(plan)
    judged_at = clock()
    progress = plan_command._Progress(Console(file=io.StringIO()))  # not a terminal: shows nothing
    plan_command._write_text(plan, judged, io.StringIO(), progress, color=False)
    texted = clock()
    plan_command._write_json(plan, judged, io.StringIO(), progress)
    jsoned = clock()
    return Phases(
        parse_s=parsed - start,
        plan_s=(planned - parsed) - (parsed - start),
        verdict_s=judged_at - planned,
        text_s=texted - judged_at,
        json_s=jsoned - texted,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--runs", type=int, default=3, help="whole-process runs per size and mode (median)")
    parser.add_argument("--timeout-s", type=float, default=1800, help="warn when one run takes longer")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/plan_scale-<date>.md)")
    args = parser.parse_args()

    lines = [
        f"# plan_scale — {dt.date.today():%Y-%m-%d}",
        "",
        f"Produced by `.venv/bin/python bench/plan_scale.py --sizes {' '.join(map(str, args.sizes))} "
        f"--runs {args.runs}`; {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="plan_scale-") as tmp:
        files = {0: Path(tmp) / "empty.sql"}
        files[0].write_text("")
        for size in args.sizes:
            files[size] = Path(tmp) / f"s{size}.sql"
            files[size].write_text(script(size))
        fixed: dict[str, float] = {}
        whole: list[str] = []
        for mode, flags in (("text", []), ("json", ["--json"])):
            empty = [run_cli(["plan", *flags, str(files[0])], args.timeout_s) for _ in range(args.runs)]
            fixed[mode] = statistics.median(r.cpu_s for r in empty)
            for size in args.sizes:
                runs = [run_cli(["plan", *flags, str(files[size])], args.timeout_s) for _ in range(args.runs)]
                cpu = statistics.median(r.cpu_s for r in runs)
                wall = statistics.median(r.wall_s for r in runs)
                peak = statistics.median(r.peak_mb for r in runs)
                per = (cpu - fixed[mode]) / size * 1e6
                mb = files[size].stat().st_size / 2**20
                whole.append(
                    f"| `plan{' --json' if flags else ''}` | {size:,} | {mb:.1f} | {cpu:.2f} | {wall:.2f} "
                    f"| **{per:.0f}** | {peak:.0f} |"
                )
                print(whole[-1], flush=True)
        lines += [
            "## Whole process (median of runs; standard output to /dev/null)",
            "",
            f"Fixed cost (an empty file): {fixed['text']:.2f} s CPU (text), {fixed['json']:.2f} s (JSON).",
            "",
            "| command | statements | MB | CPU s | wall s | µs CPU per statement | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
            *whole,
            "",
            "## Where the CPU goes (one process, µs per statement)",
            "",
            "| statements | parse (sql layer) | rest of make_plan | verdicts | render text | render JSON |",
            "|---|---|---|---|---|---|",
        ]
        for size in args.sizes:
            p = phases(files[size].read_text())
            us = [x / size * 1e6 for x in (p.parse_s, p.plan_s, p.verdict_s, p.text_s, p.json_s)]
            lines.append(f"| {size:,} | " + " | ".join(f"{x:.1f}" for x in us) + " |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    out = args.out or ROOT / "bench" / "results" / f"plan_scale-{dt.date.today():%Y-%m-%d}.md"
    out.write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
