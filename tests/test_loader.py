"""Tests for :mod:`asyncmig.loader`: one per rule and per error, on trees in ``tmp_path``."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmig.errors import (
    AmbiguousRollbackError,
    DirectiveError,
    DuplicateVersionError,
    EncodingError,
    FileNameError,
    MigrationFileError,
    MissingDirectiveError,
    SplitError,
    TransactionControlError,
)
from asyncmig.loader import (
    Directives,
    Migration,
    MigrationSet,
    checksum_text,
    load_migrations,
    load_sql_file,
    parse_sql_text,
    read_sql_text,
    scan_migrations,
)

REPO = Path(__file__).resolve().parent.parent


def write(directory: Path, name: str, content: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def sql_file(tmp_path: Path, content: str | bytes, name: str = "001_test.sql") -> Path:
    return write(tmp_path / "sql", name, content)


def assert_where(err: MigrationFileError, path: Path, line: int, column: int) -> None:
    assert err.path == path
    assert (err.line, err.column) == (line, column)
    assert str(err).startswith(f"{path}:{line}:{column}: ")


# --------------------------------------------------------------------------- names and order


def test_versions_are_ordered_as_integers_not_strings(tmp_path: Path) -> None:
    for name in ["20261126153000_c.sql", "10_b.sql", "9_a.sql", "0002_z.sql", "000_zero.sql"]:
        sql_file(tmp_path, "SELECT 1;", name)
    migrations = load_migrations(tmp_path / "sql")
    assert migrations.versions == (0, 2, 9, 10, 20261126153000)
    assert [m.name for m in migrations] == ["zero", "z", "a", "b", "c"]
    assert migrations.migrations[1].filename == "0002_z.sql"


def test_same_integer_version_is_a_duplicate_naming_both_files(tmp_path: Path) -> None:
    first = sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    second = sql_file(tmp_path, "SELECT 2;", "1_b.sql")
    with pytest.raises(DuplicateVersionError) as info:
        load_migrations(tmp_path / "sql")
    message = str(info.value)
    assert str(first) in message and str(second) in message
    assert "version 1 " in message
    assert message.startswith(f"{info.value.path}: ")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("create_users.sql", "does not start with a version number"),
        ("001-create_users.sql", "followed by an underscore"),
        ("001_create users.sql", "'create users' may use only ASCII letters, digits, _ and -"),
        ("001_café.sql", "'café' may use only ASCII letters"),
        ("001_a.b.sql", "'a.b' may use only ASCII letters"),
        ("001_.sql", "'' may use only ASCII letters"),
        ("001_create_users.SQL", "lowercase .sql"),
        ("1" * 21 + "_x.sql", "21 digits"),
    ],
)
def test_bad_forward_file_name_says_what_it_must_look_like(
    tmp_path: Path, name: str, problem: str
) -> None:
    path = sql_file(tmp_path, "SELECT 1;", name)
    with pytest.raises(FileNameError) as info:
        load_migrations(tmp_path / "sql")
    assert info.value.path == path
    assert problem in str(info.value)
    assert "<version>_<name>.sql" in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_upper_case_and_hyphens_in_the_name_are_accepted(tmp_path: Path) -> None:
    """Names other tools' users have load unchanged; the version is still the digits."""
    for name in ["0187_Add_email_notifications_to_crate_owners.sql", "0188_add-index.sql",
                 "0189_-.sql"]:  # fmt: skip
        sql_file(tmp_path, "SELECT 1;", name)
    migrations = load_migrations(tmp_path / "sql")
    assert migrations.versions == (187, 188, 189)
    assert [m.name for m in migrations] == ["Add_email_notifications_to_crate_owners",
                                            "add-index", "-"]  # fmt: skip
    assert migrations.get(187).filename == "0187_Add_email_notifications_to_crate_owners.sql"  # type: ignore[union-attr]


