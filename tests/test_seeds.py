"""Seeds run through the runner: COPY data, directives, typed errors, one transaction."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import asyncmig
from asyncmig.migrator import Migrator

from .migtree import fetch, fetchval, table_exists, write_tree

pytestmark = pytest.mark.anyio


def seeds(root: Path, files: dict[str, str]) -> Path:
    base = root / "seeds"
    for name, text in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return base


def m(dsn: str, root: Path) -> Migrator:
    return Migrator(
        dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", seeds_dir=root / "seeds"
    )


TABLE = {"001_t.sql": "CREATE TABLE people (id int PRIMARY KEY, name text, note text);\n"}


async def test_a_seeds_copy_from_stdin_loads_its_inline_rows(dsn: str, tmp_path: Path) -> None:
    """A seed holding `COPY … FROM stdin` with inline data loads exactly those rows."""
    write_tree(tmp_path, TABLE)
    await m(dsn, tmp_path).migrate()
    seeds(tmp_path, {"001_people.sql": """
        COPY people (id, name) FROM stdin;
        1\tada
        2\tgrace
        \\.
        INSERT INTO people (id, name) VALUES (3, 'edsger');
    """})  # fmt: skip
    files = await m(dsn, tmp_path).seed()
    assert [Path(f).name for f in files] == ["001_people.sql"]
    rows = await fetch(dsn, "SELECT id, name FROM people ORDER BY id")
    assert [(r["id"], r["name"]) for r in rows] == [(1, "ada"), (2, "grace"), (3, "edsger")]


async def test_a_seeds_timeout_directive_is_honoured_and_not_leaked(
    dsn: str, tmp_path: Path
) -> None:
    """`-- asyncmig: statement-timeout=…` applies to its own seed file's statements (they
    see it in effect) and not to the next seed file."""
    write_tree(tmp_path, TABLE)
    await m(dsn, tmp_path).migrate()
    seeds(tmp_path, {
        "001_with.sql": """
            -- asyncmig: statement-timeout=1500ms
            INSERT INTO people VALUES (1, 'a', current_setting('statement_timeout'));
        """,
        "002_without.sql": """
            INSERT INTO people VALUES (2, 'b', current_setting('statement_timeout'));
        """,
    })  # fmt: skip
    await m(dsn, tmp_path).seed()
    rows = await fetch(dsn, "SELECT id, note FROM people ORDER BY id")
    default = await fetchval(dsn, "SELECT current_setting('statement_timeout')")
    assert [(r["id"], r["note"]) for r in rows] == [(1, "1500ms"), (2, default)]


async def test_a_seeds_statement_timeout_cancels_a_slow_statement(dsn: str, tmp_path: Path) -> None:
    """A seed's statement-timeout directive cancels its slow statement (SQLSTATE 57014)."""
    seeds(tmp_path, {"001_slow.sql": "-- asyncmig: statement-timeout=100ms\nSELECT pg_sleep(5);\n"})
    with pytest.raises(asyncmig.MigrationError) as info:
        await m(dsn, tmp_path).seed()
    assert info.value.sqlstate == "57014"


async def test_a_seed_error_names_file_line_and_column_and_leaves_nothing(
    dsn: str, tmp_path: Path
) -> None:
    """A failing seed statement raises MigrationError with the file, line and column of
    the error and the server's SQLSTATE; the earlier seed file's rows and the failing
    file's first statement are rolled back with it (one transaction)."""
    write_tree(tmp_path, TABLE)
    await m(dsn, tmp_path).migrate()
    base = seeds(tmp_path, {
        "001_ok.sql": "INSERT INTO people (id, name) VALUES (1, 'ok');\n",
        "002_bad.sql": "CREATE TABLE seeded (id int);\n\nINSERT INTO people (id, name)\n"
                       "  VALUES (2, nosuchcol);\n",
    })  # fmt: skip
    with pytest.raises(asyncmig.MigrationError) as info:
        await m(dsn, tmp_path).seed()
    err = info.value
    assert err.path == base / "002_bad.sql"
    assert (err.line, err.column, err.sqlstate) == (4, 14, "42703")
    assert "002_bad.sql:4:14" in str(err) and "seed" in str(err)
    assert await fetchval(dsn, "SELECT count(*) FROM people") == 0
    assert not await table_exists(dsn, "seeded")


async def test_a_no_transaction_seed_is_refused_before_anything_runs(
    dsn: str, tmp_path: Path
) -> None:
    """A seed file marked no-transaction cannot join the seed transaction: DirectiveError
    naming it, raised before the first seed file runs."""
    write_tree(tmp_path, TABLE)
    await m(dsn, tmp_path).migrate()
    base = seeds(tmp_path, {
        "001_ok.sql": "INSERT INTO people (id, name) VALUES (1, 'ok');\n",
        "002_idx.sql": "-- asyncmig: no-transaction\n"
                       "CREATE INDEX CONCURRENTLY p_n ON people (name);\n",
    })  # fmt: skip
    with pytest.raises(asyncmig.DirectiveError) as info:
        await m(dsn, tmp_path).seed()
    assert info.value.path == base / "002_idx.sql"
    assert await fetchval(dsn, "SELECT count(*) FROM people") == 0
