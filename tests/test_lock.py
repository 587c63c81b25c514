"""The lock under concurrency and failure: racing runners, stale holders, lost locks, kill -9."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig.events import (
    Event,
    LockAcquired,
    LockWaiting,
    MigrationFinished,
    StatementFinished,
    StatementStarted,
)

from .migtree import REPO, applied_once, fetch, fetchval, m, table_exists, wait_until, write_tree

pytestmark = pytest.mark.anyio


def tree(n: int, sleep: float = 0.0) -> dict[str, str]:
    out = {}
    for i in range(1, n + 1):
        nap = f"SELECT pg_sleep({sleep});\n" if sleep else ""
        out[f"{i:03d}_t{i}.sql"] = (
            f"CREATE TABLE t{i} (id int PRIMARY KEY, note text);\n{nap}"
            f"INSERT INTO t{i} SELECT g, 'row ' || g FROM generate_series(1, 50) g;\n"
        )
    return out


async def assert_each_applied_once(dsn: str, n: int) -> None:
    assert await applied_once(dsn) == list(range(1, n + 1))
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'") == n


def spawn(dsn: str, root: Path, *opts: str) -> subprocess.Popen[str]:
    """A worker process (tests/worker.py); with ``--gate`` among ``opts`` it waits on stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker", dsn, str(root), *opts],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.PIPE if "--gate" in opts else subprocess.DEVNULL,
    )  # fmt: skip


def wait_for_second_statement(proc: subprocess.Popen[str]) -> None:
    """Read a worker's JSON events until its migration's second statement has started."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"statement_started"' in line and '"index":2' in line:
            return
    raise AssertionError("the worker ended before its second statement")


def last_json(out: str) -> dict[str, object]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


async def test_twenty_migrators_in_one_process(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, tree(6, sleep=0.05))
    reports: list[asyncmig.MigrateReport] = []

    async def one() -> None:
        reports.append(await m(dsn, tmp_path, lock_timeout=60).migrate())

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
    assert len(reports) == 20
    applied = [v for r in reports for v in r.versions]
    assert sorted(applied) == [1, 2, 3, 4, 5, 6]
    await assert_each_applied_once(dsn, 6)


async def test_eight_processes_started_together(dsn: str, tmp_path: Path) -> None:
    """Eight worker processes released at one moment contend for the lock: exactly one
    applies everything, every other one first waits on that one's backend, and the audit
    log shows each version applied once."""
    write_tree(tmp_path, tree(5, sleep=0.3))
    procs = [spawn(dsn, tmp_path, "--gate", "lock_timeout=60") for _ in range(8)]
    try:
        for p in procs:  # every process has imported asyncmig and waits at the gate
            assert p.stdout is not None and '"ready"' in p.stdout.readline()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out, err)
    runs = [[json.loads(ln) for ln in out.splitlines() if ln.startswith("{")] for out, _ in outs]
    appliers = [r for r in runs if r[-1]["applied"]]
    assert len(appliers) == 1, [r[-1] for r in runs]
    assert appliers[0][-1]["applied"] == [1, 2, 3, 4, 5]
    (holder_backend,) = [e["backend_pid"] for e in appliers[0] if e["event"] == "lock_acquired"]
    for run in runs:
        if run is appliers[0]:
            continue
        waits = [e["holder"] or {} for e in run if e["event"] == "lock_waiting"]
        seen = [e["event"] for e in run]
        assert holder_backend in [h.get("backend_pid") for h in waits], f"no wait: {seen}"
        assert run[-1]["applied"] == []
    await assert_each_applied_once(dsn, 5)


async def test_concurrent_index_holder_with_four_waiters(dsn: str, tmp_path: Path) -> None:
    """Five runners at once, the leader building an index CONCURRENTLY: the four others
    poll for the lock from before the CREATE INDEX starts until after it finished (their
    polling holds no transaction the build would wait for), then find nothing to do; the
    index is valid and each version is applied once."""
    write_tree(tmp_path, {
        "001_data.sql": "CREATE TABLE big (id int, v text);\n"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g;\n",
        "002_cic.sql": "-- asyncmig: no-transaction\nSELECT pg_sleep(1);\n"
                       "CREATE INDEX CONCURRENTLY big_v_idx ON big (v);\n",
        "003_after.sql": "CREATE TABLE after_cic (id int);\n",
    })  # fmt: skip
    await m(dsn, tmp_path).migrate(steps=1)
    seen: list[list[tuple[float, Event]]] = [[] for _ in range(5)]
    reports: list[asyncmig.MigrateReport | None] = [None] * 5

    async def one(i: int) -> None:
        def on_event(e: Event) -> None:
            seen[i].append((time.monotonic(), e))

        reports[i] = await m(dsn, tmp_path, lock_timeout=60).migrate(on_event=on_event)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, i)
    done = [r for r in reports if r is not None]
    assert len(done) == 5 and sorted(v for r in done for v in r.versions) == [2, 3]
    (leader,) = [i for i, r in enumerate(done) if r.versions]
    assert done[leader].versions == (2, 3)
    cic = [
        (t, type(e))
        for t, e in seen[leader]
        if isinstance(e, StatementStarted | StatementFinished) and (e.version, e.index) == (2, 2)
    ]
    cic_started = next(t for t, kind in cic if kind is StatementStarted)
    cic_finished = next(t for t, kind in cic if kind is StatementFinished)
    leader_backend = next(e.backend_pid for _, e in seen[leader] if isinstance(e, LockAcquired))
    for i, events in enumerate(seen):
        if i == leader:
            continue
        waits = [(t, e) for t, e in events if isinstance(e, LockWaiting)]
        acquired = [(t, e) for t, e in events if isinstance(e, LockAcquired)]
        assert waits and acquired, f"runner {i} did not wait: {[e.name for _, e in events]}"
        assert waits[0][1].holder is not None
        assert waits[0][1].holder.backend_pid == leader_backend
        assert waits[0][0] < cic_started  # waiting before the build began ...
        assert acquired[0][0] > cic_finished  # ... and got the lock only after it ended
        assert acquired[0][1].waited_s > 0 and done[i].lock_waited_s > 0
        assert done[i].took_lock and done[i].versions == ()
        assert not any(isinstance(e, MigrationFinished) for _, e in events)
    valid = await fetchval(
        dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_v_idx'::regclass"
    )
    assert valid is True
    assert await applied_once(dsn) == [1, 2, 3]


async def test_lock_timeout_names_the_holder(dsn: str, tmp_path: Path) -> None:
    """A run that times out waiting says who holds the lock: host, pid and backend pid in
    the message, and the holder's running version in its LockWaiting events."""
    write_tree(tmp_path, {"001_slow.sql": "SELECT pg_sleep(4);\n"})
    started = anyio.Event()

    def on_event(e: Event) -> None:
        if isinstance(e, StatementStarted):
            started.set()

    waits: list[LockWaiting] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: m(dsn, tmp_path).migrate(on_event=on_event))
        await started.wait()
        await wait_until(  # the heartbeat has published the running version
            lambda: fetchval(dsn, "SELECT version = 1 FROM _migration_locks WHERE id = 1"),
            what="the holder's version in _migration_locks",
        )
        t0 = time.monotonic()
        with pytest.raises(asyncmig.LockTimeoutError) as info:
            await m(dsn, tmp_path, lock_timeout=1.0).migrate(
                on_event=lambda e: waits.append(e) if isinstance(e, LockWaiting) else None
            )
        assert time.monotonic() - t0 < 3
    err = info.value
    assert err.holder is not None and err.holder.pid == os.getpid()
    assert err.holder.host == socket.gethostname() and err.holder.backend_pid
    text = str(err)
    assert f"host {socket.gethostname()} " in text
    assert f"pid {os.getpid()}" in text and f"backend pid {err.holder.backend_pid}" in text
    assert waits and waits[0].holder is not None and waits[0].holder.version == 1


