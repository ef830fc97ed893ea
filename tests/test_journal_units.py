"""The journal's pure parts, without a database: how a folder's file names become versions and
ids, the checks a folder must pass against what the journal recorded before anything runs, the
checksum that identifies a migration's SQL, and steps as the journal stores them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zdmproxy.errors import ChecksumConflict, OutOfOrder, UsageError
from zdmproxy.journal.folder import (
    MigrationFile,
    check_against_journal,
    check_id,
    scan,
    up_section,
    version_key,
)
from zdmproxy.journal.steps import checksum, decode, encode, rows
from zdmproxy.plan.model import Step
from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.parse import parse_script


def folder(tmp_path: Path, *names: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n")
    return tmp_path


def scanned(tmp_path: Path, *names: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.path.name, f.version) for f in scan(folder(tmp_path, *names))]


# --- file names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "migration_id"),
    [
        ("V1__init.sql", (1,), "V1__init"),
        ("V1.1__add_email.sql", (1, 1), "V1.1__add_email"),
        ("V2_1__x.sql", (2, 1), "V2_1__x"),
        ("V3.2.1__three_parts.sql", (3, 2, 1), "V3.2.1__three_parts"),
        ("0001_init.sql", (1,), "0001_init"),
        ("0002-add-index.sql", (2,), "0002-add-index"),
        ("0003.sql", (3,), "0003"),
        ("20241130120000_add_email.sql", (20241130120000,), "20241130120000_add_email"),
        ("V4__shouting.SQL", (4,), "V4__shouting"),  # any case: never skipped silently
        ("0005_mixed.Sql", (5,), "0005_mixed"),
    ],
)
def test_accepted_names(tmp_path: Path, name: str, version: tuple[int, ...], migration_id: str) -> None:
    (file,) = scan(folder(tmp_path, name))
    assert file.version == version
    assert file.migration_id == migration_id
    assert file.path == tmp_path / name


@pytest.mark.parametrize(
    "name",
    [
        "init.sql",  # no version
        "V1_init.sql",  # Flyway separates the description with two underscores
        "V1__.sql",  # and the description is not empty
        "Vx__init.sql",
        "V1.__init.sql",
        "1.2_init.sql",  # a plain number has no dots
        "add_email_0001.sql",
        "init.SQL",
    ],
)
def test_refused_names_name_the_file_and_the_accepted_patterns(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, "V0__fine.sql", name))
    assert refused.value.exit_code == 2
    message = refused.value.message
    assert name in message
    assert "V<version>__<description>.sql" in message and "<number>" in message
    assert "V1__init.sql" in message and "0001_init.sql" in message


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("R__repeatable.sql", "repeatable migration"),  # never run as a versioned file
        ("U1__undo.sql", "undo migration"),
        ("U1.1__undo.SQL", "undo migration"),
        ("V1__init.sql.conf", "per-script configuration"),  # never ignored: it changes how V1 runs
    ],
)
def test_flyway_files_zdmproxy_does_not_run_are_refused_by_name(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, "V1__init.sql", name))
    assert refused.value.exit_code == 2
    assert name in refused.value.message and why in refused.value.message


def test_a_name_that_cannot_be_an_id_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, "V1__add email.sql"))
    assert "V1__add email.sql" in refused.value.message and "migration id" in refused.value.message


def test_a_name_longer_than_an_identifier_is_refused_naming_the_file(tmp_path: Path) -> None:
    longest = "V1__" + "x" * 59 + ".sql"  # an id of 63 bytes: PostgreSQL's identifier length
    assert [f.migration_id for f in scan(folder(tmp_path, longest))] == [longest.removesuffix(".sql")]
    too_long = "V2__" + "x" * 60 + ".sql"
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, too_long))
    assert too_long in refused.value.message and "63 bytes" in refused.value.message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("V1__init.sql", "V1__other.sql"),
        ("V1.1__a.sql", "V1_1__b.sql"),  # . and _ separate the same parts
        ("V1__a.sql", "0001_b.sql"),  # both styles in one folder: both are version 1
        ("0002_a.sql", "2_b.sql"),  # leading zeros do not make another version
    ],
)
def test_duplicate_versions_are_refused(tmp_path: Path, first: str, second: str) -> None:
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, first, second))
    assert first in refused.value.message and second in refused.value.message
    assert "same version" in refused.value.message


def test_other_files_and_dot_files_are_not_migrations(tmp_path: Path) -> None:
    folder(tmp_path, "V1__init.sql", "README.md", "notes.txt", ".gitkeep", ".V2__hidden.sql")
    folder(tmp_path, "V3__init.sql.bak", "V4__init.sql~", ".editor.swp", ".#V5__lock.sql", "#V6__a.sql#")
    (tmp_path / ".git").mkdir()  # hidden folders are not read
    (tmp_path / ".git" / "V7__in_git.sql").write_text("SELECT 1")
    assert [f.path.name for f in scan(tmp_path)] == ["V1__init.sql"]


def test_sub_folders_are_read_as_flyway_reads_them_in_one_version_order(tmp_path: Path) -> None:
    # Skipping them would apply a folder half and exit 0; Flyway reads a location recursively.
    folder(tmp_path, "V1__init.sql", "V10__last.sql")
    folder(tmp_path / "2024", "V2__a.sql", "V9__b.sql")
    folder(tmp_path / "2024" / "deeper", "V3__c.sql")
    folder(tmp_path / "V5__a_folder.sql", "V6__inside.sql")  # a folder named like a file
    (tmp_path / "loop").symlink_to(tmp_path)  # a link back up is read once, not forever
    found = scan(tmp_path)
    assert [str(f.path.relative_to(tmp_path)) for f in found] == [
        "V1__init.sql",
        "2024/V2__a.sql",
        "2024/deeper/V3__c.sql",
        "V5__a_folder.sql/V6__inside.sql",
        "2024/V9__b.sql",
        "V10__last.sql",
    ]
    assert [f.migration_id for f in found][:2] == ["V1__init", "V2__a"]  # ids stay the file names


def test_one_version_in_two_sub_folders_is_refused_naming_both_paths(tmp_path: Path) -> None:
    folder(tmp_path / "a", "V1__x.sql")
    folder(tmp_path / "b", "V1__x.sql")
    with pytest.raises(UsageError) as refused:
        scan(tmp_path)
    assert "a/V1__x.sql and b/V1__x.sql have the same version 1" in refused.value.message


def test_a_sql_name_that_is_not_a_readable_file_is_refused_not_skipped(tmp_path: Path) -> None:
    folder(tmp_path, "V1__init.sql")
    (tmp_path / "V2__moved.sql").symlink_to(tmp_path / "gone" / "V2__moved.sql")
    with pytest.raises(UsageError) as refused:
        scan(tmp_path)
    assert "V2__moved.sql" in refused.value.message and "broken symbolic link" in refused.value.message


@pytest.mark.parametrize(
    ("script", "up"),
    [
        # node-pg-migrate's SQL files: the marker lines are its own template's
        (
            "-- Up Migration\nCREATE TABLE t ();\n-- Down Migration\nDROP TABLE t;\n",
            "-- Up Migration\nCREATE TABLE t ();\n",
        ),
        ("--up migration\nA;\n  -- DOWN  MIGRATION\nB;\n", "--up migration\nA;\n"),
        # down first: blanked, so positions stay the file's own
        ("-- Down Migration\nB;\n-- Up Migration\nA;\n", " " * 17 + "\n  \n-- Up Migration\nA;\n"),
        # dbmate's
        ("-- migrate:up\nA;\n\n-- migrate:down\nB;\n", "-- migrate:up\nA;\n\n"),
        (
            "-- migrate:up transaction:false\nA;\n-- migrate:down\nB;\n",
            "-- migrate:up transaction:false\nA;\n",
        ),
        # no down section: the whole file
        ("A;\n-- the way down is a new migration\nB;\n", "A;\n-- the way down is a new migration\nB;\n"),
        ("-- Up Migration\nA;\n", "-- Up Migration\nA;\n"),
        ("A; -- down migration after code on the line\n", "A; -- down migration after code on the line\n"),
    ],
)
def test_a_files_down_section_is_not_part_of_the_migration(script: str, up: str) -> None:
    assert up_section(script) == up


def test_the_up_section_keeps_its_positions_in_the_file() -> None:
    """plan and apply report a statement's line and offset: those of the file the user edits."""
    script = "-- migrate:down\nDROP TABLE t;\n\n-- migrate:up\nCREATE TABLE t (id int);\n"
    up = up_section(script)
    assert up.index("CREATE TABLE") == script.index("CREATE TABLE")
    assert [s.text for s in parse_script(up)] == ["CREATE TABLE t (id int)"]