def test_twenty_digit_version_is_accepted(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;", "9" * 20 + "_big.sql")
    assert load_migrations(tmp_path / "sql").versions == (10**20 - 1,)


def test_other_files_dotfiles_and_subdirectories_are_ignored(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;", "001_real.sql")
    sql_file(tmp_path, "# notes", "README.md")
    sql_file(tmp_path, "garbage \xff", ".001_swap.sql")
    sql_file(tmp_path, "garbage", "._001_real.sql")
    sql_file(tmp_path, "garbage", "001_real.sql.bak")
    write(tmp_path / "sql" / "archive.sql", "002_old.sql", "garbage")
    assert load_migrations(tmp_path / "sql").versions == (1,)


def test_missing_sql_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="migrations directory not found") as info:
        load_migrations(tmp_path / "nope")
    assert info.value.path == tmp_path / "nope"
    with pytest.raises(MigrationFileError, match="not a directory"):
        scan_migrations(sql_file(tmp_path, "SELECT 1;"))


def test_empty_sql_dir_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert len(migrations) == 0 and migrations.latest is None
    assert migrations.warnings == ()


# --------------------------------------------------------------------------- rollback files


def test_rollback_file_matched_by_integer_version_in_either_naming(tmp_path: Path) -> None:
    sql_file(tmp_path, "CREATE TABLE a (id int);", "001_create_a.sql")
    sql_file(tmp_path, "CREATE TABLE b (id int);", "002_create_b.sql")
    rollback = tmp_path / "rollback"
    write(rollback, "1_drop_a_table.sql", "DROP TABLE a;")
    write(rollback, "002_create_b_rollback.sql", "DROP TABLE b;")
    migrations = load_migrations(tmp_path / "sql", rollback)
    first, second = migrations
    assert first.rollback is not None and first.rollback.path == rollback / "1_drop_a_table.sql"
    assert second.rollback is not None and second.rollback.statements[0].text.startswith("DROP")
    assert migrations.warnings == ()


def test_two_rollback_files_for_one_version_are_ambiguous(tmp_path: Path) -> None:
    """validate's scan reports both files; eager loading (migrate) warns and keeps the
    migration without a rollback; lazy loading (rollback) raises when the file is used."""
    sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    one = write(tmp_path / "rollback", "001_drop_a.sql", "SELECT 2;")
    two = write(tmp_path / "rollback", "1_a_rollback.sql", "SELECT 3;")
    _, errors = scan_migrations(tmp_path / "sql", tmp_path / "rollback")
    (error,) = errors
    assert isinstance(error, AmbiguousRollbackError)
    assert str(one) in str(error) and str(two) in str(error)
    assert "keep exactly one" in str(error)
    eager = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert eager.get(1).rollback is None  # type: ignore[union-attr]
    (warning,) = eager.warnings
    assert warning.startswith(str(error)) and "migrate does not run rollback files" in warning
    lazy = load_migrations(tmp_path / "sql", tmp_path / "rollback", lazy=True)
    rollback = lazy.get(1).rollback  # type: ignore[union-attr]
    assert rollback is not None
    with pytest.raises(AmbiguousRollbackError):
        rollback.check()


def test_missing_rollback_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    (tmp_path / "rollback").mkdir()
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert migrations.get(1) is not None and migrations.get(1).rollback is None  # type: ignore[union-attr]
    (warning,) = migrations.warnings
    assert warning.startswith(f"{path}: no rollback file for version 1")


def test_no_rollback_dir_given_means_no_rollback_warnings(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    assert load_migrations(tmp_path / "sql").warnings == ()


def test_missing_rollback_dir_is_one_warning(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    sql_file(tmp_path, "SELECT 1;", "002_b.sql")
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert migrations.warnings == (
        f"{tmp_path / 'rollback'}: rollback directory not found; no migration has a rollback file",
    )


def test_rollback_without_forward_migration_is_a_warning(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    write(tmp_path / "rollback", "001_a_rollback.sql", "SELECT 1;")
    orphan = write(tmp_path / "rollback", "007_gone_rollback.sql", "SELECT 1;")
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert migrations.warnings == (f"{orphan}: rollback file without a forward migration 7_*.sql",)


def test_bad_rollback_file_name_is_an_error_for_validate_and_rollback(tmp_path: Path) -> None:
    """A rollback file without a version: an error when scanning (validate) and loading
    lazily (rollback: the version it belongs to is unknown); a warning for migrate."""
    sql_file(tmp_path, "SELECT 1;", "001_a.sql")
    path = write(tmp_path / "rollback", "rollback_001.sql", "SELECT 1;")
    _, errors = scan_migrations(tmp_path / "sql", tmp_path / "rollback")
    assert [type(e) for e in errors] == [FileNameError] and errors[0].path == path
    with pytest.raises(FileNameError) as info:
        load_migrations(tmp_path / "sql", tmp_path / "rollback", lazy=True)
    assert info.value.path == path
    warnings = load_migrations(tmp_path / "sql", tmp_path / "rollback").warnings
    assert any(w.startswith(f"{path}: ") for w in warnings)


def test_broken_rollback_file_is_a_warning_when_loading_eagerly(tmp_path: Path) -> None:
    """Eager loading (migrate) turns a rollback file's split error into a warning with
    file, line and column, and keeps the file's text unchecked (stored in history); the
    forward file still loads and is checked."""
    sql_file(tmp_path, "CREATE TABLE a (id int);\n", "001_a.sql")
    text = "DROP TABLE a;\r\nSELECT $x$ open;\r\n"
    path = write(tmp_path / "rollback", "001_a_rollback.sql", text)
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    (warning,) = migrations.warnings
    assert warning.startswith(f"{path}:2:8: unterminated dollar quote $x$ opened at 2:8")
    assert "`asyncmig validate` and `asyncmig rollback`" in warning
    migration = migrations.get(1)
    assert migration is not None and migration.statements[0].keyword == "CREATE TABLE"
    assert migration.rollback is not None and migration.rollback.text == text
    with pytest.raises(SplitError):
        migration.rollback.check()


def test_rollback_files_follow_the_forward_rules(tmp_path: Path) -> None:
    sql_file(tmp_path, "CREATE INDEX CONCURRENTLY i ON t (a);", "001_a.sql")
    sql_file(tmp_path, "CREATE TABLE b ();", "002_b.sql")
    rollback = tmp_path / "rollback"
    write(rollback, "002_b_rollback.sql", "BEGIN;\nDROP TABLE b;\nCOMMIT;\n")
    bad = write(rollback, "001_a_rollback.sql", "DROP INDEX CONCURRENTLY i;\n")
    migrations, errors = scan_migrations(tmp_path / "sql", rollback)
    kinds = sorted(type(e).__name__ for e in errors)
    assert kinds == ["MissingDirectiveError", "MissingDirectiveError"]
    assert any(e.path == bad for e in errors)
    b = migrations.get(2)
    assert b is not None and b.rollback is not None
    assert b.rollback.dropped_outer_transaction
    assert [s.text.rstrip(";") for s in b.rollback.statements] == ["DROP TABLE b"]


# --------------------------------------------------------------------------- text and checksum


def test_bom_is_dropped(tmp_path: Path) -> None:
    path = sql_file(tmp_path, b"\xef\xbb\xbfSELECT 1;\n")
    loaded = load_sql_file(path)
    assert loaded.text == "SELECT 1;\n"
    assert loaded.checksum == checksum_text("SELECT 1;\n")
    assert (loaded.statements[0].line, loaded.statements[0].column) == (1, 1)


def test_crlf_cr_and_lf_have_the_same_checksum(tmp_path: Path) -> None:
    lf = "-- header\nCREATE TABLE t (\n  a int\n);\n"
    paths = [
        sql_file(tmp_path, lf, "001_lf.sql"),
        sql_file(tmp_path, lf.replace("\n", "\r\n"), "002_crlf.sql"),
        sql_file(tmp_path, lf.replace("\n", "\r"), "003_cr.sql"),
        sql_file(tmp_path, b"\xef\xbb\xbf" + lf.replace("\n", "\r\n").encode(), "004_bom.sql"),
    ]
    loaded = [load_sql_file(p) for p in paths]
    assert [f.text for f in loaded] == [lf, lf.replace("\n", "\r\n"), lf.replace("\n", "\r"),
                                        lf.replace("\n", "\r\n")]  # fmt: skip
    assert {f.checksum for f in loaded} == {hashlib.sha256(lf.encode()).hexdigest()}


@given(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00")),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
)
def test_line_endings_are_kept_in_the_text_and_ignored_by_the_checksum(
    text: str, newline: str, bom: bool
) -> None:
    """The text read is the file's text with only a leading BOM dropped; its checksum is
    the LF text's, with or without a BOM; checksum_text normalises the same way."""
    content = ("\ufeff" if bom else "") + text.replace("\n", newline)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "001_x.sql"
        path.write_bytes(content.encode("utf-8"))
        read = read_sql_text(path)
        checksum = load_sql_file(path, lazy=True).checksum
    assert read == content.removeprefix("\ufeff")
    lf = text.removeprefix("\ufeff") if not bom else text
    assert checksum == checksum_text(read) == checksum_text(content) == checksum_text(lf)
    assert checksum == hashlib.sha256(lf.encode()).hexdigest()


def test_checksum_of_a_large_crlf_text_never_splits_a_crlf_pair() -> None:
    """checksum_text works a 1 MiB slice at a time; a CRLF (or CR CR LF) that straddles
    a slice boundary is still normalised like the whole text."""
    slice_size = 1 << 20
    for before in (slice_size - 2, slice_size - 1, slice_size):
        for newline in ("\r\n", "\r\r\n", "\r"):
            text = "a" * before + newline + "b\r\n" * 3
            expected = text.replace("\r\n", "\n").replace("\r", "\n")
            assert checksum_text(text) == hashlib.sha256(expected.encode()).hexdigest()
            assert checksum_text("\ufeff" + text) == checksum_text(text)


@pytest.mark.parametrize(
    "edited",
    [
        "-- header\nCREATE TABLE t (\n  a  int\n);\n",  # one more space
        "-- Header\nCREATE TABLE t (\n  a int\n);\n",  # a comment's case
        "-- header\nCREATE TABLE t (\n  a int\n);\n\n",  # a trailing newline
        "-- header\nCREATE TABLE t (\n\ta int\n);\n",  # tab for spaces
    ],
)
def test_any_other_edit_changes_the_checksum(edited: str) -> None:
    original = "-- header\nCREATE TABLE t (\n  a int\n);\n"
    assert checksum_text(edited) != checksum_text(original)
    assert len(checksum_text(original)) == 64


def test_invalid_utf8_names_file_byte_offset_line_and_column(tmp_path: Path) -> None:
    content = "-- é\r\nSELECT 'ab".encode() + b"\xff" + b"';\n"
    path = sql_file(tmp_path, content)
    with pytest.raises(EncodingError) as info:
        read_sql_text(path)
    err = info.value
    assert err.byte_offset == content.index(b"\xff") == 17
    assert_where(err, path, 2, 11)
    assert "byte offset 17" in str(err) and "0xff" in str(err)


def test_invalid_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    path = sql_file(tmp_path, b"\xef\xbb\xbfSELECT \xc3;")
    with pytest.raises(EncodingError) as info:
        load_sql_file(path)
    assert info.value.byte_offset == 10
    assert_where(info.value, path, 1, 8)


def test_lone_cr_counts_as_a_line_break_in_encoding_errors(tmp_path: Path) -> None:
    path = sql_file(tmp_path, b"SELECT 1;\r\xfe")
    with pytest.raises(EncodingError) as info:
        read_sql_text(path)
    assert_where(info.value, path, 2, 1)


def test_nul_character_is_rejected(tmp_path: Path) -> None:
    path = sql_file(tmp_path, b"SELECT 1;\nSELECT '\x00';\n")
    with pytest.raises(EncodingError, match="NUL") as info:
        read_sql_text(path)
    assert info.value.byte_offset == 18
    assert_where(info.value, path, 2, 9)


def test_unreadable_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="cannot read file"):
        read_sql_text(tmp_path / "missing.sql")


def test_parse_sql_text_checks_stored_sql_like_a_file(tmp_path: Path) -> None:
    text = "BEGIN;\r\nDROP TABLE t;\r\nCOMMIT;\r\n"
    path = sql_file(tmp_path, text)
    stored = parse_sql_text("\ufeff" + text, "history:1")
    assert stored.path == Path("history:1")
    assert stored.checksum == load_sql_file(path).checksum
    assert stored.dropped_outer_transaction and len(stored.statements) == 1
    with pytest.raises(TransactionControlError) as info:
        parse_sql_text("SELECT 1;\nROLLBACK;\n", "history:2")
    assert str(info.value).startswith("history:2:2:1: ")


# --------------------------------------------------------------------------- directives


def test_directives_are_read_from_the_header(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path,
        "-- Migration: add index\n"
        "-- Author: someone\n"
        "\n"
        "-- asyncmig: no-transaction\n"
        "/* a block comment */\n"
        "-- asyncmig: lock-timeout=5s\n"
        "-- asyncmig: statement-timeout=2min\n"
        "CREATE INDEX CONCURRENTLY i ON t (a);\n",
    )
    loaded = load_sql_file(path)
    assert loaded.directives == Directives(
        transactional=False, lock_timeout=5.0, statement_timeout=120.0
    )


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "lone_cr"])
def test_directives_are_read_whatever_the_line_endings(tmp_path: Path, newline: str) -> None:
    """CRLF and lone-CR files: header directives are read as in the LF file, with their
    values; a directive after the first statement is still refused."""
    header = [
        "-- Migration: add index",
        "/* a block comment",
        "   -- asyncmig: statement-timeout=9s (commented out) */",
        "-- asyncmig: no-transaction",
        "-- asyncmig: lock-timeout=5s",
        "CREATE INDEX CONCURRENTLY i ON t (a);",
        "",
    ]
    loaded = load_sql_file(sql_file(tmp_path, newline.join(header)))
    assert loaded.directives == Directives(transactional=False, lock_timeout=5.0)
    late = newline.join(["SELECT 1;", "-- asyncmig: lock-timeout=5s", "SELECT 2;", ""])
    with pytest.raises(DirectiveError, match="directive after the first statement"):
        load_sql_file(sql_file(tmp_path, late, "002_late.sql"))


def test_no_directives_means_defaults(tmp_path: Path) -> None:
    assert load_sql_file(sql_file(tmp_path, "SELECT 1;")).directives == Directives()


@pytest.mark.parametrize(
    "line",
    [
        "--asyncmig:no-transaction",
        "-- ASYNCMIG: NO-TRANSACTION",
        "  --  asyncmig :  no_transaction  ",
        "\t-- AsyncMig: No-Transaction",
    ],
)
def test_directive_spelling_is_tolerant(tmp_path: Path, line: str) -> None:
    loaded = load_sql_file(sql_file(tmp_path, f"{line}\nVACUUM;\n"))
    assert loaded.directives.transactional is False


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("-- asyncmig: lock-timeout = 500ms", 0.5),
        ("-- asyncmig: LOCK_TIMEOUT=1.5s", 1.5),
        ("-- asyncmig: lock-timeout=0", 0.0),
        ("-- asyncmig: lock-timeout=1h 30min", 5400.0),
    ],
)
def test_timeout_directive_values(tmp_path: Path, line: str, expected: float) -> None:
    loaded = load_sql_file(sql_file(tmp_path, f"{line}\nSELECT 1;\n"))
    assert loaded.directives.lock_timeout == expected


