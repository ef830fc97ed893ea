"""Folders of versioned migration files (``zdmproxy apply DIR``): names, order, and the checks
made before anything runs.

The names are the ones the seeds' users already have: Flyway's
``V1__init.sql``, ``V1.1__add_email.sql``, ``V2_1__...`` and plain numbered
files (``0001_init.sql``, ``20241130120000_add_email.sql``). Each file is its
own migration; its id is the file name without ``.sql``.
"""

from __future__ import annotations

import itertools
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


def scan(directory: Path) -> list[MigrationFile]:
    """The folder's ``*.sql`` files in version order; any badly named one is refused, naming it.

    Other files (a README, .gitkeep) and sub-folders are not migrations and are left alone; the
    ``.sql`` suffix is matched in any case, so ``V4__x.SQL`` is not skipped silently.
    """
    found: list[MigrationFile] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(".sql"):
            continue
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
            raise UsageError(
                f"{before.path.name} and {after.path.name} have the same version {before.version_text}: "
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
) -> None:
    """Refuse, before anything runs, a folder that disagrees with what the journal recorded
    (Flyway's ``validate``): an applied file whose content changed; a version recorded under
    another file name; a new file older than the newest applied one (unless ``out_of_order``); an
    applied migration whose file is gone (unless ``ignore_missing``), which is also what catches
    a renamed file, whose SQL would otherwise run again under its new name."""
    by_id = {row["id"]: row for row in recorded}
    by_version = {version_key(row["version"]): row for row in by_id.values()}
    applied = [row for row in by_id.values() if row["state"] == "succeeded"]
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
    missing = sorted(i for i, row in by_id.items() if row["state"] == "succeeded" and i not in present)
    if missing and not ignore_missing:
        raise ChecksumConflict(
            f"applied migration(s) {', '.join(repr(m) for m in missing)} have no file in the folder any "
            "more. If a file was renamed, restore its name (under a new name its SQL would run "
            "again); restore removed files (the folder is the history), or pass --ignore-missing "
            "if they were removed on purpose"
        )
