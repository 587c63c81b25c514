"""``asyncmig create``: timestamped pairs from templates, sanitised names, no overwrite."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asyncmig.cli import run
from asyncmig.errors import ConfigError
from asyncmig.scaffold import create_migration, sanitize_name

from .cli_helpers import clean_environment, json_lines


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)


def test_create_writes_the_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["create", "Add Orders-Table"]) == 0
    (forward,) = (tmp_path / "sql").iterdir()
    (rollback,) = (tmp_path / "rollback").iterdir()
    match = re.fullmatch(r"(\d{14})_add_orders_table\.sql", forward.name)
    assert match, forward.name
    version = match.group(1)
    assert rollback.name == f"{version}_add_orders_table_rollback.sql"
    text = forward.read_text()
    assert text.startswith("-- Migration: add_orders_table\n")
    assert f"-- Version: {version}\n" in text
    assert "-- Author: " in text and "-- Date: " in text
    assert "BEGIN;" not in text and "COMMIT;" not in text
    assert "asyncmig:" not in text  # no directive look-alike in a template
    assert rollback.read_text().startswith("-- Rollback for: add_orders_table\n")
    assert str(forward.relative_to(tmp_path)) in capsys.readouterr().out


def test_create_honours_directories_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--json", "--sql-dir", "db/up", "--rollback-dir", "db/down", "create", "x"]) == 0
    (line,) = json_lines(capsys.readouterr().out)
    assert line["event"] == "created"
    assert line["name"] == "x"
    assert Path(line["forward"]).parent == Path("db/up")
    assert (tmp_path / line["forward"]).is_file()
    assert (tmp_path / line["rollback"]).is_file()


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "a\\b", "..", "", "   ", "--", "ünïcode", "semi;colon", "a.b"]
)
def test_bad_names_are_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["create", "--", name]) == 2
    assert "invalid migration name" in capsys.readouterr().err
    assert not (tmp_path / "sql").exists() or not any((tmp_path / "sql").iterdir())
    assert not any(tmp_path.parent.glob("*evil*"))


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Add Users", "add_users"),
        ("add-users.sql", "add_users"),
        ("  x  y ", "x_y"),
        ("A__B", "a_b"),
        ("v2_index", "v2_index"),
    ],
)
def test_sanitize(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


def test_never_overwrites(tmp_path: Path) -> None:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    first = create_migration("a", tmp_path / "sql", tmp_path / "rollback", now=now)
    assert first.version == "20261126153000"
    first.forward.write_text("-- edited\n")
    with pytest.raises(ConfigError, match="already used"):
        create_migration("b", tmp_path / "sql", tmp_path / "rollback", now=now)
    with pytest.raises(ConfigError, match="already used"):
        create_migration("a", tmp_path / "sql", tmp_path / "rollback", now=now)
    assert first.forward.read_text() == "-- edited\n"
    assert sorted(p.name for p in (tmp_path / "sql").iterdir()) == [first.forward.name]


def test_existing_rollback_file_is_not_overwritten_and_nothing_is_left(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    (tmp_path / "rollback").mkdir()
    (tmp_path / "rollback" / "20260102030405_a_rollback.sql").write_text("keep")
    with pytest.raises(ConfigError):
        create_migration("a", tmp_path / "sql", tmp_path / "rollback", now=now)
    assert (tmp_path / "rollback" / "20260102030405_a_rollback.sql").read_text() == "keep"
    assert not list((tmp_path / "sql").glob("*.sql")) if (tmp_path / "sql").exists() else True


def test_template_loads_as_an_empty_migration(tmp_path: Path) -> None:
    from asyncmig.loader import load_migrations

    created = create_migration("empty", tmp_path / "sql", tmp_path / "rollback")
    migrations = load_migrations(tmp_path / "sql", tmp_path / "rollback")
    (migration,) = migrations.migrations
    assert migration.version == int(created.version)
    assert migration.forward.statements == ()
    assert migration.rollback is not None