def test_unknown_directive_lists_the_valid_ones(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "-- header\n-- asyncmig: no-transactions\nSELECT 1;\n")
    with pytest.raises(DirectiveError) as info:
        load_sql_file(path)
    assert_where(info.value, path, 2, 14)
    message = str(info.value)
    assert "unknown directive 'no-transactions'" in message
    assert "did you mean no-transaction?" in message
    for valid in ("no-transaction", "lock-timeout=<duration>", "statement-timeout=<duration>"):
        assert valid in message


def test_directive_after_the_first_statement_is_an_error(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path, "-- header\nCREATE TABLE t (a int);\n\n  -- asyncmig: no-transaction\nVACUUM;\n"
    )
    with pytest.raises(DirectiveError, match="before the first statement") as info:
        load_sql_file(path)
    assert_where(info.value, path, 4, 3)
    assert "(line 2)" in str(info.value)


def test_directive_after_the_outer_begin_is_after_the_first_statement(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "BEGIN;\n-- asyncmig: lock-timeout=5s\nSELECT 1;\nCOMMIT;\n")
    with pytest.raises(DirectiveError, match="before the first statement") as info:
        load_sql_file(path)
    assert_where(info.value, path, 2, 1)


def test_directive_text_inside_a_statement_is_not_a_directive(tmp_path: Path) -> None:
    body = (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "-- asyncmig: no-transaction\n"
        "  RETURN 1;\n"
        "END;\n"
        "$$;\n"
        "SELECT '\n-- asyncmig: bogus\n';\n"
    )
    loaded = load_sql_file(sql_file(tmp_path, body))
    assert loaded.directives == Directives()
    assert len(loaded.statements) == 2


