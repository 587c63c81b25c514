"""A transactional migration as one message (issue 11): live per-statement events from
the markers, exact attribution of a failure, per-statement timeouts, and the files that
must not or cannot share a message."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import anyio
import pytest

import asyncmig
from asyncmig.events import (
    Event,
    MigrationStarted,
    ServerNotice,
    StatementFinished,
    StatementStarted,
)

from .cli_helpers import ASYNCMIG
from .faultproxy import FaultProxy
from .migtree import fetch, fetchval, migrator, table_exists, write_tree

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_dsn(dsn, lifetime=120) as p:
        yield p


def _messages_with(proxy: FaultProxy, needle: str) -> list[str]:
    return [q for link in proxy.links for q in link.queries if needle in q]


async def test_three_sleeps_go_as_one_message_and_their_events_stream_live(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Through a counting proxy, the three ``pg_sleep(0.5)`` statements travel in one
    message; the CLI's ``--json`` StatementFinished events carry ~500 ms durations and
    were written about 0.5 s apart, each before the next statement ended."""
    write_tree(
        tmp_path,
        {"001_sleepy.sql": "SELECT pg_sleep(0.5);\nSELECT pg_sleep(0.5);\nSELECT pg_sleep(0.5);\n"},
    )
    out = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [str(ASYNCMIG), "--json", "--database-url", proxy.dsn(dsn), "migrate"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")},
    ))  # fmt: skip
    assert out.returncode == 0, out.stderr
    carrying = _messages_with(proxy, "pg_sleep(0.5)")
    assert len(carrying) == 1 and carrying[0].count("pg_sleep(0.5)") == 3
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    finished = [e for e in events if e["event"] == "statement_finished"]
    assert [e["index"] for e in finished] == [1, 2, 3]
    assert all(450 <= e["duration_ms"] < 1500 for e in finished), finished
    written = [datetime.fromisoformat(e["ts"]) for e in finished]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(written)]
    assert all(gap > 0.35 for gap in gaps), gaps


async def test_failure_in_statement_7_of_10_names_it_and_leaves_nothing(
    dsn: str, tmp_path: Path
) -> None:
    statements = [f"CREATE TABLE t{i} (id int);" for i in range(1, 7)]
    statements += ["INSERT INTO t1 VALUES (1 / 0);"]
    statements += [f"CREATE TABLE t{i} (id int);" for i in range(8, 11)]
    write_tree(tmp_path, {"001_ten.sql": "-- ten statements\n" + "\n".join(statements) + "\n"})
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate()
    err = info.value
    assert (err.statement_index, err.line, err.column, err.sqlstate) == (7, 8, 1, "22012")
    assert not await table_exists(dsn, "t1")
    rows = await fetch(dsn, "SELECT status, error_statement, error_sqlstate FROM _migrations")
    assert [tuple(r) for r in rows] == [("failed", 7, "22012")]


async def test_error_with_a_position_is_placed_by_it(dsn: str, tmp_path: Path) -> None:
    """An unknown column in statement 3 (the server gives a position): its line and
    the column of the bad name."""
    write_tree(
        tmp_path,
        {
            "001_pos.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"
            "SELECT id,\n  nope FROM a;\n"
        },
    )
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate()
    err = info.value
    assert (err.statement_index, err.line, err.column, err.sqlstate) == (3, 4, 3, "42703")


async def test_syntax_error_is_placed_by_position_before_anything_runs(
    dsn: str, tmp_path: Path
) -> None:
    """The server lexes the whole message first: statement 4's syntax error is found
    before statement 1 runs; it is still named, at its line and column."""
    write_tree(
        tmp_path,
        {
            "001_syntax.sql": (
                "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"
                "CREATE TABLE c (id int);\nCREATE TABLE d (id int,, x int);\n"
            )
        },
    )
    events: list[Event] = []
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate(on_event=events.append)
    err = info.value
    assert (err.statement_index, err.line, err.column, err.sqlstate) == (4, 4, 24, "42601")
    assert not [e for e in events if isinstance(e, StatementStarted)]
    assert not await table_exists(dsn, "a")


async def test_statement_timeout_directive_applies_to_each_statement_of_the_message(
    dsn: str, tmp_path: Path
) -> None:
    """With a 1 s statement timeout, three 0.6 s statements (1.8 s in all, one message)
    pass; in the next migration a 1.5 s statement 2 is the one stopped."""
    write_tree(
        tmp_path,
        {
            "001_each.sql": "-- asyncmig: statement-timeout=1s\n" + "SELECT pg_sleep(0.6);\n" * 3,
            "002_long.sql": "-- asyncmig: statement-timeout=1s\n"
            "SELECT pg_sleep(0.1);\nSELECT pg_sleep(1.5);\nCREATE TABLE never (id int);\n",
        },
    )
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert (info.value.version, info.value.statement_index, info.value.sqlstate) == (2, 2, "57014")
    rows = await fetch(dsn, "SELECT version, status FROM _migrations ORDER BY version")
    assert [(int(r[0]), r[1]) for r in rows] == [(1, "completed"), (2, "failed")]