@pytest.mark.parametrize(
    "script",
    [
        "A;\n-- Down Migration\nB;\n",  # a down section, or a comment before B? refused, never guessed
        "ALTER TABLE a ADD x int;\n-- down migration: drop x by hand\nALTER TABLE b ADD y int;\n",
        "A;\n-- migrate:down\nB;\n",
    ],
)
def test_a_down_marker_without_an_up_marker_is_refused_naming_its_line(script: str) -> None:
    with pytest.raises(UsageError) as refused:
        up_section(script, "V3__x.sql")
    message = refused.value.message
    assert message.startswith("V3__x.sql: line 2 (") and "no up marker" in message, message


def test_a_change_to_the_down_section_is_not_a_change_of_the_migration() -> None:
    before = "-- Up Migration\nCREATE TABLE t (id int);\n-- Down Migration\nDROP TABLE t;\n"
    after = before.replace("DROP TABLE t;", "DROP TABLE IF EXISTS t;")
    assert sha(up_section(before)) == sha(up_section(after))
    assert sha(up_section(before)) == sha("CREATE TABLE t (id int);")


def test_a_folder_without_migrations_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        scan(folder(tmp_path, "README.md"))
    assert "no migration files" in refused.value.message


def test_versions_are_ordered_as_numbers_not_as_text(tmp_path: Path) -> None:
    assert scanned(
        tmp_path, "V10__ten.sql", "V9__nine.sql", "V1.10__b.sql", "V1.9__a.sql", "V1__one.sql"
    ) == [
        ("V1__one.sql", (1,)),
        ("V1.9__a.sql", (1, 9)),
        ("V1.10__b.sql", (1, 10)),
        ("V9__nine.sql", (9,)),
        ("V10__ten.sql", (10,)),
    ]


