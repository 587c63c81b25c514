"""Live progress inside a statement (issue 9, DESIGN §8a), against a real server.

A statement that runs longer than ``Progress.sample_after`` is sampled on the
heartbeat connection: the ``pg_stat_progress_*`` views and, while it waits for a lock,
the sessions that block it. Each reading is a ``StatementProgress`` event, in the
library stream and in ``--json`` output. A statement that ends sooner costs nothing.

The long index build is made long by its expression, which sleeps 5 ms a row (600 rows,
spread over about 30 blocks: at least 3 s on any machine), so it needs neither a big
table on the disk nor the CPUs the other tests share.
"""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import asyncpg
import pytest
from rich.console import Console

from asyncmig.cli.render import JsonRenderer, PlainRenderer
from asyncmig.cli.render.live import RichRenderer
from asyncmig.events import (
    Event,
    LockRetry,
    MigrationStarted,
    PlanItem,
    RunStarted,
    StatementFinished,
    StatementProgress,
    StatementStarted,
)
from asyncmig.lock import sample_sql
from asyncmig.models import Blocker

from .cli_helpers import cli, json_lines
from .faultproxy import FaultProxy
from .migtree import migrator, write_tree

SLOW_TABLE = {
    "001_slow_table.sql": """
        CREATE UNLOGGED TABLE t (id int NOT NULL) WITH (fillfactor = 10);
        INSERT INTO t SELECT generate_series(1, 600);
        CREATE FUNCTION slow_key(i int) RETURNS int IMMUTABLE LANGUAGE plpgsql
            AS $$ BEGIN PERFORM pg_sleep(0.005); RETURN i; END $$;
    """,
    "002_slow_index.sql": """
        -- asyncmig: no-transaction
        CREATE INDEX CONCURRENTLY t_slow_key ON t (slow_key(id));
    """,
}


def _rising(percents: list[tuple[str | None, float]]) -> bool:
    """Two readings of one phase, the later with the higher percentage."""
    return any(
        phase_a == phase_b and pct_b > pct_a
        for i, (phase_a, pct_a) in enumerate(percents)
        for phase_b, pct_b in percents[i + 1 :]
    )


@pytest.mark.anyio
async def test_a_long_concurrent_index_build_streams_rising_percentages(
    dsn: str, tmp_path: Path
) -> None:
    """Migrator.stream: the 3 s+ CREATE INDEX CONCURRENTLY yields at least two
    StatementProgress events of one phase with rising percentages (units done of a
    known total), all before that statement's StatementFinished."""
    write_tree(tmp_path, SLOW_TABLE)
    events: list[Event] = []
    with anyio.fail_after(60):
        async with migrator(dsn, tmp_path).stream("migrate") as stream:
            async for event in stream:
                events.append(event)
    assert stream.result.versions == (1, 2)
    finished = next(
        i for i, e in enumerate(events) if isinstance(e, StatementFinished) and e.version == 2
    )
    end = events[finished]
    assert isinstance(end, StatementFinished) and end.duration_ms >= 3000
    progress = [e for e in events if isinstance(e, StatementProgress)]
    assert all(events.index(e) < finished for e in progress)
    assert all((e.version, e.index, e.total) == (2, 1, 1) for e in progress)
    percents = [(e.phase, e.percent) for e in progress if e.percent is not None]
    assert len(percents) >= 2 and _rising(percents), percents
    assert all(
        e.done is not None and e.units_total and e.done <= e.units_total
        for e in progress
        if e.percent is not None
    )
    assert not any(e.waiting_for_lock for e in progress)


