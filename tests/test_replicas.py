"""Replicas beside a leader: what a second runner, `wait` and `status` see while the
leader applies a no-transaction migration, after a failure, and when the plan changes
between "before the lock" and "under the lock"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig.cli import run
from asyncmig.events import Event, LockWaiting, Message, StatementStarted
from asyncmig.history import History
from asyncmig.loader import load_migrations
from asyncmig.lock import lock_key
from asyncmig.migrator import Migrator

from .cli_helpers import ASYNCMIG, clean_environment
from .migtree import REPO, fetch, fetchval, table_exists, write_tree

pytestmark = pytest.mark.anyio

CIC = {
    "001_data.sql": "CREATE TABLE big (id int, v text);\n"
    "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 2000) g;\n",
    "002_cic.sql": "-- asyncmig: no-transaction\nSELECT 1;\nSELECT pg_sleep(4);\n"
    "CREATE INDEX CONCURRENTLY big_v_idx ON big (v);\n",
}


def m(dsn: str, root: Path, **kw: object) -> Migrator:
    return Migrator(dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", **kw)


def spawn_worker(dsn: str, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker", dsn, str(root), "lock_timeout=60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_until_statement(proc: subprocess.Popen[str], index: int) -> None:
    """Read a worker's JSON events until statement ``index`` of its migration started."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"statement_started"' in line and f'"index":{index},' in line.replace(" ", ""):
            return
    raise AssertionError(f"the worker ended before statement {index}")


def json_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


async def test_replica_started_during_a_no_transaction_migration_waits_and_finds_nothing(
    dsn: str, tmp_path: Path
) -> None:
    """Run B starts while run A is inside a no-transaction migration (its row is
    `running`): B waits for the lock instead of failing, then exits 0 having applied
    nothing; A applies 002 once, the index is valid, and no output of B tells anyone to
    undo or drop anything."""
    write_tree(tmp_path, CIC)
    await m(dsn, tmp_path).migrate(steps=1)
    leader = spawn_worker(dsn, tmp_path)
    try:
        with anyio.fail_after(30):
            await anyio.to_thread.run_sync(read_until_statement, leader, 2)
        assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 2") == "running"
        argv = [str(ASYNCMIG), "--database-url", dsn, "--sql-dir", str(tmp_path / "sql")]
        argv += ["--rollback-dir", str(tmp_path / "rollback"), "--json", "migrate"]
        replica = await anyio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        )
        out, err = await anyio.to_thread.run_sync(lambda: leader.communicate(timeout=60))
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
    assert leader.returncode == 0, (out, err)
    assert json_events(out)[-1]["applied"] == [2]
    assert replica.returncode == 0, (replica.stdout, replica.stderr)
    events = json_events(replica.stdout)
    kinds = [e["event"] for e in events]
    assert "lock_waiting" in kinds and "lock_acquired" in kinds
    assert events[-1]["event"] == "run_finished" and events[-1]["applied"] == []
    said = (replica.stdout + replica.stderr).lower()
    assert "by hand" not in said and "drop" not in said and "error" not in kinds
    applies = await fetch(dsn, "SELECT version FROM _migrations_log WHERE action = 'apply'")
    assert sorted(int(r["version"]) for r in applies) == [1, 2]
    valid = await fetchval(
        dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_v_idx'::regclass"
    )
    assert valid is True


async def test_resume_required_names_what_to_do_after_the_lock(dsn: str, tmp_path: Path) -> None:
    """A dead runner's half-done no-transaction migration is judged under the lock: the
    error says how to resume and, concretely, how to start over (undo statements 1..k,
    delete the version's row from the history table), with no typo."""
    write_tree(tmp_path, {"001_nt.sql": "-- asyncmig: no-transaction\nCREATE TABLE a (id int);\n"
                          "INSERT INTO missing VALUES (1);\n"})  # fmt: skip
    with pytest.raises(asyncmig.MigrationError):
        await m(dsn, tmp_path).migrate()
    with pytest.raises(asyncmig.ResumeRequiredError) as info:
        await m(dsn, tmp_path).migrate()
    text = str(info.value)
    assert "prev." not in text
    assert "asyncmig migrate --resume" in text and "statement 2" in text
    assert "statement 1 of" in text and "public._migrations" in text and "version 1" in text


