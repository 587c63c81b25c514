"""kill -9 of a real ``asyncmig migrate`` process at 100 random moments (``make chaos``).

Each round starts the CLI on a mix of transactional and no-transaction migrations whose
statements take some milliseconds, waits for its first ``statement_started`` event,
sleeps a random moment, and kills it with SIGKILL. Then it checks:

* **partial transactional migrations**: the table of a transactional migration exists
  if, and only if, history records it completed, with all its rows;
* **stuck locks**: the killed run's advisory lock is gone within a few seconds (the
  kernel closes the socket; the server ends the session);
* **no-transaction resume**: an interrupted no-transaction migration records as
  ``statements_done`` exactly the number of its statements whose effects exist, and
  the next run (``migrate --resume``) starts it at the statement after those.

The figures are printed at the end; all three must be perfect. ``ASYNCMIG_CHAOS_ROUNDS``
and ``ASYNCMIG_CHAOS_SEED`` change the number of rounds and the random seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from asyncmig.history import History
from asyncmig.lock import lock_key

from .cli_helpers import ASYNCMIG
from .conftest import TestPg
from .migtree import write_tree

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

ROUNDS = int(os.environ.get("ASYNCMIG_CHAOS_ROUNDS", "100"))
SEED = int(os.environ.get("ASYNCMIG_CHAOS_SEED", "20261203"))
VERSIONS = range(2, 10)  # 001 creates the marks table
NT_STATEMENTS = 5
TX_ROWS = 20


def transactional(v: int) -> bool:
    return v % 2 == 0


def tree() -> dict[str, str]:
    marks = "CREATE TABLE nt_marks (version int, idx int, PRIMARY KEY (version, idx));\n"
    files = {"001_marks.sql": marks}
    for v in VERSIONS:
        if transactional(v):
            files[f"{v:03d}_tx.sql"] = (
                f"CREATE TABLE tx_{v} (id int);\n"
                f"INSERT INTO tx_{v} SELECT g FROM generate_series(1, 10) g;\n"
                f"SELECT pg_sleep(0.04);\n"
                f"INSERT INTO tx_{v} SELECT g FROM generate_series(11, {TX_ROWS}) g;\n"
            )
        else:
            files[f"{v:03d}_nt.sql"] = "-- asyncmig: no-transaction\n" + "".join(
                f"INSERT INTO nt_marks SELECT {v}, {i} FROM pg_sleep(0.04);\n"
                for i in range(1, NT_STATEMENTS + 1)
            )
    return files


@dataclass
class Run:
    """One CLI process, its JSON events read by a thread as they come."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    first_statement: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, dsn: str, root: Path) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCMIG_", "PG"))}
        env.pop("DATABASE_URL", None)
        proc = subprocess.Popen(
            [str(ASYNCMIG), "--json", "--database-url", dsn, "--sql-dir", str(root / "sql"),
             "--rollback-dir", str(root / "rollback"), "--lock-timeout", "30s",
             "migrate", "--resume"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        run = cls(proc)
        threading.Thread(target=run._read, daemon=True).start()
        return run

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                event = json.loads(line)
                self.events.append(event)
                if event.get("event") == "statement_started":
                    self.first_statement.set()
        self.proc.stdout.close()
        self.ended.set()
        self.first_statement.set()

    def first_index(self, version: int) -> int | None:
        for e in self.events:
            if e.get("event") == "statement_started" and e.get("version") == version:
                return int(e["index"])
        return None


@dataclass
class Figures:
    rounds: int = 0
    killed_mid_run: int = 0
    partial_transactional: int = 0
    stuck_locks: int = 0
    nt_interrupted: int = 0
    nt_exact_record: int = 0
    nt_resumed: int = 0
    nt_resumed_exact: int = 0
    problems: list[str] = field(default_factory=list)


async def _inspect(dsn: str, figures: Figures, round_no: int) -> dict[int, int]:
    """Check one database after a kill; returns {no-tx version: statements_done} for the
    interrupted no-transaction migrations (the next run must resume them there)."""
    conn = await asyncpg.connect(dsn)
    try:
        k = lock_key(History("public").qualified_name)
        deadline = time.monotonic() + 5
        while await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
            k.classid, k.objid,
        ):  # fmt: skip
            if time.monotonic() > deadline:
                figures.stuck_locks += 1
                figures.problems.append(f"round {round_no}: lock still held 5 s after the kill")
                break
            await asyncio.sleep(0.02)
        rows: dict[int, asyncpg.Record] = {}
        if await conn.fetchval("SELECT to_regclass('_migrations') IS NOT NULL"):
            rows = {
                int(r["version"]): r
                for r in await conn.fetch(
                    "SELECT version, status, statements_done FROM _migrations"
                )
            }
        marks_exist = await conn.fetchval("SELECT to_regclass('nt_marks') IS NOT NULL")
        interrupted: dict[int, int] = {}
        for v in VERSIONS:
            row = rows.get(v)
            completed = row is not None and row["status"] == "completed"
            if transactional(v):
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"tx_{v}")
                count = await conn.fetchval(f"SELECT count(*) FROM tx_{v}") if exists else 0
                if exists != completed or (exists and count != TX_ROWS):
                    figures.partial_transactional += 1
                    figures.problems.append(
                        f"round {round_no}: tx {v} table={exists} rows={count} "
                        f"completed={completed}"
                    )
                continue
            effects = (
                await conn.fetchval("SELECT count(*) FROM nt_marks WHERE version = $1", v)
                if marks_exist else 0
            )  # fmt: skip
            if completed:
                if effects != NT_STATEMENTS:
                    figures.problems.append(f"round {round_no}: nt {v} completed, {effects} done")
                continue
            if row is None:
                if effects:
                    figures.problems.append(f"round {round_no}: nt {v} no row, {effects} done")
                continue
            figures.nt_interrupted += 1
            done = int(row["statements_done"])
            if done == effects:
                figures.nt_exact_record += 1
            else:
                figures.problems.append(
                    f"round {round_no}: nt {v} records {done} done, {effects} took effect"
                )
            interrupted[v] = effects
        return interrupted
    finally:
        await conn.close()