async def test_markers_survive_client_min_messages_and_search_path_and_stay_hidden(
    dsn: str, tmp_path: Path
) -> None:
    """A file that silences notices and empties search_path still gets an event per
    statement; the user's own notice is one ServerNotice; no marker shows as one."""
    write_tree(
        tmp_path,
        {
            "001_quiet.sql": (
                "DO $$ BEGIN RAISE NOTICE 'before silence'; END $$;\n"
                "SET client_min_messages = error;\n"
                "SET search_path = nowhere;\n"
                "CREATE TABLE public.q (id int);\n"
                "DO $$ BEGIN RAISE NOTICE 'silenced'; END $$;\n"
            )
        },
    )
    events: list[Event] = []
    await migrator(dsn, tmp_path).migrate(on_event=events.append)
    assert [e.index for e in events if isinstance(e, StatementFinished)] == [1, 2, 3, 4, 5]
    assert [e.message for e in events if isinstance(e, ServerNotice)] == ["before silence"]


async def test_markers_time_statements_even_when_a_file_shadows_the_clock(
    dsn: str, tmp_path: Path
) -> None:
    """A file that defines its own ``clock_timestamp()`` and ``=`` for numerics and puts
    their schema before ``pg_catalog`` cannot bend the markers: the 0.3 s sleep after it
    is reported as taking at least 0.25 s, and so is the file in history."""
    write_tree(
        tmp_path,
        {
            "001_shadow.sql": (
                "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz\n"
                "    LANGUAGE sql AS $$ SELECT timestamptz '2000-01-01' $$;\n"
                "CREATE FUNCTION public.never(numeric, numeric) RETURNS boolean\n"
                "    LANGUAGE sql AS $$ SELECT false $$;\n"
                "CREATE OPERATOR public.= (FUNCTION = public.never,\n"
                "    LEFTARG = numeric, RIGHTARG = numeric);\n"
                "SET search_path = public, pg_catalog;\n"
                "SELECT pg_sleep(0.3);\n"
            )
        },
    )
    events: list[Event] = []
    await migrator(dsn, tmp_path).migrate(on_event=events.append)
    finished = [e for e in events if isinstance(e, StatementFinished)]
    assert [e.index for e in finished] == [1, 2, 3, 4, 5]
    assert finished[-1].duration_ms >= 250
    ms = await fetch(dsn, "SELECT execution_time_ms FROM _migrations WHERE version = 1")
    assert ms[0][0] >= 250


async def test_a_file_that_switches_role_runs_statement_by_statement(
    dsn: str, tmp_path: Path
) -> None:
    """History in a schema the switched-to role may not use: the markers could not run
    after ``SET ROLE``, so the file goes a statement at a time, and applies."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    await fetchval(dsn, f'CREATE ROLE "{role}"')
    await fetchval(dsn, f'GRANT CREATE ON SCHEMA public TO "{role}"')
    try:
        write_tree(
            tmp_path,
            {"001_role.sql": f'SET ROLE "{role}";\nCREATE TABLE public.owned (id int);\n'},
        )
        await migrator(dsn, tmp_path, schema="hist").migrate()
        owner = await fetchval(dsn, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'")
        assert owner == role
        assert await fetchval(dsn, "SELECT status FROM hist._migrations") == "completed"
    finally:
        await fetchval(dsn, "DROP TABLE IF EXISTS public.owned")
        await fetchval(dsn, f'DROP OWNED BY "{role}"')
        await fetchval(dsn, f'DROP ROLE "{role}"')


async def test_copy_inside_a_transactional_migration_travels_on_its_own(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    write_tree(
        tmp_path,
        {
            "001_copy.sql": (
                "CREATE TABLE c (id int, name text);\n"
                "COPY c (id, name) FROM stdin;\n1\tone\n2\ttwo\n\\.\n"
                "INSERT INTO c VALUES (3, 'three');\n"
            )
        },
    )
    events: list[Event] = []
    await migrator(proxy.dsn(dsn), tmp_path).migrate(on_event=events.append)
    assert [tuple(r) for r in await fetch(dsn, "SELECT * FROM c ORDER BY id")] == [
        (1, "one"), (2, "two"), (3, "three"),
    ]  # fmt: skip
    assert [e.index for e in events if isinstance(e, StatementFinished)] == [1, 2, 3]
    assert len(_messages_with(proxy, "CREATE TABLE c")) == 1


async def test_standard_conforming_strings_off_is_followed_across_messages(
    dsn: str, tmp_path: Path
) -> None:
    """The server lexes a whole message at once: the statement after the SET goes in
    the next message, so its backslash escape means what psql would make of it."""
    write_tree(
        tmp_path,
        {
            "001_scs.sql": (
                "CREATE TABLE s (v text);\n"
                "SET standard_conforming_strings = off;\n"
                "INSERT INTO s VALUES ('it\\'s');\n"
            )
        },
    )
    await migrator(dsn, tmp_path).migrate()
    assert await fetchval(dsn, "SELECT v FROM s") == "it's"


async def test_a_large_file_is_cut_into_several_messages(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    rows = "".join(f"INSERT INTO big VALUES ({i}, '{'x' * 2000}');\n" for i in range(1, 1201))
    write_tree(tmp_path, {"001_big.sql": "CREATE TABLE big (id int, pad text);\n" + rows})
    events: list[Event] = []
    await migrator(proxy.dsn(dsn), tmp_path).migrate(on_event=events.append)
    assert await fetchval(dsn, "SELECT count(*) FROM big") == 1200
    assert len(_messages_with(proxy, "INSERT INTO big")) >= 2
    assert len([e for e in events if isinstance(e, StatementFinished)]) == 1201
    assert [e.version for e in events if isinstance(e, MigrationStarted)] == [1]
