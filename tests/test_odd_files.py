"""Odd files a real project has, against a real server (issue 12, items 3, 14 and 15).

* CRLF files: what runs is the file's text as psql sends it (only a leading BOM
  dropped), so line endings inside literals and bodies are data; only the checksum
  ignores line endings, and messages count CRLF as one line break.
* Names other tools accept (upper case, ``-``) load and apply unchanged.
* A broken rollback file never blocks a deploy: ``migrate`` warns and applies;
  ``validate`` and ``rollback`` refuse the file, naming it and the place.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

import asyncmig
from asyncmig.events import Event, Message
from asyncmig.loader import load_migrations, load_sql_file
from asyncmig.migrator import Migrator

from .conftest import TestPg
from .migtree import catalog_snapshot, fetch, fetchval, write_tree

pytestmark = pytest.mark.anyio

PSQL_TIMEOUT = 60


def migrator(dsn: str, root: Path, **kw: object) -> Migrator:
    return Migrator(dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", **kw)


def write_bytes(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def run_psql(pg: TestPg, dsn: str, path: Path) -> None:
    subprocess.run(
        [pg.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
        check=True, capture_output=True, timeout=PSQL_TIMEOUT,
    )  # fmt: skip


# --------------------------------------------------------------------------- item 3: CRLF

# Every place where psql sends a line break as data: a plain literal, an escape string,
# a dollar-quoted function body, a quoted identifier; plus COPY data, whose CRLF line
# ends the server's COPY reads as line ends (no \r in the values).
CRLF_FILE = (
    "-- Migration: text with line breaks\r\n"
    "CREATE TABLE notes (id int PRIMARY KEY, body text);\r\n"
    "INSERT INTO notes VALUES (1, 'line one\r\nline two');\r\n"
    "INSERT INTO notes VALUES (2, E'esc one\r\nesc two');\r\n"
    "CREATE FUNCTION two_lines() RETURNS text LANGUAGE sql AS $fn$\r\n"
    "  SELECT 'a' || chr(10) || 'b'\r\n"
    "$fn$;\r\n"
    'CREATE TABLE "odd\r\nname" (id int);\r\n'
    "COPY notes (id, body) FROM STDIN;\r\n"
    "3\tcopied\r\n"
    "4\talso copied\r\n"
    "\\.\r\n"
)


async def _crlf_data(dsn: str) -> tuple[list[tuple[int, str]], str, list[str]]:
    rows = await fetch(dsn, "SELECT id, body FROM notes ORDER BY id")
    body = await fetchval(dsn, "SELECT prosrc FROM pg_proc WHERE proname = 'two_lines'")
    names = await fetch(dsn, "SELECT relname FROM pg_class WHERE relname LIKE 'odd%'")
    return [(r["id"], r["body"]) for r in rows], body, [r["relname"] for r in names]


async def test_crlf_file_inserts_crlf_inside_literals_like_psql(
    dsn: str, pg: TestPg, tmp_path: Path
) -> None:
    """A CRLF file keeps \\r\\n inside string literals, escape strings, function bodies
    and quoted identifiers, COPY rows carry no \\r, and all of it equals what psql
    stores for the same file."""
    path = write_bytes(tmp_path / "sql", "001_notes.sql", CRLF_FILE.encode())
    await migrator(dsn, tmp_path).migrate()
    rows, body, names = await _crlf_data(dsn)
    assert rows == [
        (1, "line one\r\nline two"),
        (2, "esc one\r\nesc two"),
        (3, "copied"),
        (4, "also copied"),
    ]
    assert body == "\r\n  SELECT 'a' || chr(10) || 'b'\r\n"
    assert names == ["odd\r\nname"]

    psql_dsn = pg.create_database()
    try:
        run_psql(pg, psql_dsn, path)
        assert await _crlf_data(psql_dsn) == (rows, body, names)
    finally:
        pg.drop_database(psql_dsn)


async def test_crlf_and_lf_versions_have_the_lf_checksum(tmp_path: Path) -> None:
    """The LF, CRLF, lone-CR and BOM+CRLF versions of a file have one checksum: the
    SHA-256 of the LF bytes (checksums recorded by earlier releases stay valid)."""
    lf = CRLF_FILE.replace("\r\n", "\n")
    variants = {
        "001_lf.sql": lf.encode(),
        "002_crlf.sql": CRLF_FILE.encode(),
        "003_cr.sql": lf.replace("\n", "\r").encode(),
        "004_bom.sql": b"\xef\xbb\xbf" + CRLF_FILE.encode(),
    }
    checksums = {
        load_sql_file(write_bytes(tmp_path, name, data), lazy=True).checksum
        for name, data in variants.items()
    }
    assert checksums == {hashlib.sha256(lf.encode()).hexdigest()}


async def test_crlf_file_switched_to_lf_after_apply_is_not_drift(dsn: str, tmp_path: Path) -> None:
    """A file applied with CRLF endings and checked out again with LF is not tampering."""
    path = write_bytes(tmp_path / "sql", "001_notes.sql", CRLF_FILE.encode())
    await migrator(dsn, tmp_path).migrate()
    path.write_bytes(CRLF_FILE.replace("\r\n", "\n").encode())
    assert (await migrator(dsn, tmp_path).migrate()).nothing_to_do
    assert (await migrator(dsn, tmp_path).validate()).ok


async def test_crlf_files_with_directives_and_an_outer_transaction_apply(
    dsn: str, tmp_path: Path
) -> None:
    """CRLF files: `-- asyncmig: no-transaction` lets CREATE INDEX CONCURRENTLY run, a
    lock-timeout directive is read, and an outer BEGIN/COMMIT is dropped."""
    files = {
        "001_table.sql": "BEGIN;\r\nCREATE TABLE t (a int);\r\nCOMMIT;\r\n",
        "002_index.sql": (
            "-- asyncmig: no-transaction\r\n-- asyncmig: lock-timeout=5s\r\n"
            "CREATE INDEX CONCURRENTLY t_a ON t (a);\r\n"
        ),
    }
    for name, text in files.items():
        write_bytes(tmp_path / "sql", name, text.encode())
    migrations = load_migrations(tmp_path / "sql")
    assert migrations.get(1).forward.dropped_outer_transaction  # type: ignore[union-attr]
    index = migrations.get(2).forward  # type: ignore[union-attr]
    assert not index.directives.transactional and index.directives.lock_timeout == 5.0
    assert (await migrator(dsn, tmp_path).migrate()).versions == (1, 2)
    assert await fetchval(dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a'::regclass")


def test_split_error_in_a_crlf_file_counts_crlf_as_one_line_break(tmp_path: Path) -> None:
    """An unterminated dollar quote on line 5 of a CRLF file, after a literal holding
    CRLF, is reported at 5:11 (the LF file's position)."""
    text = "SELECT 1;\r\nSELECT 'a\r\nb';\r\nSELECT 2;\r\nSELECT 3, $body$ never closed;\r\n"
    path = write_bytes(tmp_path / "sql", "001_broken.sql", text.encode())
    with pytest.raises(asyncmig.SplitError) as info:
        load_migrations(tmp_path / "sql")
    err = info.value
    assert (err.path, err.line, err.column) == (path, 5, 11)
    assert "$body$ opened at 5:11" in str(err)
    assert str(err).startswith(f"{path}:5:11: ")


def test_statement_positions_in_a_crlf_file_match_the_lf_file(tmp_path: Path) -> None:
    """Statements of a CRLF file start at the same line and column as in the LF file,
    and their text keeps the CRLF."""
    crlf = load_sql_file(write_bytes(tmp_path, "001_a.sql", CRLF_FILE.encode()))
    lf = load_sql_file(write_bytes(tmp_path, "002_a.sql", CRLF_FILE.replace("\r\n", "\n").encode()))
    assert [(s.line, s.column, s.end_line) for s in crlf.statements] == [
        (s.line, s.column, s.end_line) for s in lf.statements
    ]
    assert crlf.statements[1].text == "INSERT INTO notes VALUES (1, 'line one\r\nline two');"


# --------------------------------------------------------------------------- item 15: names

UPPER = "0187_Add_email_notifications_to_crate_owners.sql"


async def test_upper_case_and_hyphenated_names_apply_and_roll_back(
    dsn: str, tmp_path: Path
) -> None:
    """Names with upper-case letters and '-' load, apply under their own file names, and
    roll back with their `<version>_…` rollback files."""
    write_tree(
        tmp_path,
        {
            UPPER: "CREATE TABLE crate_owner_notifications (id int);\n",
            "0188_add-owner-index.sql": "CREATE TABLE owner_index (id int);\n",
        },
        {
            "0187_Add_email_notifications_to_crate_owners_rollback.sql":
                "DROP TABLE crate_owner_notifications;\n",
            "0188_drop-owner-index.sql": "DROP TABLE owner_index;\n",
        },
    )  # fmt: skip
    report = await migrator(dsn, tmp_path).migrate()
    assert report.versions == (187, 188)
    rows = await fetch(dsn, "SELECT version, filename FROM _migrations ORDER BY version")
    assert [(int(r["version"]), r["filename"]) for r in rows] == [
        (187, UPPER),
        (188, "0188_add-owner-index.sql"),
    ]
    names = [m.name for m in load_migrations(tmp_path / "sql")]
    assert names == ["Add_email_notifications_to_crate_owners", "add-owner-index"]
    down = await migrator(dsn, tmp_path).rollback(all=True)
    assert [d.version for d in down.rolled_back] == [188, 187]
    assert await fetchval(dsn, "SELECT to_regclass('crate_owner_notifications')") is None
    assert await fetchval(dsn, "SELECT to_regclass('owner_index')") is None


# ------------------------------------------------------------------- item 14: rollback files

FORWARD = {
    "001_people.sql": "CREATE TABLE people (id int);\nCREATE INDEX people_id ON people (id);\n",
    "002_pets.sql": "CREATE TABLE pets (id int);\n",
}
GOOD_RB = {"002_pets_rollback.sql": "DROP TABLE pets;\n"}

# Rollback files for version 1 with one problem each: (files, where the problem is).
BAD_ROLLBACKS: dict[str, tuple[dict[str, bytes], str, int | None]] = {
    "missing_directive": (
        {"001_people_rollback.sql": b"DROP TABLE pets_x;\nDROP INDEX CONCURRENTLY people_id;\n"},
        "001_people_rollback.sql", 2,
    ),
    "split_error": (
        {"001_people_rollback.sql": b"DROP TABLE people;\nSELECT $x$ never closed;\n"},
        "001_people_rollback.sql", 2,
    ),
    "encoding": (
        {"001_people_rollback.sql": b"DROP TABLE people; -- caf\xe9\n"},
        "001_people_rollback.sql", 1,
    ),
    "transaction_control": (
        {"001_people_rollback.sql": b"DROP TABLE people;\nCOMMIT;\nSELECT 1;\n"},
        "001_people_rollback.sql", 2,
    ),
    "ambiguous": (
        {"001_people_rollback.sql": b"DROP TABLE people;\n", "001_undo.sql": b"SELECT 1;\n"},
        "001_undo.sql", None,
    ),
}  # fmt: skip


def _bad_tree(root: Path, case: str) -> Path:
    write_tree(root, FORWARD, GOOD_RB)
    files, bad_name, _ = BAD_ROLLBACKS[case]
    for name, data in files.items():
        write_bytes(root / "rollback", name, data)
    return root / "rollback" / bad_name


@pytest.mark.parametrize("case", sorted(BAD_ROLLBACKS))
async def test_migrate_applies_and_warns_about_a_broken_rollback_file(
    case: str, dsn: str, tmp_path: Path
) -> None:
    """A rollback file that migrate will not run and that has a problem does not stop
    migrate: every forward migration applies, and a warning Message names the rollback
    file (with its line when the problem has one)."""
    bad, line = _bad_tree(tmp_path, case), BAD_ROLLBACKS[case][2]
    events: list[Event] = []
    report = await migrator(dsn, tmp_path).migrate(on_event=events.append)
    assert report.versions == (1, 2)
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    about = [w for w in warnings if str(bad) in w]
    assert len(about) == 1, warnings
    if line is not None:
        assert about[0].startswith(f"{bad}:{line}:")
    assert "validate" in about[0] and "rollback" in about[0]


@pytest.mark.parametrize("case", sorted(BAD_ROLLBACKS))
async def test_validate_reports_a_broken_rollback_file_as_an_error(
    case: str, dsn: str, tmp_path: Path
) -> None:
    """After migrate applied everything, validate still fails on the broken rollback
    file: an error issue with its path (and line)."""
    bad, line = _bad_tree(tmp_path, case), BAD_ROLLBACKS[case][2]
    await migrator(dsn, tmp_path).migrate()
    result = await migrator(dsn, tmp_path).validate()
    assert not result.ok
    errors = [i for i in result.errors if i.path == str(bad)]
    assert len(errors) == 1, result.issues
    assert errors[0].line == line


@pytest.mark.parametrize("case", sorted(BAD_ROLLBACKS))
async def test_rollback_refuses_a_broken_rollback_file_and_changes_nothing(
    case: str, dsn: str, tmp_path: Path
) -> None:
    """Rolling back the version whose rollback file is broken raises a file error that
    names the file (and line), before anything runs: catalog and history unchanged."""
    bad, line = _bad_tree(tmp_path, case), BAD_ROLLBACKS[case][2]
    await migrator(dsn, tmp_path).migrate()
    await migrator(dsn, tmp_path).rollback()  # 002 has a good rollback file
    catalog = await catalog_snapshot(dsn)
    history = await fetch(dsn, "SELECT version, status FROM _migrations ORDER BY version")
    log = await fetchval(dsn, "SELECT count(*) FROM _migrations_log")
    with pytest.raises(asyncmig.MigrationFileError) as info:
        await migrator(dsn, tmp_path).rollback()
    assert info.value.path == bad
    assert str(bad) in str(info.value)
    if line is not None:
        assert info.value.line == line
    assert await catalog_snapshot(dsn) == catalog
    assert await fetch(dsn, "SELECT version, status FROM _migrations ORDER BY version") == history
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations_log") == log