async def test_lock_lost_stops_the_holder(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_long.sql": "CREATE TABLE partial (id int);\nSELECT pg_sleep(30);\n"})
    started = anyio.Event()

    def on_event(e: Event) -> None:
        if isinstance(e, StatementStarted) and e.index == 2:
            started.set()

    async with anyio.create_task_group() as tg:

        async def killer() -> None:
            await started.wait()
            await fetch(  # only this test database's lock holder, never the whole server's
                dsn, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            )  # fmt: skip

        tg.start_soon(killer)
        with anyio.fail_after(20), pytest.raises(asyncmig.LockLostError):
            await m(dsn, tmp_path, heartbeat_interval=0.5).migrate(on_event=on_event)
    assert not await table_exists(dsn, "partial")


async def test_stale_holder_frozen_with_sigstop_is_reclaimed(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        # statement 2 outlasts the reclaim: the server runs the frozen client's message
        # on its own, so it must still be inside it when the waiter ends that session
        "001_a.sql": "CREATE TABLE a (id int);\nSELECT pg_sleep(30);\nINSERT INTO a VALUES (1);\n",
        "002_b.sql": "CREATE TABLE b (id int);\n",
    })  # fmt: skip
    holder = spawn(dsn, tmp_path, "heartbeat_interval=0.5")
    try:
        wait_for_second_statement(holder)  # then freeze it in the middle of migration 1
        os.kill(holder.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        events: list[Event] = []
        with anyio.fail_after(60):
            report = await m(dsn, tmp_path, stale_after=3, lock_timeout=60).migrate(
                on_event=events.append
            )
        waited = time.monotonic() - t0
        assert report.versions == (1, 2)
        assert waited >= 2.5  # not before the heartbeat went stale
        assert any(e.name == "lock_reclaimed" for e in events)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    await assert_each_applied_once(dsn, 2)
    assert await fetchval(dsn, "SELECT count(*) FROM a") == 1  # the frozen one's rolled back
    reclaims = await fetch(dsn, "SELECT detail FROM _migrations_log WHERE action = 'reclaim'")
    assert len(reclaims) == 1
    assert json.loads(reclaims[0]["detail"])["holder"]["pid"] == holder.pid


@pytest.mark.slow
async def test_slow_holder_is_not_reclaimed(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(40);\n"})
    holder = spawn(dsn, tmp_path, "heartbeat_interval=2")
    try:
        wait_for_second_statement(holder)
        with anyio.fail_after(90):
            report = await m(dsn, tmp_path, stale_after=10, lock_timeout=80).migrate()
        assert report.nothing_to_do or report.versions == ()
        _out, err = holder.communicate(timeout=30)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=10)
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations_log WHERE action = 'reclaim'") == 0
    await assert_each_applied_once(dsn, 1)


async def test_kill_9_at_random_moments_never_leaves_half_a_migration(
    dsn: str, tmp_path: Path
) -> None:
    n = 60
    write_tree(tmp_path, tree(n, sleep=0.1))
    rng = random.Random(20261126)
    mid_run = 0
    for _ in range(20):
        proc = spawn(dsn, tmp_path, "lock_timeout=30")
        assert proc.stdout is not None
        head = ""
        for line in proc.stdout:  # the kill moment is measured from the first statement
            head += line
            if '"statement_started"' in line:
                break
        await anyio.sleep(rng.uniform(0.0, 0.5))  # the random moment itself, not a wait
        proc.kill()
        out, _err = proc.communicate(timeout=10)
        out = head + out
        if '"migration_started"' in out and '"run_finished"' not in out:
            mid_run += 1
        await _check_all_or_nothing(dsn, n)
    assert mid_run >= 5, f"only {mid_run} of 20 kills landed in the middle of a run"
    final = spawn(dsn, tmp_path, "lock_timeout=30")
    out, err = final.communicate(timeout=60)
    assert final.returncode == 0, (out, err)
    await _check_all_or_nothing(dsn, n)
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'") == n


async def _check_all_or_nothing(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        has_history = await conn.fetchval("SELECT to_regclass('_migrations') IS NOT NULL")
        done = set()
        if has_history:
            done = {
                int(r["version"])
                for r in await conn.fetch(
                    "SELECT version FROM _migrations WHERE status = 'completed'"
                )
            }
        for i in range(1, n + 1):
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"t{i}")
            assert exists == (i in done), f"migration {i}: table {exists}, recorded {i in done}"
            if exists:
                assert await conn.fetchval(f"SELECT count(*) FROM t{i}") == 50
    finally:
        await conn.close()


async def test_reclaim_without_the_right_to_terminate_names_the_statement(
    dsn: str, tmp_path: Path
) -> None:
    """A stale holder that this role may not end: the error says what an admin can run."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\nSELECT pg_sleep(0.2);\n"})
    role, password = f"weak_{uuid.uuid4().hex[:10]}", secrets.token_hex(16)
    await admin(dsn, "CREATE ROLE %I LOGIN PASSWORD %L", role, password)
    try:
        holder = spawn(dsn, tmp_path, "heartbeat_interval=0.5")
        try:
            wait_for_second_statement(holder)
            os.kill(holder.pid, signal.SIGSTOP)
            await admin(dsn, "GRANT USAGE ON SCHEMA public TO %I", role)
            await admin(dsn, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I", role)
            parts = urlsplit(dsn)
            host = parts.netloc.rpartition("@")[2]  # the server may ask for a password
            weak = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
            with anyio.fail_after(60), pytest.raises(asyncmig.LockTimeoutError) as info:
                await m(weak, tmp_path, stale_after=2, lock_timeout=30).migrate()
            backend = info.value.holder.backend_pid if info.value.holder else None
            assert backend and f"SELECT pg_terminate_backend({backend});" in str(info.value)
        finally:
            holder.kill()
            holder.communicate(timeout=10)
    finally:
        await admin(dsn, "DROP OWNED BY %I", role)
        await admin(dsn, "DROP ROLE %I", role)


async def admin(dsn: str, template: str, *values: str) -> None:
    """Run ``format(template, values…)``: the server quotes identifiers and literals."""
    sql = await fetchval(dsn, "SELECT format($1, VARIADIC $2::text[])", template, list(values))
    await fetch(dsn, sql)