def test_plain_numbers_are_ordered_as_numbers(tmp_path: Path) -> None:
    assert [name for name, _ in scanned(tmp_path, "10_c.sql", "9_b.sql", "0001_a.sql", "100_d.sql")] == [
        "0001_a.sql",
        "9_b.sql",
        "10_c.sql",
        "100_d.sql",
    ]


@given(
    st.lists(
        st.lists(st.integers(0, 10**6), min_size=1, max_size=4), min_size=1, max_size=12, unique_by=tuple
    )
)
@settings(max_examples=60, deadline=None)
def test_any_set_of_flyway_versions_comes_out_in_tuple_order(versions: list[list[int]]) -> None:
    # 1, 1.0 and 1.0.0 are one version (trailing zeros do not count, as in Flyway)
    unique = {version_key(".".join(map(str, v))) for v in versions}
    with tempfile.TemporaryDirectory() as directory:
        for i, version in enumerate(unique):
            (Path(directory) / f"V{'.'.join(map(str, version))}__m{i}.sql").write_text("SELECT 1")
        found = scan(Path(directory))
    assert [f.version for f in found] == sorted(unique)
    assert all(version_key(f.version_text) == f.version for f in found)


# --- migration ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "migration_id", ["a", "V1__init", "2024-11-30.add_email", "team@service:42+hotfix", "x" * 63]
)
def test_valid_ids(migration_id: str) -> None:
    assert check_id(migration_id) == migration_id


