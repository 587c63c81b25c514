"""The public surface: exports, the event stream, a caller's pool, JSON of every event."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
import typing
from pathlib import Path

import asyncpg
import pytest

import asyncmig
from asyncmig import errors, events
from asyncmig.migrator import Migrator

from .migtree import fetchval, write_tree

TREE = {
    "001_a.sql": "CREATE TABLE a (id int);\nDO $$ BEGIN RAISE NOTICE 'made a'; END $$;\n",
    "002_b.sql": "CREATE TABLE b (id int);\n",
}


def test_every_export_resolves_and_nothing_public_is_missing() -> None:
    for name in asyncmig.__all__:
        assert getattr(asyncmig, name) is not None, name
    for module in (errors, events):
        for name, obj in vars(module).items():
            if name.startswith("_") or not inspect.isclass(obj):
                continue
            if obj.__module__ != module.__name__:
                continue
            if issubclass(obj, errors.AsyncmigError) or (
                issubclass(obj, events.EventBase) and obj is not events.EventBase
            ):
                assert name in asyncmig.__all__, f"{module.__name__}.{name} is not exported"
    with pytest.raises(AttributeError):
        _ = asyncmig.not_a_thing  # type: ignore[attr-defined]


def test_event_union_is_every_concrete_event_class() -> None:
    """asyncmig.Event is the union of exactly the event classes that have a JSON name of
    their own (so a renderer's assert_never covers each one the engine can emit)."""
    concrete = set()
    todo = [events.EventBase]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            # (slots=True makes a new class: the module's is the one that is emitted)
            if "name" in vars(sub) and getattr(events, sub.__name__, None) is sub:
                concrete.add(sub)
    assert set(typing.get_args(asyncmig.Event)) == concrete
    assert isinstance(events.Message(level="info", text="x"), asyncmig.Event)


def test_error_tree_and_exit_codes() -> None:
    assert issubclass(asyncmig.MigrationTimeoutError, asyncmig.MigrationError)
    assert issubclass(asyncmig.SplitError, asyncmig.MigrationFileError)
    assert issubclass(asyncmig.LockLostError, asyncmig.LockError)
    codes = {
        asyncmig.ConfigError: 2, asyncmig.MigrationError: 1, asyncmig.ValidationError: 3,
        asyncmig.MigrationFileError: 3, asyncmig.LockError: 4,
        asyncmig.DatabaseUnreachableError: 5,
    }  # fmt: skip
    for cls, code in codes.items():
        assert cls.exit_code == code
    err = asyncmig.MigrationError("boom", version=3, path=Path("sql/003_x.sql"), line=4,
                                  column=2, sqlstate="42P01")  # fmt: skip
    assert str(err) == "sql/003_x.sql:4:2: boom"
    assert json.loads(json.dumps(err.to_dict()))["sqlstate"] == "42P01"


def test_events_are_frozen_and_serialise() -> None:
    holder = asyncmig.LockHolder(backend_pid=7, host="h", pid=9)
    samples = [
        events.RunStarted(
            operation="migrate", plan=(events.PlanItem(1, "a", "001_a.sql", 2, True),)
        ),
        events.LockWaiting(holder=holder, waited_s=1.5),
        events.LockReclaimed(holder=holder, heartbeat_age_s=40.0),
        events.StatementFinished(
            version=1, index=1, total=2, status="CREATE TABLE", duration_ms=1.0
        ),
    ]
    for e in samples:
        d = json.loads(e.to_json())
        assert d["event"] == e.name and d["ts"].endswith("+00:00")
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.ts = e.ts  # type: ignore[misc]
    assert json.loads(samples[1].to_json())["holder"]["backend_pid"] == 7


@pytest.mark.anyio
async def test_stream_yields_events_in_order_and_the_result(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    m = Migrator(dsn, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback")
    names: list[str] = []
    async with m.stream("migrate") as stream:
        async for event in stream:
            names.append(event.name)
    assert stream.result.versions == (1, 2)
    assert "lock_acquired" in names and names[-1] == "run_finished"
    assert "server_notice" in names
    assert names.index("migration_started") < names.index("statement_started")


@pytest.mark.anyio
async def test_stream_raises_the_operations_error(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_bad.sql": "SELECT 1/0;\n"})
    m = Migrator(dsn, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback")
    seen: list[str] = []
    with pytest.raises(asyncmig.MigrationError) as info:
        async with m.stream("migrate") as stream:
            async for event in stream:
                seen.append(event.name)
    assert info.value.sqlstate == "22012"
    assert "migration_failed" in seen


@pytest.mark.anyio
async def test_migrator_on_a_callers_pool(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {**TREE, "003_slow.sql": "SELECT pg_sleep(0.6);\n"})
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        m = Migrator(pool=pool, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback")
        assert (await m.migrate()).versions == (1, 2, 3)
        assert (await m.status()).current_version == 3
        # both the run's connection and the heartbeat's went back to the pool
        assert pool.get_idle_size() == pool.get_size()
    finally:
        await pool.close()
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations") == 3


@pytest.mark.anyio
async def test_a_pool_of_one_is_refused(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        m = Migrator(pool=pool, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback")
        with pytest.raises(asyncmig.ConfigError, match="max_size"):
            await m.migrate()
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_unreachable_database_never_shows_the_password(tmp_path: Path) -> None:
    write_tree(tmp_path, TREE)
    dsn = "postgresql://someone:Sekret_MARKER_991@127.0.0.1:1/nowhere"
    with pytest.raises(asyncmig.DatabaseUnreachableError) as info:
        await asyncmig.migrate(dsn, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback",
                               connect_timeout=2)  # fmt: skip
    text = str(info.value) + json.dumps(info.value.to_dict())
    assert "Sekret_MARKER_991" not in text and "***" in text


@pytest.mark.anyio
async def test_two_schemas_do_not_block_each_other(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE IF NOT EXISTS shared_a (id int);\n"})
    a = Migrator(dsn, schema="app_one", sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rb")
    b = Migrator(dsn, schema="app_two", sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rb")
    assert a.key != b.key
    assert (await a.migrate()).versions == (1,)
    assert (await b.migrate()).versions == (1,)
    assert await fetchval(dsn, "SELECT count(*) FROM app_two._migrations") == 1


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("-- note\n\n  CREATE TABLE x (\n  id int);", "CREATE TABLE x ("),
        ("SELECT 1", "SELECT 1"),
        ("", ""),
        ("-- only a comment", ""),
        ("INSERT INTO t VALUES " + "(1)," * 100_000 + "(2);", None),
    ],
)
def test_statement_preview(sql: str, expected: str | None) -> None:
    got = events.preview(sql)
    if expected is None:
        assert len(got) == 80 and got.endswith("…") and got.startswith("INSERT INTO t")
    else:
        assert got == expected


@pytest.mark.anyio
async def test_a_bad_file_is_reported_at_once_even_while_waiting_for_the_database(
    tmp_path: Path,
) -> None:
    write_tree(tmp_path, {"001_a.sql": "SELECT 'unterminated;\n"})
    t0 = time.monotonic()
    with pytest.raises(asyncmig.SplitError):
        await asyncmig.migrate("postgresql://nobody@127.0.0.1:1/none", sql_dir=tmp_path / "sql",
                               rollback_dir=tmp_path / "rollback", wait_for_db=30)  # fmt: skip
    assert time.monotonic() - t0 < 5
