"""Split a script into statements with PostgreSQL's own parser (pglast).

Positions are 0-based character offsets into the original script, so an
editor or a plan can point at the exact statement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError

from zdmproxy.errors import SqlParseError


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text exactly as written, where it starts, and its tree."""

    text: str
    position: int
    line: int
    node: ast.Node = field(compare=False, repr=False)


def parse_script(script: str) -> tuple[Statement, ...]:
    """Parse ``script``; a syntax error raises SqlParseError with PostgreSQL's message and position."""
    try:
        raws = parse_sql(script)
    except ParseError as exc:
        raise _located_error(script, exc) from None
    statements = []
    line, counted = 1, 0  # lines counted incrementally: counting from the start each time is quadratic
    for raw in raws:
        if raw.stmt is None:  # pglast types every field optional; a parsed statement has a tree
            continue
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(script)
        chunk = script[start:end]
        lead = len(chunk) - len(chunk.lstrip())
        position = start + lead
        line += script.count("\n", counted, position)
        counted = position
        statements.append(
            Statement(
                text=chunk.strip(),
                position=position,
                line=line,
                node=raw.stmt,
            )
        )
    return tuple(statements)


def _located_error(script: str, exc: ParseError) -> SqlParseError:
    """Build the error with a trustworthy character position.

    pglast converts libpg_query's byte offset to a character index, but the
    conversion drifts when multi-byte characters precede the error. Re-parsing
    a copy with every non-ASCII character replaced by one ASCII letter keeps
    every character index and makes bytes equal characters, so the second
    error's offset is exact. If the copy happens to parse, keep pglast's offset.

    libpg_query gives no offset for an error at the end of the input ("syntax
    error at end of input"): the offending token is the end, so the position
    is the script's length.
    """
    message, position = exc.args[0], exc.args[1]
    ascii_copy = "".join(ch if ch.isascii() else "x" for ch in script)
    if ascii_copy != script:
        try:
            parse_sql(ascii_copy)
        except ParseError as again:
            position = again.args[1]
    position = len(script) if position is None else max(0, min(int(position), len(script)))
    line = script.count("\n", 0, position) + 1
    line_start = script.rfind("\n", 0, position) + 1
    column = position - line_start + 1
    hint = _not_sql(script, line_start)
    return SqlParseError(message, position=position, line=line, column=column, hint=hint)


def _not_sql(script: str, line_start: int) -> str | None:
    """What a psql script holds that is not SQL, when the error's line is that: a meta-command,
    or the data lines after a ``COPY ... FROM stdin`` (a pg_dump file)."""
    if script[line_start:].lstrip(" \t").startswith("\\"):
        return (
            "a psql meta-command (\\i, \\set, \\connect ...) is not SQL: zdmproxy runs SQL only; "
            "inline an included file"
        )
    try:
        before = parse_sql(script[:line_start])
    except ParseError:
        return None
    last = before[-1].stmt if before else None
    if isinstance(last, ast.CopyStmt) and last.is_from and last.filename is None and not last.is_program:
        return "the data lines of COPY ... FROM stdin are not SQL: load data outside zdmproxy"
    return None