@pytest.mark.parametrize(
    "migration_id",
    ["", "x" * 64, "é" * 32, "has space", "semi;colon", "quote'", 'double"', "slash/", "new\nline", "tab\t"],
)
def test_invalid_ids_are_usage_errors(migration_id: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_id(migration_id)
    assert refused.value.exit_code == 2 and repr(migration_id) in refused.value.message


# --- a folder against what the journal recorded -------------------------------------------------


def file(name: str) -> MigrationFile:
    """A scanned file as apply DIR sees it (check_against_journal only reads its name)."""
    with tempfile.TemporaryDirectory() as directory:
        (only,) = scan(folder(Path(directory), name))
    return only


def row(migration_id: str, version: str, checksum: str, state: str = "succeeded") -> dict[str, Any]:
    return {"id": migration_id, "version": version, "checksum": checksum, "state": state, "source": None}


def sums(*pairs: tuple[MigrationFile, str]) -> dict[str, str]:
    return {f.migration_id: c for f, c in pairs}


def test_unchanged_applied_files_and_new_later_files_pass() -> None:
    v1, v2, v3 = file("V1__a.sql"), file("V2__b.sql"), file("V3__c.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V2__b", "2", "bbb")]
    check_against_journal(
        [v1, v2, v3], sums((v1, "aaa"), (v2, "bbb"), (v3, "ccc")), recorded, out_of_order=False
    )


def test_a_changed_applied_file_is_a_conflict_naming_the_file_and_both_checksums() -> None:
    v1, v2 = file("V1__a.sql"), file("V2__b.sql")
    recorded = [row("V1__a", "1", "a" * 64), row("V2__b", "2", "b" * 64)]
    for out_of_order in (False, True):  # --out-of-order never lets an applied file change
        with pytest.raises(ChecksumConflict) as conflict:
            check_against_journal(
                [v1, v2], sums((v1, "a" * 64), (v2, "c" * 64)), recorded, out_of_order=out_of_order
            )
        assert conflict.value.exit_code == 3
        message = conflict.value.message
        assert str(v2.path) in message and "b" * 64 in message and "c" * 64 in message
        assert "V1__a" not in message


def test_a_renamed_file_is_a_conflict() -> None:
    renamed = file("V2__better_name.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V2__b", "2", "bbb")]
    with pytest.raises(ChecksumConflict) as conflict:
        check_against_journal([renamed], sums((renamed, "bbb")), recorded, out_of_order=False)
    assert "V2__better_name.sql" in conflict.value.message and "'V2__b'" in conflict.value.message
    assert "renamed" in conflict.value.message


def test_the_same_version_written_differently_is_the_same_version() -> None:
    flyway = file("V1_1__x.sql")  # recorded as version "1.1" from V1.1__x.sql
    recorded = [row("V1.1__x", "1.1", "aaa")]
    with pytest.raises(ChecksumConflict):
        check_against_journal([flyway], sums((flyway, "aaa")), recorded, out_of_order=False)


def test_a_new_file_older_than_the_newest_applied_one_is_out_of_order() -> None:
    v1, v1_5, v2 = file("V1__a.sql"), file("V1.5__late.sql"), file("V2__b.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V2__b", "2", "bbb")]
    checks = sums((v1, "aaa"), (v1_5, "late"), (v2, "bbb"))
    with pytest.raises(OutOfOrder) as refused:
        check_against_journal([v1, v1_5, v2], checks, recorded, out_of_order=False)
    assert refused.value.exit_code == 3
    assert str(v1_5.path) in refused.value.message and "--out-of-order" in refused.value.message
    assert "1.5" in refused.value.message and "older than 2" in refused.value.message
    check_against_journal([v1, v1_5, v2], checks, recorded, out_of_order=True)


def test_order_is_numeric_when_deciding_what_is_older() -> None:
    v9, v10 = file("V9__nine.sql"), file("V10__ten.sql")
    # V10 applied; V9 is older (numerically) even though "V9" > "V10" as text.
    with pytest.raises(OutOfOrder):
        check_against_journal(
            [v9, v10], sums((v9, "n"), (v10, "t")), [row("V10__ten", "10", "t")], out_of_order=False
        )
    # V9 applied; V10 is newer (numerically) even though "V10" < "V9" as text.
    check_against_journal(
        [v9, v10], sums((v9, "n"), (v10, "t")), [row("V9__nine", "9", "n")], out_of_order=False
    )
    v1_9, v1_10 = file("V1.9__a.sql"), file("V1.10__b.sql")
    check_against_journal(
        [v1_9, v1_10], sums((v1_9, "a"), (v1_10, "b")), [row("V1.9__a", "1.9", "a")], out_of_order=False
    )
    with pytest.raises(OutOfOrder):
        check_against_journal(
            [v1_9, v1_10], sums((v1_9, "a"), (v1_10, "b")), [row("V1.10__b", "1.10", "b")], out_of_order=False
        )