def test_kill_9_at_random_moments(pg: TestPg, tmp_path: Path) -> None:
    """100 kill -9 moments measured from the first statement: no partial transactional
    migration, no stuck lock, and every interrupted no-transaction migration recorded
    at, and resumed from, the exact statement."""
    write_tree(tmp_path, tree())
    rng = random.Random(SEED)
    figures = Figures()
    dsn = pg.create_database()
    resume_at: dict[int, int] = {}
    t_start = time.monotonic()
    try:
        for round_no in range(1, ROUNDS + 1):
            figures.rounds += 1
            run = Run.start(dsn, tmp_path)
            assert run.first_statement.wait(30), f"round {round_no}: no statement started"
            time.sleep(rng.uniform(0.0, 0.8))  # the kill moment, not a synchronisation
            finished = run.proc.poll() is not None
            if not finished:
                run.proc.send_signal(signal.SIGKILL)
                figures.killed_mid_run += 1
            run.proc.wait(30)
            run.ended.wait(10)
            for v, k in resume_at.items():  # the previous round's interruptions
                first = run.first_index(v)
                if first is not None:
                    figures.nt_resumed += 1
                    if first == k + 1:
                        figures.nt_resumed_exact += 1
                    else:
                        figures.problems.append(
                            f"round {round_no}: nt {v} resumed at {first}, expected {k + 1}"
                        )
            resume_at = asyncio.run(_inspect(dsn, figures, round_no))
            if finished and not resume_at:  # everything applied: start over
                pg.drop_database(dsn)
                dsn = pg.create_database()
        if resume_at:  # the last round's interruption must resume exactly too
            final = Run.start(dsn, tmp_path)
            final.proc.wait(60)
            final.ended.wait(10)
            assert final.proc.returncode == 0
            for v, k in resume_at.items():
                figures.nt_resumed += 1
                if final.first_index(v) == k + 1:
                    figures.nt_resumed_exact += 1
                else:
                    figures.problems.append(f"final: nt {v} resumed at {final.first_index(v)}")
    finally:
        pg.drop_database(dsn)
    elapsed = time.monotonic() - t_start
    print(
        f"\nchaos: {figures.rounds} rounds in {elapsed:.0f}s, {figures.killed_mid_run} killed "
        f"mid-run (seed {SEED})\n"
        f"  partial transactional migrations: {figures.partial_transactional}\n"
        f"  stuck locks: {figures.stuck_locks}\n"
        f"  no-transaction migrations interrupted: {figures.nt_interrupted}, recorded at the "
        f"exact statement: {figures.nt_exact_record}, resumed: {figures.nt_resumed}, at the "
        f"exact statement: {figures.nt_resumed_exact}"
    )
    for problem in figures.problems:
        print("  " + problem)
    assert figures.killed_mid_run >= ROUNDS // 2, "too few kills landed during a run"
    assert figures.partial_transactional == 0
    assert figures.stuck_locks == 0
    assert figures.nt_exact_record == figures.nt_interrupted
    assert figures.nt_resumed_exact == figures.nt_resumed == figures.nt_interrupted
    assert not figures.problems
