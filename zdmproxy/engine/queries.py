"""Named SQL blocks from queries.sql, loaded once."""

from __future__ import annotations

from importlib.resources import files


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The ``-- name: <name>`` blocks of a package's SQL file, by name."""
    text = files(package).joinpath(filename).read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line.removeprefix("-- name: ").strip()
            blocks[name] = ""
        elif name is not None and not line.startswith("--"):
            blocks[name] += line + "\n"
    return {key: value.strip() for key, value in blocks.items()}


QUERIES = load_queries("zdmproxy.engine")