@pytest.mark.parametrize(
    ("value", "fragment", "column"),
    [
        ("soon", "cannot read 'soon'", 27),
        ("5000", "add a unit", 27),
        ("-5s", "cannot be negative", 27),
    ],
)
def test_bad_duration_in_directive(tmp_path: Path, value: str, fragment: str, column: int) -> None:
    path = sql_file(tmp_path, f"-- asyncmig: lock-timeout={value}\nSELECT 1;\n")
    with pytest.raises(DirectiveError) as info:
        load_sql_file(path)
    assert_where(info.value, path, 1, column)
    assert "lock-timeout:" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("-- asyncmig:", "empty directive"),
        ("-- asyncmig: no-transaction=yes", "takes no value"),
        ("-- asyncmig: lock-timeout", "needs a duration"),
        ("-- asyncmig: statement-timeout=", "needs a duration"),
        ("-- asyncmig: lock-timeout 5s", "write `lock-timeout=<duration>`"),
        ("-- asyncmig: no-transaction lock-timeout=5s", "one directive per line"),
        ("-- asyncmig no-transaction", "without a colon"),
        ("-- asyncmig lock-timeout=5s", "without a colon"),
    ],
)
def test_malformed_directive(tmp_path: Path, line: str, fragment: str) -> None:
    path = sql_file(tmp_path, f"{line}\nSELECT 1;\n")
    with pytest.raises(DirectiveError) as info:
        load_sql_file(path)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}:1:")


