"""Renderers fed with synthetic events: JSON lines, plain lines, rich terminal output."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from rich.console import Console

from asyncmig.cli.render import JsonRenderer, PlainRenderer, describe_event, make_renderer
from asyncmig.cli.render.live import RichRenderer, status_table
from asyncmig.cli.render.text import error_lines, version_ranges
from asyncmig.errors import LockHolder, LockTimeoutError, MigrationError
from asyncmig.events import (
    Event,
    LockAcquired,
    LockReclaimed,
    LockReleased,
    LockWaiting,
    Message,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    PlanItem,
    RunFinished,
    RunStarted,
    ServerNotice,
    StatementFinished,
    StatementPlanned,
    StatementStarted,
)
from asyncmig.reports import StatusReport, ValidationIssue, ValidationReport, VersionStatus

HOLDER = LockHolder(
    backend_pid=4242,
    host="pod-a",
    pid=7,
    since="2026-11-26T10:00:00Z",
    version=2,
    statement="CREATE INDEX CONCURRENTLY …",
)

FAILURE = MigrationError(
    'relation "nope" does not exist',
    version=2,
    path=Path("sql/002_notice.sql"),
    line=3,
    column=1,
    statement_index=2,
    sqlstate="42P01",
    server_message='relation "nope" does not exist',
    applied=[1],
)

ALL_EVENTS: list[Event] = [
    RunStarted(
        operation="migrate",
        plan=(
            PlanItem(1, "users", "001_users.sql", 2, True),
            PlanItem(2, "notice", "002_notice.sql", 3, True),
        ),
    ),
    LockWaiting(holder=HOLDER, waited_s=3.0),
    LockReclaimed(holder=HOLDER, heartbeat_age_s=45.0),
    LockAcquired(waited_s=3.2, backend_pid=99),
    MigrationStarted(
        version=1, migration="users", filename="001_users.sql", statements=2, transactional=True
    ),
    StatementStarted(
        version=1,
        index=1,
        total=2,
        line=1,
        column=1,
        keyword="CREATE",
        preview="CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);",
    ),
    StatementFinished(version=1, index=1, total=2, status="CREATE TABLE", duration_ms=2.5),
    StatementStarted(
        version=1,
        index=2,
        total=2,
        line=2,
        column=1,
        keyword="INSERT",
        preview="INSERT INTO users VALUES (1, 'ann'), (2, 'bob');",
    ),
    StatementFinished(version=1, index=2, total=2, status="INSERT 0 2", duration_ms=1.0),
    MigrationFinished(version=1, migration="users", direction="up", duration_ms=5.0, statements=2),
    MigrationStarted(
        version=2, migration="notice", filename="002_notice.sql", statements=3, transactional=True
    ),
    StatementStarted(
        version=2,
        index=1,
        total=3,
        line=1,
        column=1,
        keyword="DO",
        preview="DO $$ BEGIN RAISE NOTICE 'hello'; END $$;",
    ),
    ServerNotice(version=2, severity="NOTICE", message="hello"),
    StatementFinished(version=2, index=1, total=3, status="DO", duration_ms=0.4),
    StatementStarted(
        version=2,
        index=2,
        total=3,
        line=3,
        column=1,
        keyword="SELECT",
        preview="SELECT * FROM nope;",
    ),
    MigrationFailed(
        version=2, migration="notice", direction="up", duration_ms=7.0, error=FAILURE.to_dict()
    ),
    LockReleased(held_s=0.5),
    Message(level="warning", text="002_notice.sql has no rollback file"),
    RunFinished(operation="migrate", applied=(1,), duration_ms=20.0, ok=False),
]
DRY_RUN: list[Event] = [
    RunStarted(
        operation="migrate", plan=(PlanItem(1, "users", "001_users.sql", 2, True),), dry_run=True
    ),
    StatementPlanned(
        version=1,
        index=1,
        total=2,
        line=1,
        column=1,
        keyword="CREATE",
        preview="CREATE TABLE users (…);",
    ),
    StatementPlanned(
        version=1,
        index=2,
        total=2,
        line=2,
        column=1,
        keyword="INSERT",
        preview="INSERT INTO users VALUES (…);",
    ),
    RunFinished(operation="migrate", duration_ms=1.0, dry_run=True),
]

STATUS = StatusReport(
    versions=(
        VersionStatus(
            1,
            "users",
            "001_users.sql",
            "applied",
            applied_at=datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC),
            applied_by="deploy@pod-a",
            duration_ms=12,
            has_rollback=True,
        ),
        VersionStatus(
            2,
            "notice",
            "002_notice.sql",
            "applied",
            applied_at=datetime(2026, 11, 26, 10, 0, 6, tzinfo=UTC),
            applied_by="deploy@pod-a",
            duration_ms=1500,
            modified=True,
            has_rollback=True,
        ),
        VersionStatus(
            3,
            "gone",
            None,
            "applied",
            missing_file=True,
            applied_at=datetime(2026, 11, 26, 10, 0, 7, tzinfo=UTC),
        ),
        VersionStatus(
            4,
            "half",
            "004_half.sql",
            "failed",
            statements_done=1,
            statements_total=3,
            error_sqlstate="23505",
            has_rollback=True,
        ),
        VersionStatus(5, "later", "005_later.sql", "pending"),
    ),
    schema="public",
    history_exists=True,
)


def test_every_event_has_a_plain_description() -> None:
    for event in [*ALL_EVENTS, *DRY_RUN]:
        assert describe_event(event), event


def test_json_lines_one_object_per_event() -> None:
    out = io.StringIO()
    r = JsonRenderer(out)
    for event in [*ALL_EVENTS, *DRY_RUN]:
        r.event(event)
    r.error(FAILURE, 1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == len(ALL_EVENTS) + len(DRY_RUN) + 1
    names = {line["event"] for line in lines}
    assert names >= {
        "run_started",
        "lock_waiting",
        "lock_reclaimed",
        "lock_acquired",
        "migration_started",
        "statement_started",
        "statement_finished",
        "server_notice",
        "migration_finished",
        "migration_failed",
        "lock_released",
        "message",
        "run_finished",
        "statement_planned",
        "error",
    }
    for line in lines:
        datetime.fromisoformat(line["ts"])
    failed = next(line for line in lines if line["event"] == "migration_failed")
    assert failed["error"]["sqlstate"] == "42P01"
    error = lines[-1]
    assert error["exit_code"] == 1
    assert (error["type"], error["sqlstate"], error["path"], error["line"]) == (
        "MigrationError",
        "42P01",
        "sql/002_notice.sql",
        3,
    )
    assert error["applied"] == [1]


def test_json_results_and_interrupt() -> None:
    out = io.StringIO()
    r = JsonRenderer(out)
    r.status(STATUS)
    r.validation(ValidationReport((ValidationIssue("warning", "missing_rollback", "x"),)))
    r.lock_holder(HOLDER, forced=False)
    r.interrupted("SIGTERM", 143)
    status, validation, lock, interrupted = (json.loads(x) for x in out.getvalue().splitlines())
    assert status["event"] == "status"
    assert status["pending"] == [4, 5]  # a failed version is pending too
    assert status["versions"][1]["modified"] is True
    assert validation["ok"] is True
    assert lock["holder"]["backend_pid"] == 4242
    assert interrupted == {**interrupted, "event": "interrupted", "exit_code": 143}


def test_plain_lines_are_timestamped_and_errors_go_to_stderr() -> None:
    """Default plain output: timestamped lines; a migration's end (or failure) but not
    its statements; lock waits, notices and warnings; the summary; errors on stderr."""
    out, err = io.StringIO(), io.StringIO()
    r = PlainRenderer(out, err)
    for event in ALL_EVENTS:
        r.event(event)
    r.error(FAILURE, 1)
    lines = out.getvalue().splitlines()
    for line in lines:
        stamp = line.split(" ", 1)[0]
        assert stamp.endswith("Z")
        datetime.fromisoformat(stamp[:-1])
    texts = [line.split(" ", 1)[1] for line in lines]
    assert texts == [
        "migrate: applying 2 migrations: 001_users.sql, 002_notice.sql",
        "waiting for the migration lock held by host pod-a pid 7, backend pid 4242, since "
        "2026-11-26T10:00:00Z, running version 2 (3s so far)",
        texts[2],  # the reclaim
        "1 users: applied in 5ms",
        "2 NOTICE: hello",
        '2 notice: FAILED after 7ms: relation "nope" does not exist [SQLSTATE 42P01] at '
        "sql/002_notice.sql:3",
        "warning: 002_notice.sql has no rollback file",
        "migrate: failed after 20ms; applied 1 migration, 1",
    ]
    assert texts[2].startswith("reclaimed the lock from a stale holder")
    assert err.getvalue().splitlines()[:2] == [
        'error: sql/002_notice.sql:3:1: relation "nope" does not exist',
        "  SQLSTATE 42P01",
    ]


def test_plain_verbose_prints_every_event() -> None:
    """``-v``: one line for every event, statements and lock acquire/release included."""
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO(), verbose=True)
    for event in ALL_EVENTS:
        r.event(event)
    text = out.getvalue()
    assert len(text.splitlines()) == len(ALL_EVENTS)
    assert "1 [2/2] line 2: INSERT INTO users VALUES (1, 'ann'), (2, 'bob');" in text
    assert "1 [2/2] INSERT 0 2 (1ms)" in text
    assert "1 users: applying (2 statements, one transaction)" in text
    assert "lock acquired after 3.2s (backend pid 99)" in text


def _run_of(n: int, statements: int = 3, *, op: str = "migrate") -> list[Event]:
    """A successful run of ``n`` migrations (versions 1..n) of fast statements."""
    down = op == "rollback"
    direction: Literal["up", "down"] = "down" if down else "up"
    versions = list(range(n, 0, -1)) if down else list(range(1, n + 1))
    plan = tuple(
        PlanItem(v, f"m{v}", f"{v:04d}_m{v}.sql", statements, True, direction) for v in versions
    )
    events: list[Event] = [RunStarted(operation="rollback" if down else "migrate", plan=plan)]
    for v in versions:
        name, file = f"m{v}", f"{v:04d}_m{v}.sql"
        events.append(
            MigrationStarted(version=v, migration=name, filename=file, statements=statements,
                             transactional=True, direction=direction)
        )  # fmt: skip
        for i in range(1, statements + 1):
            at = {"version": v, "index": i, "total": statements}
            text = f"CREATE TABLE t{i} (id int);"
            events.append(StatementStarted(**at, line=i, column=1, keyword="CREATE", preview=text))
            events.append(StatementFinished(**at, status="CREATE TABLE", duration_ms=0.5))
        events.append(
            MigrationFinished(version=v, migration=name, direction=direction, duration_ms=2.0,
                              statements=statements)
        )  # fmt: skip
    done = tuple(versions)
    events.append(
        RunFinished(operation="rollback", rolled_back=done, duration_ms=900.0)
        if down
        else RunFinished(operation="migrate", applied=done, duration_ms=900.0)
    )
    return events


def _texts(renderer_out: io.StringIO) -> list[str]:
    return [line.split(" ", 1)[1] for line in renderer_out.getvalue().splitlines()]


def test_plain_300_migrations_one_line_each_and_ranges_in_the_summary() -> None:
    """300 migrations of 3 statements: the plan, 300 lines and the summary (302 lines, not
    one per event), with the plan and summary naming the range 1–300."""
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO())
    for event in _run_of(300):
        r.event(event)
    texts = _texts(out)
    assert len(texts) == 302
    assert texts[0] == "migrate: applying 300 migrations, 1–300"
    assert texts[1] == "1 m1: applied in 2ms"
    assert texts[-2] == "300 m300: applied in 2ms"
    assert texts[-1] == "migrate: applied 300 migrations, 1–300 in 900ms"


def test_plain_rollback_summary_names_the_descending_range() -> None:
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO())
    for event in _run_of(300, op="rollback"):
        r.event(event)
    texts = _texts(out)
    assert texts[0] == "rollback: rolling back 300 migrations, 300–1"
    assert texts[-1] == "rollback: rolled back 300 migrations, 300–1 in 900ms"


def test_plain_nothing_to_do_is_one_line() -> None:
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO())
    r.event(RunStarted(operation="migrate", plan=()))
    r.event(RunFinished(operation="migrate", duration_ms=50.0))
    assert _texts(out) == ["migrate: nothing to do"]


def test_version_ranges_follow_the_plan_order_and_are_capped() -> None:
    assert version_ranges([1, 2, 3, 5, 7, 8, 9]) == "1–3, 5, 7–9"
    assert version_ranges([3, 2, 1]) == "3–1"
    stamps = [20261126153000, 20261127090000, 20261201120000]
    assert version_ranges(stamps, stamps) == "20261126153000–20261201120000"
    assert version_ranges(stamps[::2], stamps) == "20261126153000, 20261201120000"
    assert version_ranges(list(range(1, 40, 2))) == "1, 3, 5, 7, 9, 11, 13, 15, and 12 more"
    assert version_ranges([]) == ""


def _slow_events() -> tuple[StatementStarted, StatementFinished]:
    started = StatementStarted(version=7, index=2, total=3, line=4, column=1, keyword="CREATE",
                               preview="CREATE INDEX orders_idx ON orders (id);")  # fmt: skip
    finished = StatementFinished(version=7, index=2, total=3, status="CREATE INDEX",
                                 duration_ms=1500.0)  # fmt: skip
    return started, finished


def test_plain_statement_of_a_second_or_more_gets_its_own_line() -> None:
    """A statement that took >= 1 s is printed when it ends, with its duration and where
    it is; a fast one is not."""
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO())
    started, finished = _slow_events()
    r.event(started)
    r.event(finished)
    fast = StatementFinished(version=7, index=3, total=3, status="SELECT 1", duration_ms=999.0)
    r.event(fast)
    assert _texts(out) == [
        "7 [2/3] CREATE INDEX in 1.5s, line 4: CREATE INDEX orders_idx ON orders (id);"
    ]


def test_plain_says_still_running_at_one_second_then_every_minute() -> None:
    """The watcher's check (``tick``) on a fake clock: nothing before 1 s; a line at 1 s;
    none again until a minute later; none once the statement has finished."""
    now = [100.0]
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO(), clock=lambda: now[0])
    started, finished = _slow_events()
    r.event(started)
    for t, lines in ((100.5, 0), (101.0, 1), (130.0, 1), (161.0, 2)):
        now[0] = t
        r.tick()
        assert len(_texts(out)) == lines, t
    assert _texts(out)[0] == (
        "7 [2/3] still running after 1.0s, line 4: CREATE INDEX orders_idx ON orders (id);"
    )
    assert _texts(out)[1].startswith("7 [2/3] still running after 1min 1s")
    r.event(finished)
    now[0] = 300.0
    r.tick()
    assert len(_texts(out)) == 3  # the finished line only
    assert _texts(out)[2].startswith("7 [2/3] CREATE INDEX in 1.5s")


def test_plain_watcher_thread_reports_a_statement_still_running() -> None:
    """Inside ``live()`` the watcher thread prints the line by itself while the statement
    runs (no event arrives), and stops with the run."""
    out = io.StringIO()
    r = PlainRenderer(out, io.StringIO(), slow_after=0.05)
    started, _ = _slow_events()
    with r.live():
        r.event(started)
        deadline = time.monotonic() + 10
        while "still running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "7 [2/3] still running after" in out.getvalue()
    assert not any(t.name == "asyncmig-slow-statements" for t in threading.enumerate())


def test_plain_status_and_validation() -> None:
    out = io.StringIO()
    PlainRenderer(out, io.StringIO()).status(STATUS)
    text = out.getvalue()
    header, *rows, footer = text.splitlines()
    assert header.split() == [
        "VERSION",
        "NAME",
        "STATE",
        "APPLIED",
        "AT",
        "BY",
        "DURATION",
        "NOTES",
    ]
    assert "modified" in rows[1] and "missing file" in rows[2]
    assert "failed (1/3)" in rows[3] and "SQLSTATE 23505" in rows[3]
    assert footer.startswith("schema public · current version 3 · 2 pending")
    out = io.StringIO()
    PlainRenderer(out, io.StringIO()).validation(
        ValidationReport(
            (ValidationIssue("error", "split_error", "unterminated", 1, "sql/001_a.sql", 4, 2),),
            online=True,
        )
    )
    assert out.getvalue().splitlines() == [
        "error: split_error: sql/001_a.sql:4:2: unterminated",
        "validation failed: 1 error, 0 warnings; files and history",
    ]


def rich_console() -> Console:
    return Console(
        width=100, force_terminal=True, record=True, color_system="truecolor", file=io.StringIO()
    )


def test_rich_progress_and_summary() -> None:
    console = rich_console()
    r = RichRenderer(console, console, verbose=True)
    with r.live():
        for event in ALL_EVENTS:
            r.event(event)
    text = console.export_text()
    assert "↑ 1 users" in text and "↑ 2 notice" in text
    assert "2/2" in text and "1/3" in text
    assert "✓ done" in text
    assert '✗ relation "nope" does not exist [SQLSTATE 42P01]' in text
    assert "waiting for the migration lock held by host pod-a" in text
    assert "NOTICE: hello" in text
    assert "1 [2/2] INSERT 0 2" in text  # verbose: each statement
    for header in ("Version", "Migration", "Statements", "Duration", "Result"):
        assert header in text
    assert "failed" in text and "ok" in text
    assert "migrate: failed after 20ms; applied 1 migration, 1" in text


def test_rich_statement_column_shows_running_statement() -> None:
    console = rich_console()
    r = RichRenderer(console, console)
    with r.live():
        for event in ALL_EVENTS[:8]:  # statement 1/2 of 001 is running
            r.event(event)
        assert r._progress is not None
        r._progress.refresh()
    text = console.export_text()
    assert "line 2: INSERT INTO users VALUES" in text
    assert "1/2" in text


def test_rich_dry_run_lists_statements() -> None:
    console = rich_console()
    r = RichRenderer(console, console)
    with r.live():
        for event in DRY_RUN:
            r.event(event)
    text = console.export_text()
    assert "migrate: would apply 1 migration: 001_users.sql" in text
    assert "[1/2] line 1: CREATE TABLE users (…);" in text
    assert "dry run finished" in text


def test_rich_status_table() -> None:
    console = rich_console()
    RichRenderer(console, console).status(STATUS)
    text = console.export_text()
    for header in ("Version", "Name", "State", "Applied at (UTC)", "By", "Duration", "Notes"):
        assert header in text
    lines = text.splitlines()
    row2 = next(line for line in lines if " notice " in line)
    assert "applied" in row2 and "2026-11-26 10:00:06" in row2 and "1.5s" in row2
    assert "modified" in row2
    assert "missing file" in next(line for line in lines if " gone " in line)
    assert "failed (1/3)" in text
    assert "current version 3 · 2 pending · 1 modified · 1 missing file · 1 failed" in text
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(status_table(StatusReport()))  # empty: headers only, no crash


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_renderer_picks_by_terminal_and_honours_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert isinstance(make_renderer(json_lines=True, stdout=_Tty()), JsonRenderer)
    assert isinstance(make_renderer(json_lines=False, stdout=io.StringIO()), PlainRenderer)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _Tty()
    monkeypatch.delenv("NO_COLOR", raising=False)
    colored = make_renderer(json_lines=False, stdout=out, stderr=_Tty())
    assert isinstance(colored, RichRenderer)
    colored.status(STATUS)
    assert "\x1b[32m" in out.getvalue() or "\x1b[38;" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    plain = make_renderer(json_lines=False, stdout=out, stderr=_Tty())
    plain.status(STATUS)
    assert "applied" in out.getvalue()
    assert "\x1b[32m" not in out.getvalue() and "\x1b[38;" not in out.getvalue()
    assert "\x1b[31m" not in out.getvalue()
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_renderer(json_lines=False, stdout=_Tty()), PlainRenderer)


def test_scrubber_applies_to_every_renderer() -> None:
    secret = "Pw_MARKER_83731"

    def scrub(text: str) -> str:
        return text.replace(secret, "***")

    leaky = Message(level="error", text=f"postgresql://u:{secret}@h/db")
    for make in (
        lambda out: JsonRenderer(out, scrub=scrub),
        lambda out: PlainRenderer(out, out, scrub=scrub),
    ):
        out = io.StringIO()
        r = make(out)
        r.event(leaky)
        r.error(LockTimeoutError(f"x {secret}", holder=HOLDER, waited_s=1), 4)
        assert secret not in out.getvalue()
        assert "***" in out.getvalue()


def test_error_lines_verbose_adds_causes_and_tracebacks() -> None:
    try:
        try:
            raise OSError("connection refused")
        except OSError as exc:
            raise LockTimeoutError("no lock", holder=HOLDER, waited_s=1.0) from exc
    except LockTimeoutError as err:
        terse = error_lines(err, verbose=False)
        verbose = error_lines(err, verbose=True)
    assert terse[0] == "error: no lock"
    assert "  held by host pod-a pid 7, backend pid 4242" in terse[1]
    assert "  running: CREATE INDEX CONCURRENTLY …" in terse
    assert not any("caused by" in line for line in terse)
    assert "  caused by OSError: connection refused" in verbose
    try:
        raise KeyError("bug")
    except KeyError as bug:
        internal = error_lines(bug, verbose=False)
        internal_v = error_lines(bug, verbose=True)
    assert internal[0] == "internal error: KeyError: 'bug'"
    assert "-v" in internal[1]
    assert any("Traceback" in line for line in internal_v)