@pytest.mark.parametrize("state", ["failed", "running", "cancelled", "queued"])
def test_an_unfinished_recorded_file_may_change(state: str) -> None:
    v1, v2 = file("V1__a.sql"), file("V2__b.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V2__b", "2", "bbb", state)]
    check_against_journal([v1, v2], sums((v1, "aaa"), (v2, "fixed")), recorded, out_of_order=False)


def test_an_unfinished_file_does_not_make_later_ones_out_of_order() -> None:
    v1, v2, v3 = file("V1__a.sql"), file("V2__b.sql"), file("V3__c.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V3__c", "3", "ccc", "failed")]
    check_against_journal(
        [v1, v2, v3], sums((v1, "aaa"), (v2, "bbb"), (v3, "ccc")), recorded, out_of_order=False
    )


def test_an_applied_migration_whose_file_is_gone_is_refused_unless_ignored() -> None:
    v3 = file("V3__c.sql")
    recorded = [row("V1__gone", "1", "aaa"), row("V2__failed", "2", "bbb", "failed")]
    with pytest.raises(ChecksumConflict) as refused:
        check_against_journal([v3], sums((v3, "ccc")), recorded, out_of_order=False)
    assert "'V1__gone'" in refused.value.message and "--ignore-missing" in refused.value.message
    assert "V2__failed" not in refused.value.message  # never applied: nothing to keep
    check_against_journal([v3], sums((v3, "ccc")), recorded, out_of_order=False, ignore_missing=True)


def test_applied_migrations_newer_than_the_folder_are_an_older_release_not_missing() -> None:
    # A rolled-back deploy runs the older release's folder: Flyway ignores these "future" ones.
    v1, v2 = file("V1__a.sql"), file("V2__b.sql")
    recorded = [row("V1__a", "1", "aaa"), row("V2__b", "2", "bbb"), row("V3__c", "3", "ccc")]
    recorded.append(row("V2.5__d", "2.5", "ddd"))
    checks = sums((v1, "aaa"), (v2, "bbb"))
    assert check_against_journal([v1, v2], checks, recorded, out_of_order=False) == ["V2.5__d", "V3__c"]
    # one gone from below the folder's newest file is still missing
    with pytest.raises(ChecksumConflict) as refused:
        check_against_journal([v2], sums((v2, "bbb")), recorded, out_of_order=False)
    assert "'V1__a'" in refused.value.message and "V3__c" not in refused.value.message


def test_a_file_whose_id_was_applied_without_a_version_is_checked_but_not_ordered() -> None:
    # apply FILE --id V5__e recorded it with no version: it is that file, yet orders nothing.
    v2, v5 = file("V2__b.sql"), file("V5__e.sql")
    recorded = [row("V1__a", "1", "aaa"), {**row("V5__e", "5", "eee"), "version": None}]
    check_against_journal(
        [v2, v5], sums((v2, "bbb"), (v5, "eee")), recorded, out_of_order=False, ignore_missing=True
    )
    with pytest.raises(ChecksumConflict) as refused:
        check_against_journal(
            [v2, v5], sums((v2, "bbb"), (v5, "new")), recorded, out_of_order=False, ignore_missing=True
        )
    assert "V5__e.sql" in refused.value.message


def test_the_newest_file_renamed_to_a_lower_version_is_still_refused() -> None:
    v1, lower = file("V1__a.sql"), file("V2__c_renamed.sql")  # V3__c.sql renamed
    recorded = [row("V1__a", "1", "aaa"), row("V3__c", "3", "ccc")]
    with pytest.raises(OutOfOrder):
        check_against_journal([v1, lower], sums((v1, "aaa"), (lower, "ccc")), recorded, out_of_order=False)