def test_directive_given_twice(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path, "-- asyncmig: lock-timeout=1s\n-- asyncmig: lock-timeout=2s\nSELECT 1;\n"
    )
    with pytest.raises(DirectiveError, match=r"given twice \(first on line 1\)") as info:
        load_sql_file(path)
    assert_where(info.value, path, 2, 14)


def test_directive_inside_a_block_comment_is_commented_out(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path,
        "/* disabled for now:\n-- asyncmig: no-transaction\n/* nested */\n"
        "-- asyncmig: lock-timeout=1s\n*/\n-- a /* not a block\n"
        "-- asyncmig: statement-timeout=3s\nSELECT 1;\n",
    )
    assert load_sql_file(path).directives == Directives(statement_timeout=3.0)


def test_prose_mentioning_asyncmig_is_just_a_comment(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path, "-- asyncmig runs this in a transaction\n-- asyncmigration notes\nSELECT 1;\n"
    )
    assert load_sql_file(path).directives == Directives()


# --------------------------------------------------------------------------- transactions


@pytest.mark.parametrize(
    ("begin", "commit"),
    [
        ("BEGIN", "COMMIT"),
        ("begin", "commit"),
        ("BEGIN WORK", "COMMIT WORK"),
        ("BEGIN TRANSACTION", "END TRANSACTION"),
        ("START TRANSACTION", "END"),
    ],
)
def test_outer_begin_commit_is_dropped_with_a_notice(
    tmp_path: Path, begin: str, commit: str
) -> None:
    path = sql_file(
        tmp_path,
        f"-- header\n\n{begin};\nCREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n{commit};\n",
    )
    loaded = load_sql_file(path)
    assert loaded.dropped_outer_transaction
    assert [s.line for s in loaded.statements] == [4, 5]
    (notice,) = loaded.notices
    assert notice.startswith(f"{path}:3:1: outer ")
    assert "dropped (lines 3 and 6)" in notice
    assert "asyncmig runs each migration in its own transaction" in notice
    assert load_migrations(tmp_path / "sql").notices == (notice,)


