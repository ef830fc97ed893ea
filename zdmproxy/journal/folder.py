"""Folders of versioned migration files (``zdmproxy apply DIR``): names, order, and the checks
made before anything runs.

The names are the ones the seeds' users already have: Flyway's
``V1__init.sql``, ``V1.1__add_email.sql``, ``V2_1__...`` and plain numbered
files (``0001_init.sql``, ``20241130120000_add_email.sql``). Each file is its
own migration; its id is the file name without ``.sql``.

A folder is read the way Flyway reads a location: sub-folders too (hidden ones
excepted), every ``*.sql`` file in any case a migration or refused, never
skipped. What another tool keeps beside the SQL and zdmproxy would have to
ignore (Flyway's ``.sql.conf``, repeatable and undo files) is refused by name.
A file's down section (node-pg-migrate's ``-- Down Migration``, dbmate's
``-- migrate:down``) is not part of the migration: see ``up_section``.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zdmproxy.errors import ChecksumConflict, OutOfOrder, UsageError

_FLYWAY = re.compile(r"V(?P<version>\d+(?:[._]\d+)*)__(?P<description>.+)\.(?i:sql)")
_NUMBERED = re.compile(r"(?P<version>\d+)(?:[_-](?P<description>.+))?\.(?i:sql)")
ACCEPTED = (
    "V<version>__<description>.sql (Flyway: V1__init.sql, V1.1__add_email.sql, V2_1__x.sql) or "
    "<number>[_<description>].sql (0001_init.sql, 20241130120000_add_email.sql)"
)
# Flyway files zdmproxy does not run, refused by name rather than as a bad version.
_FLYWAY_OTHER = (
    (
        re.compile(r"R__.+\.(?i:sql)"),
        "a Flyway repeatable migration (R__): zdmproxy applies every "
        "file once; give it a version (V<n>__...) to apply it",
    ),
    (
        re.compile(r"U\d+(?:[._]\d+)*__.+\.(?i:sql)"),
        "a Flyway undo migration (U<version>__): zdmproxy "
        "runs no undo files (`zdmproxy rollback ID` undoes an expand); keep them out of this folder",
    ),
)
# A down section starts at a line that is one of these comments (node-pg-migrate: its own
# expression, ``-- Down Migration``; dbmate: ``-- migrate:down``); an up section likewise.
_MARKERS = {
    "up": re.compile(r"^\s*--[\s-]*up\s+migration|^--\s*migrate:up\b", re.IGNORECASE | re.MULTILINE),
    "down": re.compile(r"^\s*--[\s-]*down\s+migration|^--\s*migrate:down\b", re.IGNORECASE | re.MULTILINE),
}
_ID = re.compile(r"[A-Za-z0-9._:@+-]+")
MAX_ID_BYTES = 63  # an identifier's length in PostgreSQL, and what application_name can carry


def check_id(migration_id: str) -> str:
    """A migration id as the journal, the CLI and the HTTP API accept it."""
    if not migration_id or len(migration_id.encode()) > MAX_ID_BYTES or not _ID.fullmatch(migration_id):
        raise UsageError(
            f"migration id {migration_id!r} is not valid: use 1 to {MAX_ID_BYTES} bytes of letters, "
            "digits and . _ - : @ +"
        )
    return migration_id


@dataclass(frozen=True, order=True)
class MigrationFile:
    version: tuple[int, ...]
    path: Path = field(compare=False)

    @property
    def migration_id(self) -> str:
        return self.path.name[: -len(".sql")]

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)


def version_key(text: str) -> tuple[int, ...]:
    """A version as numbers, trailing zeros dropped: 1, 1.0 and 1.0.0 are one version (Flyway)."""
    parts = [int(part) for part in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def up_section(script: str, source: str = "the SQL") -> str:
    """The part of a migration file that applies it: without its down section.

    node-pg-migrate keeps both directions in one SQL file (``-- Up Migration`` ...
    ``-- Down Migration`` ...), as dbmate does (``-- migrate:up`` / ``-- migrate:down``); run
    whole, the file would undo itself. A file with both markers (found as those tools find
    them) is sectioned: the up section runs from its marker to the down marker, or to the end
    when the down section comes first. A down marker without an up marker is refused: it may be
    a down section (which must not run) or a comment that happens to read like one, in a file
    whose statements after it must all run; which one only the author knows. Without a down
    marker, the whole file is the migration.
    """
    down = _MARKERS["down"].search(script)
    if down is None:
        return script
    up = _MARKERS["up"].search(script)
    if up is None:
        line = script.count("\n", 0, down.end()) + 1
        raise UsageError(
            f"{source}: line {line} ({down.group().strip()!r}) reads as a down-section marker "
            "(node-pg-migrate, dbmate), and there is no up marker: if it starts a down section, "
            "put `-- Up Migration` (or `-- migrate:up`) above the up part, and only that part runs; "
            "if it is a comment, reword it"
        )
    end = down.start() if down.start() > up.start() else None
    # What comes before the up marker is blanked, not cut: positions and line numbers in
    # messages about the up section stay the file's own.
    before = "".join(c if c == "\n" else " " for c in script[: up.start()])
    return before + script[up.start() : end]


def _files(directory: Path) -> list[Path]:
    """Every entry under ``directory`` that is not a folder, sub-folders included (followed
    through symbolic links, each real folder once), hidden files and folders left out."""
    found: list[Path] = []
    seen: set[str] = set()
    for root, folders, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found.extend(Path(root, name) for name in sorted(names) if not name.startswith("."))
    return found


def scan(directory: Path) -> list[MigrationFile]:
    """The folder's ``*.sql`` files, sub-folders included, in version order; any badly named
    one is refused, naming it.

    Other files (a README, .gitkeep, an editor's ``V1__a.sql~``) are not migrations and are left
    alone; the ``.sql`` suffix is matched in any case, so ``V4__x.SQL`` is not skipped silently,
    and neither is a ``.sql`` name that is not a readable file (a broken symbolic link).
    """
    found: list[MigrationFile] = []
    for path in _files(directory):
        lower = path.name.lower()
        if lower.endswith(".sql.conf"):
            raise UsageError(
                f"{path}: Flyway's per-script configuration is not read by zdmproxy, which decides "
                "transactions and timeouts itself (a CONCURRENTLY statement runs outside one): "
                "remove the file"
            )
        if not lower.endswith(".sql"):
            continue
        if not path.is_file():
            raise UsageError(f"{path}: not a readable file (a broken symbolic link?)")
        for pattern, what in _FLYWAY_OTHER:
            if pattern.fullmatch(path.name):
                raise UsageError(f"{path}: {what}")
        match = _FLYWAY.fullmatch(path.name) or _NUMBERED.fullmatch(path.name)
        if match is None:
            raise UsageError(f"{path}: not a migration file name; accepted: {ACCEPTED}")
        file = MigrationFile(version_key(re.sub(r"_", ".", match["version"])), path)
        try:
            check_id(file.migration_id)
        except UsageError as exc:
            raise UsageError(f"{path}: the file name is its migration id, and {exc.message}") from None
        found.append(file)
    if not found:
        raise UsageError(f"{directory}: no migration files ({ACCEPTED})")
    found.sort()
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            first, second = (str(f.path.relative_to(directory)) for f in (before, after))
            raise UsageError(
                f"{first} and {second} have the same version {before.version_text}: "
                "give each migration its own version"
            )
    return found


def check_against_journal(
    files: Sequence[MigrationFile],
    checksums: dict[str, str],
    recorded: Iterable[dict[str, Any]],
    *,
    out_of_order: bool,
    ignore_missing: bool = False,
) -> list[str]:
    """Refuse, before anything runs, a folder that disagrees with what the journal recorded
    (Flyway's ``validate``): an applied file whose content changed; a version recorded under
    another file name; a new file older than the newest applied one (unless ``out_of_order``); an
    applied migration whose file is gone (unless ``ignore_missing``), which is also what catches
    a renamed file, whose SQL would otherwise run again under its new name.

    Returns the applied migrations newer than the folder's newest file (Flyway's "future"
    ones, which it ignores by default): an older release's folder, run again after a newer one
    (a rolled-back deploy), must not be refused. None of them can be a renamed file: a file
    renamed to a higher version leaves its old one behind the new newest (missing), to the same
    version is recorded under another name, to a lower one is out of order."""
    by_id = {row["id"]: row for row in recorded}
    # A migration recorded under a file's id without a version came from ``apply FILE --id``: it
    # is that file's migration (same id), but takes no part in the order checks.
    by_version = {version_key(row["version"]): row for row in by_id.values() if row["version"]}
    applied = [row for row in by_id.values() if row["state"] == "succeeded" and row["version"]]
    newest = max((version_key(row["version"]) for row in applied), default=None)
    for file in files:
        row = by_id.get(file.migration_id)
        ours = checksums[file.migration_id]
        if row is not None and row["state"] == "succeeded" and row["checksum"] != ours:
            raise ChecksumConflict(
                f"{file.path}: already applied, and its content changed since (recorded sha256 "
                f"{row['checksum']}, file sha256 {ours}). Applied migrations never change: restore "
                "the file and put the change in a new file with a higher version"
            )
        other = by_version.get(file.version)
        if other is not None and other["id"] != file.migration_id:
            raise ChecksumConflict(
                f"{file.path}: version {file.version_text} is recorded as migration {other['id']!r} "
                f"(from {other['source'] or 'another file'}): was the file renamed? Restore its name, "
                "or give it a new version"
            )
        pending = row is None or row["state"] != "succeeded"
        if pending and newest is not None and file.version < newest and not out_of_order:
            raise OutOfOrder(
                f"{file.path}: version {file.version_text} is older than "
                f"{'.'.join(map(str, newest))}, which is already applied. Give it a version after "
                "that one, or pass --out-of-order to apply it anyway"
            )
    present = {file.migration_id for file in files}
    gone = {i: row for i, row in by_id.items() if row["state"] == "succeeded" and row["version"]}
    gone = {i: row for i, row in gone.items() if i not in present}
    newest_file = max((file.version for file in files), default=())
    future = sorted(
        (i for i, row in gone.items() if version_key(row["version"]) > newest_file),
        key=lambda i: version_key(by_id[i]["version"]),
    )
    missing = sorted(i for i in gone if i not in future)
    if missing and not ignore_missing:
        raise ChecksumConflict(
            f"applied migration(s) {', '.join(repr(m) for m in missing)} have no file in the folder any "
            "more. If a file was renamed, restore its name (under a new name its SQL would run "
            "again); restore removed files (the folder is the history), or pass --ignore-missing "
            "if they were removed on purpose"
        )
    return future