def test_a_file_renamed_to_another_version_is_caught_as_missing() -> None:
    v1, moved = file("V1__a.sql"), file("V7__a_moved.sql")  # V5__b.sql renamed to V7__a_moved.sql
    recorded = [row("V1__a", "1", "aaa"), row("V5__b", "5", "bbb")]
    with pytest.raises(ChecksumConflict) as refused:
        check_against_journal([v1, moved], sums((v1, "aaa"), (moved, "bbb")), recorded, out_of_order=False)
    assert "'V5__b'" in refused.value.message and "renamed" in refused.value.message


# --- the checksum of a migration's SQL --------------------------------------------------------


def sha(script: str) -> str:
    return checksum(parse_script(script))


BASE = "CREATE TABLE t (id int PRIMARY KEY, a text);\nALTER TABLE t ADD COLUMN b int;\n"


@pytest.mark.parametrize(
    "same",
    [
        BASE.replace("\n", "\r\n"),
        BASE.replace("\n", "\r"),
        "  \n\n" + BASE + "\n\n\n",
        "-- the first migration\n" + BASE,
        BASE.replace(";\n", ";\n\n/* a block\n   comment */\n-- and a line comment\n"),
        "CREATE TABLE t (id int PRIMARY KEY, a text) ;   ALTER TABLE t ADD COLUMN b int",
        BASE + ";;\n-- trailing\n",
    ],
)
def test_whitespace_comments_and_line_endings_between_statements_do_not_count(same: str) -> None:
    assert sha(same) == sha(BASE)


@pytest.mark.parametrize(
    "changed",
    [
        BASE.replace("b int", "b bigint"),
        BASE.replace("a text", "a varchar"),
        BASE.replace("CREATE TABLE t", "CREATE TABLE t2").replace("ALTER TABLE t ", "ALTER TABLE t2 "),
        "ALTER TABLE t ADD COLUMN b int;\nCREATE TABLE t (id int PRIMARY KEY, a text);\n",  # order
        BASE + "SELECT 1;\n",
        "CREATE TABLE t (id int PRIMARY KEY, a text);\n",
        BASE.replace("ALTER TABLE t ADD COLUMN b int", "ALTER TABLE t ADD COLUMN b int DEFAULT 1"),
    ],
)
def test_a_changed_statement_changes_the_checksum(changed: str) -> None:
    assert sha(changed) != sha(BASE)


def test_checksum_is_sha256_hex() -> None:
    value = sha(BASE)
    assert len(value) == 64 and int(value, 16) >= 0


def test_string_literals_keep_their_meaning_in_the_checksum() -> None:
    assert sha("INSERT INTO t VALUES ('a;b')") != sha(
        "INSERT INTO t VALUES ('a'); INSERT INTO t VALUES ('b')"
    )
    assert sha("INSERT INTO t VALUES ('x  y')") != sha("INSERT INTO t VALUES ('x y')")


# --- steps as the journal stores them ------------------------------------------------------------

STATEMENTS = [
    "CREATE TABLE accounts (id bigint PRIMARY KEY, email text)",
    "ALTER TABLE accounts ADD COLUMN created_at timestamptz DEFAULT now()",
    "ALTER TABLE accounts ALTER COLUMN email TYPE varchar(320)",
    "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL",
    "ALTER TABLE orders ADD CONSTRAINT orders_account_fk"
    " FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID",
    "ALTER TABLE orders VALIDATE CONSTRAINT orders_account_fk",
    "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email)",
    "CREATE UNIQUE INDEX accounts_lower_email ON accounts (lower(email))",
    "DROP INDEX CONCURRENTLY accounts_email_idx",
    "REINDEX INDEX CONCURRENTLY accounts_pkey",
    "ALTER TABLE measurements DETACH PARTITION measurements_2023 CONCURRENTLY",
    "DROP TABLE old_accounts",
    "TRUNCATE sessions",
    'CREATE TABLE "Weird Schema"."Tab;le""s" (id int)',
    "INSERT INTO accounts (id, email) VALUES (1, 'a@example.com')",
    "UPDATE accounts SET email = lower(email) WHERE id < 100",
    "DELETE FROM accounts WHERE id = 1",
    "CREATE VIEW active AS SELECT * FROM accounts WHERE email IS NOT NULL",
    "VACUUM accounts",
    "ANALYZE accounts",
    "COMMENT ON TABLE accounts IS 'people'",
    "CREATE SCHEMA app",
    "CREATE TABLE app.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body jsonb)",
    "ALTER TABLE app.events RENAME TO events_v2",
    "ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    "VACUUM FULL sessions",
]