def test_file_without_outer_transaction_has_no_notice(tmp_path: Path) -> None:
    loaded = load_sql_file(sql_file(tmp_path, "SELECT 1;"))
    assert not loaded.dropped_outer_transaction and loaded.notices == ()


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("SELECT 1;\nROLLBACK;\n", 2, "ROLLBACK"),
        ("SELECT 1;\nCOMMIT;\nSELECT 2;\n", 2, "not allowed inside a migration"),
        ("BEGIN;\nSELECT 1;\nCOMMIT;\nBEGIN;\nSELECT 2;\nCOMMIT;\n", 3, "COMMIT"),
        ("SELECT 1;\nABORT;\n", 2, "ABORT"),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';\n", 2, "not allowed"),
        ("BEGIN;\nSELECT 1;\n", 1, "no matching COMMIT at its end"),
        ("BEGIN;\n", 1, "no matching COMMIT"),
        ("SELECT 1;\nCOMMIT;\n", 2, "no matching BEGIN"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;\n", 1, "transaction modes"),
        ("START TRANSACTION READ ONLY;\nSELECT 1;\nCOMMIT;\n", 1, "transaction modes"),
        ("BEGIN;\nSELECT 1;\nCOMMIT AND CHAIN;\n", 3, "cannot close the migration"),
        ("BEGIN;\nSELECT 1;\nROLLBACK;\n", 1, "no matching COMMIT"),
    ],
)
def test_other_transaction_control_is_rejected(
    tmp_path: Path, body: str, line: int, fragment: str
) -> None:
    path = sql_file(tmp_path, body)
    with pytest.raises(TransactionControlError) as info:
        load_sql_file(path)
    assert_where(info.value, path, line, 1)
    assert fragment in str(info.value)
    assert "asyncmig runs each migration in its own transaction" in str(info.value)


def test_savepoints_are_accepted(tmp_path: Path) -> None:
    body = (
        "BEGIN;\nSAVEPOINT a;\nINSERT INTO t VALUES (1);\nROLLBACK TO SAVEPOINT a;\n"
        "ROLLBACK TO a;\nRELEASE SAVEPOINT a;\nRELEASE a;\nCOMMIT;\n"
    )
    loaded = load_sql_file(sql_file(tmp_path, body))
    assert loaded.dropped_outer_transaction
    assert len(loaded.statements) == 6


def test_savepoint_in_a_no_transaction_file_is_rejected(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "-- asyncmig: no-transaction\nVACUUM;\nSAVEPOINT a;\n")
    with pytest.raises(TransactionControlError, match="needs a transaction") as info:
        load_sql_file(path)
    assert_where(info.value, path, 3, 1)


def test_no_transaction_file_with_outer_begin_commit_is_contradictory(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path,
        "-- asyncmig: no-transaction\nBEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;\n",
    )
    with pytest.raises(TransactionControlError, match="no-transaction") as info:
        load_sql_file(path)
    assert_where(info.value, path, 2, 1)


def test_concurrent_index_without_directive_says_what_to_add(tmp_path: Path) -> None:
    path = sql_file(
        tmp_path,
        "-- header\nCREATE TABLE t (a int);\n  CREATE INDEX CONCURRENTLY i ON t (a);\n",
    )
    with pytest.raises(MissingDirectiveError) as info:
        load_sql_file(path)
    assert_where(info.value, path, 3, 3)
    message = str(info.value)
    assert "CREATE INDEX" in message
    assert "CREATE INDEX CONCURRENTLY i ON t (a)" in message
    assert "add the line `-- asyncmig: no-transaction` at the top of the file" in message