def test_a_long_concurrent_index_build_reports_progress_in_json_lines(
    dsn: str, tmp_path: Path
) -> None:
    """``asyncmig --json migrate``: statement_progress lines for the 3 s+ index build,
    at least two of one phase with rising percentages, before its statement_finished."""
    write_tree(tmp_path, SLOW_TABLE)
    done = cli("--database-url", dsn, "--json", "migrate", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    names = [line["event"] for line in lines]
    finished = next(
        i
        for i, line in enumerate(lines)
        if line["event"] == "statement_finished" and line["version"] == 2
    )
    progress = [(i, line) for i, line in enumerate(lines) if line["event"] == "statement_progress"]
    assert progress, names
    assert all(i < finished for i, _ in progress)
    percents = [(line["phase"], line["percent"]) for _, line in progress if line["percent"]]
    assert _rising(percents), percents
    assert {"elapsed_s", "done", "units_total", "waiting_for_lock", "blockers"} <= set(
        progress[0][1]
    )


@pytest.mark.anyio
async def test_a_statement_waiting_for_a_lock_names_the_session_that_holds_it(
    dsn: str, tmp_path: Path
) -> None:
    """While ALTER TABLE waits behind a session holding ACCESS SHARE on the table in an
    open transaction, a StatementProgress with waiting_for_lock=True arrives whose
    blockers name that session's pid, application_name and state; once that session
    ends its transaction, the migration completes."""
    write_tree(tmp_path, {"001_t.sql": "CREATE TABLE t (id int);\n"})
    await migrator(dsn, tmp_path).migrate()
    write_tree(tmp_path, {"002_add_c.sql": "ALTER TABLE t ADD COLUMN c int;\n"})

    blocker = await asyncpg.connect(dsn, server_settings={"application_name": "blocker-test"})
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE t IN ACCESS SHARE MODE")
        blocker_pid = blocker.get_server_pid()
        waiting: list[StatementProgress] = []
        with anyio.fail_after(60):
            async with migrator(dsn, tmp_path).stream("migrate") as stream:
                async for event in stream:
                    if isinstance(event, StatementProgress) and event.waiting_for_lock:
                        waiting.append(event)
                        if tx is not None:
                            await tx.rollback()  # the blocker goes: the ALTER gets its lock
                            tx = None
        assert stream.result.versions == (2,)
    finally:
        await blocker.close()
    first = waiting[0]
    assert (first.version, first.index) == (2, 1)
    named = {b.pid: b for b in first.blockers}
    assert blocker_pid in named, first.blockers
    held_by = named[blocker_pid]
    assert held_by.application_name == "blocker-test"
    assert held_by.state == "idle in transaction"
    assert held_by.xact_age_s is not None and held_by.xact_age_s >= 0
    assert held_by.query is not None and held_by.query.startswith("LOCK TABLE t")


@pytest.mark.anyio
async def test_a_lock_retry_names_the_relation_and_the_blocker_sampled_while_it_waited(
    dsn: str, tmp_path: Path
) -> None:
    """With a 500 ms DDL lock timeout, the ALTER TABLE blocked by a session holding
    ACCESS SHARE on t is sampled before its timeout: its LockRetry names the relation
    (public.t) and the blocking session's pid and application_name; once that session
    ends its transaction, the retry succeeds."""
    write_tree(tmp_path, {"001_t.sql": "CREATE TABLE t (id int);\n"})
    await migrator(dsn, tmp_path).migrate()
    write_tree(tmp_path, {"002_add_c.sql": "ALTER TABLE t ADD COLUMN c int;\n"})

    blocker = await asyncpg.connect(dsn, server_settings={"application_name": "billing"})
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE t IN ACCESS SHARE MODE")
        retries: list[LockRetry] = []
        with anyio.fail_after(60):
            m = migrator(dsn, tmp_path, ddl_lock_timeout=0.5)
            async with m.stream("migrate") as stream:
                async for event in stream:
                    if isinstance(event, LockRetry):
                        retries.append(event)
                        if tx is not None:
                            await tx.rollback()
                            tx = None
        assert stream.result.versions == (2,)
    finally:
        await blocker.close()
    first = retries[0]
    assert (first.version, first.attempt, first.relation) == (2, 1, "public.t")
    assert [(b.pid, b.application_name) for b in first.blockers] == [
        (blocker.get_server_pid(), "billing")
    ]


def _heartbeat_queries(proxy: FaultProxy) -> list[str]:
    return [q for link in proxy.links if link.application_name == "asyncmig heartbeat"
            for q in link.queries]  # fmt: skip


@pytest.mark.anyio
async def test_short_statements_read_no_progress_view(dsn: str, tmp_path: Path) -> None:
    """Through a recording proxy, with a heartbeat every 0.25 s: a migration of four
    0.2 s statements sends heartbeats on the heartbeat connection but not one sample
    (no pg_stat_progress_* view, no pg_blocking_pids); a later 1.6 s statement does
    get sampled there, so the recording would have shown it."""
    write_tree(tmp_path, {"001_short.sql": "SELECT pg_sleep(0.2);\n" * 4})
    with FaultProxy.for_dsn(dsn, lifetime=120) as proxy:
        m = migrator(proxy.dsn(dsn), tmp_path, heartbeat_interval=0.25)
        with anyio.fail_after(30):
            await m.migrate()
        queries = _heartbeat_queries(proxy)
        assert len(queries) >= 2, queries  # beats went out while the statements ran
        assert not [q for q in queries if "pg_stat_progress" in q or "pg_blocking_pids" in q]

        write_tree(tmp_path, {"002_long.sql": "SELECT pg_sleep(1.6);\n"})
        with anyio.fail_after(30):
            await m.migrate()
        queries = _heartbeat_queries(proxy)
        assert [q for q in queries if "pg_stat_progress_create_index" in q]


def test_the_sample_reads_only_the_progress_views_the_server_has() -> None:
    """pg_stat_progress_copy (PostgreSQL 14) and _analyze (13) are left out of the
    sample for older servers, never tried and failed; the others are always read."""
    old, new = sample_sql((12, 4)), sample_sql((17, 0))
    for sql, has_copy, has_analyze in ((old, False, False), (new, True, True)):
        assert ("pg_stat_progress_copy" in sql) is has_copy
        assert ("pg_stat_progress_analyze" in sql) is has_analyze
        for view in ("create_index", "cluster", "vacuum"):
            assert f"pg_stat_progress_{view}" in sql


# -- rendering (synthetic events) ---------------------------------------------------------

BILLING = Blocker(
    pid=4242, user="app", application_name="billing", client_addr="10.0.0.7",
    state="idle in transaction", xact_age_s=840.0, query="UPDATE orders SET paid = true",
)  # fmt: skip
RUN = [
    RunStarted(operation="migrate", plan=(PlanItem(3, "add_c", "003_add_c.sql", 1, True),)),
    MigrationStarted(version=3, migration="add_c", filename="003_add_c.sql", statements=1,
                     transactional=True),
    StatementStarted(version=3, index=1, total=1, line=1, column=1, keyword="ALTER TABLE",
                     preview="ALTER TABLE orders ADD COLUMN c int;"),
]  # fmt: skip
RETRY = LockRetry(
    version=3, index=1, attempt=3, attempts=10, lock_timeout_s=2.0, sleep_s=1.5,
    relation="public.orders", blockers=(BILLING,),
)  # fmt: skip


def _reading(
    elapsed: float, percent: float | None = None, waiting: bool = False
) -> StatementProgress:
    done = None if percent is None else int(percent)
    return StatementProgress(
        version=3, index=1, total=1, elapsed_s=elapsed, waiting_for_lock=waiting,
        phase=None if waiting else "building index: scanning table", done=done,
        units_total=None if percent is None else 100, percent=percent,
        blockers=(BILLING,) if waiting else (),
    )  # fmt: skip


def _terminal(*events: Event) -> str:
    console = Console(width=200, force_terminal=True, record=True, file=io.StringIO())
    r = RichRenderer(console, console)
    with r.live():
        for event in events:
            r.event(event)
        assert r._progress is not None
        r._progress.refresh()
    return console.export_text()


def test_terminal_live_line_of_a_lock_retry_names_relation_attempt_and_blocker() -> None:
    """On a terminal, a LockRetry shows the issue's live line: relation, attempt of
    attempts, and the blocker's pid, application, state and transaction age."""
    text = _terminal(*RUN, RETRY)
    assert (
        "waiting for lock on public.orders (attempt 3/10) — blocked by pid 4242 app=billing "
        "idle in transaction 14m"
    ) in text


def test_terminal_shows_a_bar_and_percentage_for_statement_progress() -> None:
    """On a terminal, a StatementProgress with a percentage shows a bar, the percentage
    and the phase on the migration's live line; a lock wait shows the blocker."""
    text = _terminal(*RUN, _reading(1.0, 25.0), _reading(1.5, 43.0))
    assert "▕█████░░░░░░░▏ 43% building index: scanning table 43/100" in text
    text = _terminal(*RUN, _reading(1.0, waiting=True))
    assert "waiting for a lock — blocked by pid 4242 app=billing idle in transaction 14m" in text


def test_plain_lines_say_progress_at_most_every_ten_seconds_and_every_retry() -> None:
    """Not a terminal: the first reading is a line, later ones of the same kind only 10 s
    after the last line; starting to wait for a lock is a line at once; every LockRetry
    is a line, with the blocker described in full."""
    now = [0.0]
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO(), clock=lambda: now[0])
    for event in RUN:
        r.event(event)
    for t, event in ((1.0, _reading(1.0, 5.0)), (1.5, _reading(1.5, 6.0)),
                     (10.9, _reading(10.9, 40.0)), (11.0, _reading(11.0, 41.0)),
                     (11.5, _reading(11.5, waiting=True)), (12.0, RETRY),
                     (12.1, RETRY)):  # fmt: skip
        now[0] = t
        r.event(event)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()][1:]  # after the plan
    assert lines[0] == "3 [1/1] building index: scanning table 5.0% 5/100 (running 1.0s)"
    assert lines[1] == "3 [1/1] building index: scanning table 41.0% 41/100 (running 11.0s)"
    assert lines[2].startswith("3 [1/1] waiting for a lock — blocked by pid 4242 app=billing")
    assert (
        lines[3]
        == lines[4]
        == (
            "3 waiting for lock on public.orders (attempt 3/10) — blocked by pid 4242 "
            "app=billing user=app from 10.0.0.7 idle in transaction 14m "
            "'UPDATE orders SET paid = true'; not granted within 2.0s, trying again in 1.5s"
        )
    )
    assert len(lines) == 5


def test_json_lines_keep_every_reading() -> None:
    """--json: every StatementProgress is a line of its own, blockers included."""
    out = io.StringIO()
    r = JsonRenderer(out)
    readings = [_reading(1.0, 5.0), _reading(1.5, 6.0), _reading(2.0, waiting=True)]
    for event in readings:
        r.event(event)
    lines = json_lines(out.getvalue())
    assert [line["event"] for line in lines] == ["statement_progress"] * 3
    assert lines[2]["blockers"][0]["application_name"] == "billing"