async def test_atomic_steps_checks_the_plan_made_under_the_lock(dsn: str, tmp_path: Path) -> None:
    """`migrate --atomic --steps 2` plans 002+003 (transactional) before the lock; while it
    waits, another runner applies 002, so the plan under the lock is 003+004, and 004 is
    no-transaction: the run stops with ConfigError before running anything (003 stays
    unapplied, its table absent)."""
    write_tree(tmp_path, {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "002_b.sql": "CREATE TABLE b (id int);\n",
        "003_c.sql": "CREATE TABLE c (id int);\n",
        "004_idx.sql": "-- asyncmig: no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
    })  # fmt: skip
    await m(dsn, tmp_path).migrate(steps=1)
    key = lock_key(History("public").qualified_name).key
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", key)
        waiting = anyio.Event()

        def on_event(e: Event) -> None:
            if isinstance(e, LockWaiting):
                waiting.set()

        outcome: list[BaseException] = []

        async def replica() -> None:
            try:
                await m(dsn, tmp_path, lock_timeout=30).migrate(
                    atomic=True, steps=2, on_event=on_event
                )
            except asyncmig.AsyncmigError as exc:
                outcome.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(replica)
                await waiting.wait()
                # "another runner" applies 002 while holding the lock
                mig = load_migrations(tmp_path / "sql", tmp_path / "rollback").get(2)
                assert mig is not None
                await other.execute(mig.forward.text)
                await History("public").record_completed(
                    other, version=2, filename=mig.filename, checksum=mig.forward.checksum,
                    duration_ms=1, rollback_sql=None, rollback_checksum=None, statements=1,
                    transactional=True,
                )  # fmt: skip
                await other.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await other.close()
    assert len(outcome) == 1 and isinstance(outcome[0], asyncmig.ConfigError), outcome
    assert "004_idx.sql" in str(outcome[0])
    assert not await table_exists(dsn, "c")
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE version = 3") == 0


async def test_wait_does_not_return_while_a_leader_runs_a_no_transaction_migration(
    dsn: str, tmp_path: Path
) -> None:
    """While the leader is inside a no-transaction migration (row `running`), `wait`
    times out with 002 pending and `status` counts it pending; once the leader is done,
    `wait` returns."""
    write_tree(tmp_path, CIC)
    await m(dsn, tmp_path).migrate(steps=1)
    inside = anyio.Event()
    errors: list[BaseException] = []

    def on_event(e: Event) -> None:
        if isinstance(e, StatementStarted) and e.version == 2 and e.index == 2:
            inside.set()

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:

            async def leader() -> None:
                await m(dsn, tmp_path).migrate(on_event=on_event)

            tg.start_soon(leader)
            await inside.wait()
            status = await m(dsn, tmp_path).status()
            assert [v.version for v in status.pending] == [2]
            try:
                await m(dsn, tmp_path).wait(timeout=0.3, poll_interval=0.1)
            except asyncmig.PendingTimeoutError as exc:
                errors.append(exc)
        report = await m(dsn, tmp_path).wait(timeout=5, poll_interval=0.1)
    assert len(errors) == 1 and errors[0].pending == [2]  # type: ignore[attr-defined]
    assert report.current_version == 2 and not report.pending


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transactional", "no-transaction"])
async def test_a_failed_migration_is_pending_for_wait_and_status_exit_code(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_transaction: bool
) -> None:
    """After a migration failed (row `failed`, transactional or half-done
    no-transaction), `wait` times out with exit 6 and `status --exit-code` exits 6."""
    head = "-- asyncmig: no-transaction\n" if no_transaction else ""
    write_tree(tmp_path, {
        "001_ok.sql": "CREATE TABLE ok (id int);\n",
        "002_bad.sql": head + "CREATE TABLE half (id int);\nINSERT INTO missing VALUES (1);\n",
    })  # fmt: skip
    with pytest.raises(asyncmig.MigrationError):
        await m(dsn, tmp_path).migrate()
    assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 2") == "failed"
    clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", dsn)
    assert await anyio.to_thread.run_sync(run, ["status", "--exit-code"]) == 6
    code = await anyio.to_thread.run_sync(
        run, ["wait", "--timeout", "300ms", "--interval", "100ms"]
    )
    assert code == 6
    status = await m(dsn, tmp_path).status()
    assert [(v.version, v.state) for v in status.pending] == [(2, "failed")]


async def test_dry_run_lists_an_interrupted_migration_with_a_warning(
    dsn: str, tmp_path: Path
) -> None:
    """A dry run (no lock) does not judge a half-done no-transaction migration: it lists
    the version as planned and warns that a real run decides under the lock."""
    write_tree(tmp_path, {"001_nt.sql": "-- asyncmig: no-transaction\nCREATE TABLE a (id int);\n"
                          "INSERT INTO missing VALUES (1);\n"})  # fmt: skip
    with pytest.raises(asyncmig.MigrationError):
        await m(dsn, tmp_path).migrate()
    events: list[Event] = []
    report = await m(dsn, tmp_path).migrate(dry_run=True, on_event=events.append)
    assert report.planned == (1,) and report.dry_run
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("stopped after statement 1 of 2" in w and "under the lock" in w for w in warnings)