def test_missing_directive_inside_outer_transaction(tmp_path: Path) -> None:
    path = sql_file(tmp_path, "BEGIN;\nVACUUM t;\nCOMMIT;\n")
    with pytest.raises(MissingDirectiveError) as info:
        load_sql_file(path)
    assert_where(info.value, path, 2, 1)


def test_no_transaction_file_loads_with_transactional_false(tmp_path: Path) -> None:
    sql_file(
        tmp_path,
        "-- asyncmig: no-transaction\n"
        "CREATE INDEX CONCURRENTLY i ON t (a);\n"
        "DROP INDEX CONCURRENTLY j;\n",
        "005_indexes.sql",
    )
    (migration,) = load_migrations(tmp_path / "sql")
    assert migration.transactional is False
    assert migration.forward.directives.transactional is False
    assert [s.no_transaction for s in migration.statements] == [True, True]


# --------------------------------------------------------------------------- empty files


def test_create_template_loads_cleanly_with_a_warning(tmp_path: Path) -> None:
    template = (
        "-- Migration: add things\n-- Version: 20261126153000\n-- Author: dev\n\n"
        "BEGIN;\n\n-- Write your migration SQL here\n\nCOMMIT;\n"
    )
    path = sql_file(tmp_path, template, "20261126153000_add_things.sql")
    rollback = write(tmp_path / "rollback", "20261126153000_add_things_rollback.sql", template)
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    (migration,) = migrations
    assert migration.statements == ()
    assert migration.forward.dropped_outer_transaction
    assert migrations.warnings == (
        f"{path}: no statements; applying it only records version 20261126153000",
        f"{rollback}: no statements",
    )
    assert len(migrations.notices) == 2


def test_comment_only_file_is_an_empty_migration(tmp_path: Path) -> None:
    sql_file(tmp_path, "-- nothing yet\n")
    (migration,) = load_migrations(tmp_path / "sql")
    assert migration.statements == () and not migration.forward.dropped_outer_transaction


# --------------------------------------------------------------------------- collecting errors