def all_steps(script: str) -> list[Step]:
    return [step for planned in make_plan(script).statements for step in planned.steps]


def test_round_trip_of_planned_steps_through_json() -> None:
    steps = all_steps(";\n".join(STATEMENTS))
    assert len(steps) > len(STATEMENTS)  # the rules split some statements
    assert any(s.revert for s in steps) and any(s.backfill for s in steps) and any(s.long_lock for s in steps)
    kinds = {step.kind for step in steps}
    assert {"CREATE INDEX CONCURRENTLY", "DROP TABLE"} <= kinds
    assert any(not s.transactional for s in steps) and any(s.destructive for s in steps)
    assert any(lock.created for s in steps for lock in s.locks)
    for step in steps:
        assert decode(json.loads(json.dumps(encode(step)))) == step


def test_rows_carries_every_step_in_order_with_its_spec() -> None:
    steps = all_steps(";\n".join(STATEMENTS[:6]))
    stored = json.loads(rows(steps, start=3))
    assert [r["index"] for r in stored] == list(range(3, 3 + len(steps)))
    for record, step in zip(stored, steps, strict=True):
        assert record["sql"] == step.sql and record["transactional"] == step.transactional
        assert record["phase"] == step.phase.value and record["kind"] == step.kind
        assert decode(record["spec"]) == step


def test_a_field_this_zdmproxy_does_not_know_is_an_error() -> None:
    (step,) = all_steps(STATEMENTS[0])
    with pytest.raises(TypeError):
        decode({**encode(step), "comes_from_the_future": True})


IDENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@given(schema=st.one_of(st.none(), IDENT), table=IDENT, column=IDENT, index=IDENT)
@settings(max_examples=80, deadline=None)
def test_any_relation_name_survives_the_round_trip(
    schema: str | None, table: str, column: str, index: str
) -> None:
    qualified = quote(table) if schema is None else f"{quote(schema)}.{quote(table)}"
    script = ";\n".join(
        [
            f"CREATE TABLE {qualified} ({quote(column)} int)",
            f"ALTER TABLE {qualified} ADD COLUMN {quote(column + '2')} text DEFAULT 'x'",
            f"CREATE INDEX CONCURRENTLY {quote(index)} ON {qualified} ({quote(column)})",
            f"ALTER TABLE {qualified} ALTER COLUMN {quote(column)} TYPE bigint",
        ]
    )
    steps = all_steps(script)
    assert len(steps) == 4
    for step in steps:
        assert decode(json.loads(json.dumps(encode(step)))) == step
    for record, step in zip(json.loads(rows(steps)), steps, strict=True):
        assert decode(record["spec"]) == step


def test_the_same_sql_in_a_later_file_is_not_a_rename_while_the_first_file_is_there() -> None:
    create, drop, again = file("V1__idx.sql"), file("V2__drop_idx.sql"), file("V3__idx_again.sql")
    checks = sums((create, "create"), (drop, "drop"), (again, "create"))
    recorded = [row("V1__idx", "1", "create"), row("V2__drop_idx", "2", "drop")]
    check_against_journal([create, drop, again], checks, recorded, out_of_order=False)


def test_trailing_zeros_do_not_make_another_version(tmp_path: Path) -> None:
    (tmp_path / "V1__a.sql").write_text("SELECT 1")
    (tmp_path / "V1.0__b.sql").write_text("SELECT 1")
    with pytest.raises(UsageError, match="same version 1"):
        scan(tmp_path)


def test_only_the_suffix_is_matched_in_any_case(tmp_path: Path) -> None:
    (tmp_path / "v1__lower.sql").write_text("SELECT 1")
    with pytest.raises(UsageError, match="not a migration file name"):
        scan(tmp_path)