def test_scan_collects_every_file_error_and_returns_what_loaded(tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql_file(tmp_path, "SELECT 1;", "001_good.sql")
    sql_file(tmp_path, "SELECT 1;", "002_dup.sql")
    sql_file(tmp_path, "SELECT 1;", "2_dup_again.sql")
    sql_file(tmp_path, "SELECT $$never closed;", "003_split.sql")
    sql_file(tmp_path, "SELECT 1;\nCOMMIT;\n", "004_commit.sql")
    sql_file(tmp_path, b"SELECT \xff;", "005_encoding.sql")
    sql_file(tmp_path, "-- asyncmig: sometimes\nSELECT 1;", "006_directive.sql")
    sql_file(tmp_path, "SELECT 1;", "Bad Name.sql")
    sql_file(tmp_path, "SELECT 1;", "008_good_too.sql")
    write(tmp_path / "rollback", "001_a.sql", "SELECT 1;")
    write(tmp_path / "rollback", "1_b.sql", "SELECT 1;")
    migrations, errors = scan_migrations(sql, tmp_path / "rollback")
    assert sorted(type(e).__name__ for e in errors) == sorted(
        [
            "AmbiguousRollbackError",
            "DuplicateVersionError",
            "SplitError",
            "TransactionControlError",
            "EncodingError",
            "DirectiveError",
            "FileNameError",
        ]
    )
    assert all(str(e).startswith(f"{e.path}:") for e in errors)
    assert migrations.versions == (1, 8)
    assert migrations.get(1).rollback is None  # type: ignore[union-attr]
    assert isinstance(next(e for e in errors if isinstance(e, SplitError)), MigrationFileError)


def test_load_migrations_raises_the_first_error_with_a_count_note(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;\nROLLBACK;\n", "001_a.sql")
    sql_file(tmp_path, "VACUUM;", "002_b.sql")
    with pytest.raises(TransactionControlError) as info:
        load_migrations(tmp_path / "sql")
    assert info.value.__notes__ == ["1 more file error(s); `asyncmig validate` lists them all"]


# --------------------------------------------------------------------------- values


def test_values_are_immutable(tmp_path: Path) -> None:
    sql_file(tmp_path, "SELECT 1;")
    migrations = load_migrations(tmp_path / "sql")
    migration = migrations.migrations[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        migration.version = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        migration.forward.directives.transactional = False  # type: ignore[misc]
    assert isinstance(migration.forward.statements, tuple)
    assert isinstance(migrations.migrations, tuple)
    hash(migrations)


def test_migration_set_api(tmp_path: Path) -> None:
    for name in ["010_c.sql", "002_b.sql"]:
        sql_file(tmp_path, "SELECT 1;", name)
    migrations = load_migrations(tmp_path / "sql")
    b, c = migrations
    assert 2 in migrations and 3 not in migrations
    assert migrations.get(10) is c and migrations.get(3) is None
    assert migrations.latest is c
    assert b.filename == "002_b.sql" and b.checksum == b.forward.checksum
    # the constructor keeps the ordering invariant for sets a caller builds
    assert MigrationSet((c, b)).versions == (2, 10)
    with pytest.raises(ValueError, match="one version"):
        MigrationSet((b, b))


def test_migration_constructed_directly(tmp_path: Path) -> None:
    loaded = load_sql_file(sql_file(tmp_path, "SELECT 1;"))
    migration = Migration(version=1, name="test", forward=loaded)
    assert migration.rollback is None and migration.transactional


# --------------------------------------------------------------------------- the repository


def test_repository_sample_users_migration(tmp_path: Path) -> None:
    shutil.copy(
        REPO / "sql" / "000_create_auth_schema.sql", tmp_path / "000_create_auth_schema.sql"
    )
    shutil.copy(
        REPO / "sql" / "001_create_users_table.sql", tmp_path / "001_create_users_table.sql"
    )
    migrations = load_migrations(tmp_path)
    assert migrations.versions == (0, 1)
    auth, users = migrations

    # 000: CREATE SCHEMA, two CREATE FUNCTIONs, two GRANTs; no outer transaction.
    assert len(auth.statements) == 5
    assert not auth.forward.dropped_outer_transaction

    # 001, counted by hand: BEGIN; CREATE TABLE users; 5 + 1 CREATE INDEX on users;
    # CREATE FUNCTION (plpgsql $$ body); CREATE TRIGGER; ALTER TABLE … RLS; 2 CREATE
    # POLICY; CREATE TABLE users_audit; 2 CREATE INDEX on users_audit; COMMIT.
    # 17 statements, 15 once the outer BEGIN/COMMIT are dropped.
    forward = users.forward
    assert forward.dropped_outer_transaction
    assert len(forward.statements) == 15
    assert forward.directives == Directives()
    assert users.transactional
    assert forward.statements[0].line == 9  # CREATE TABLE users, after the BEGIN on line 6
    assert forward.statements[0].text.startswith("CREATE TABLE IF NOT EXISTS users (")
    functions = [s for s in forward.statements if "FUNCTION update_updated_at_column()" in s.text]
    (function,) = [s for s in functions if s.text.startswith("CREATE OR REPLACE FUNCTION")]
    assert "NEW.updated_at = CURRENT_TIMESTAMP;" in function.text
    assert "RETURN NEW;" in function.text
    assert function.text.rstrip().rstrip(";").endswith("$$ language 'plpgsql'")
    assert function.end_line - function.line == 6
    (notice,) = migrations.notices
    assert notice.startswith(f"{tmp_path / '001_create_users_table.sql'}:6:1: outer ")
    assert forward.checksum == checksum_text(
        (REPO / "sql" / "001_create_users_table.sql").read_text("utf-8")
    )


# --------------------------------------------------------------------------- speed


def test_loading_300_files_is_fast(tmp_path: Path) -> None:
    """A coarse guard only (the startup path of every replica); see bench/ for numbers."""
    statement = "CREATE TABLE t{i}_{j} (id int PRIMARY KEY, note text DEFAULT 'x;y');\n"
    for i in range(300):
        body = "-- Migration\n-- asyncmig: lock-timeout=5s\nBEGIN;\n"
        body += "".join(statement.format(i=i, j=j) for j in range(28)) + "COMMIT;\n"
        sql_file(tmp_path, body, f"{i:05d}_m.sql")
    started = time.perf_counter()
    migrations = load_migrations(tmp_path / "sql")
    elapsed = time.perf_counter() - started
    assert len(migrations) == 300
    assert elapsed < 5.0


def test_lazy_loading_defers_splitting_but_not_names_or_checksums(tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "001_ok.sql").write_text("SELECT 1;\n")
    (sql / "002_bad.sql").write_text("SELECT $$never closed;\n")
    lazy = load_migrations(sql, None, lazy=True)
    good, bad = lazy.migrations
    assert good.forward.checksum == checksum_text("SELECT 1;\n")
    with pytest.raises(SplitError) as info:
        _ = bad.forward.statements
    assert "dollar quote" in str(info.value) and (info.value.line, info.value.column) == (1, 8)
    assert [s.text for s in good.forward.statements] == ["SELECT 1;"]
    with pytest.raises(SplitError):
        load_migrations(sql, None)  # eager: the first file error is raised at once
    (sql / "003_Bad Name.sql").write_text("SELECT 3;\n")
    with pytest.raises(FileNameError):
        load_migrations(sql, None, lazy=True)  # names are still checked at once
