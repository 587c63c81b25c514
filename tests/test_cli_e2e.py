"""The installed ``asyncmig`` entry point in subprocesses: a full session, signals, and
live progress on a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from .cli_helpers import ASYNCMIG, SIMPLE, SIMPLE_ROLLBACK, cli, json_lines, tree
from .migtree import advisory_locks_here, running_here, wait_until

SLOW = {
    "001_first.sql": "CREATE TABLE first (id int);\n",
    "002_slow.sql": """
        CREATE TABLE partial (id int);
        SELECT pg_sleep(30);
        CREATE TABLE never (id int);
    """,
}


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(dsn, sql))


def advisory_locks(dsn: str) -> int:
    """Advisory locks in this test's database (a shared server's others are not counted)."""
    return asyncio.run(advisory_locks_here(dsn))


def test_session_through_the_entry_point(tmp_path: Path, dsn: str) -> None:
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)
    env = {"DATABASE_URL": dsn}
    first = cli("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "migrate: applied 2 migrations, 1–2 in " in first.stdout
    status = cli("--json", "status", "--exit-code", cwd=tmp_path, env=env)
    assert status.returncode == 0
    (report,) = json_lines(status.stdout)
    assert report["current_version"] == 2
    down = cli("rollback", "--all", cwd=tmp_path, env=env)
    assert down.returncode == 0, down.stderr
    pending = cli("status", "--exit-code", cwd=tmp_path, env=env)
    assert pending.returncode == 6
    bad = cli("migrate", "--steps", "x", cwd=tmp_path, env=env)
    assert bad.returncode == 2


def _start_slow(tmp_path: Path, dsn: str) -> subprocess.Popen[str]:
    tree(tmp_path, SLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")}
    env["DATABASE_URL"] = dsn
    proc = subprocess.Popen(
        [str(ASYNCMIG), "--json", "migrate"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the slow statement was sent ...
        if '"preview":"SELECT pg_sleep(30);"' in line:
            break
    else:
        raise AssertionError(f"migrate ended early: {proc.communicate(timeout=10)}")
    # ... and is running on the server (the migration's transaction is open)
    asyncio.run(wait_until(lambda: running_here(dsn, "SELECT pg_sleep(30)"), timeout=30))
    return proc


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_migration_rolls_back_and_frees_the_lock(
    tmp_path: Path, dsn: str, signum: int, code: int
) -> None:
    proc = _start_slow(tmp_path, dsn)
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    elapsed = time.monotonic() - t0
    assert proc.returncode == code, err
    assert elapsed < 5, elapsed
    lines = json_lines(out)
    assert lines[-1]["event"] == "interrupted"
    assert lines[-1]["exit_code"] == code
    # nothing partial: 001 committed, 002 rolled back as a whole
    tables = {r["relname"] for r in fetch(dsn, "SELECT relname FROM pg_class WHERE relkind='r'")}
    assert "first" in tables
    assert "partial" not in tables and "never" not in tables
    rows = {int(r["version"]): r["status"] for r in fetch(dsn, "SELECT * FROM _migrations")}
    assert rows[1] == "completed"
    assert rows.get(2) in (None, "failed")
    assert advisory_locks(dsn) == 0
    assert asyncio.run(running_here(dsn, "SELECT pg_sleep(30)")) == 0


def test_progress_is_drawn_live_on_a_terminal(tmp_path: Path, dsn: str) -> None:
    tree(
        tmp_path,
        {
            "001_quick.sql": "CREATE TABLE quick (id int);\n",
            "002_slow.sql": "CREATE TABLE t (id int);\nSELECT pg_sleep(2);\nDROP TABLE t;\n",
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")}
    env.update(DATABASE_URL=dsn, TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(ASYNCMIG), "migrate"],
        cwd=tmp_path,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    chunks: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append((time.monotonic(), data))
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        os.close(primary)
    start = next(t for t, c in chunks if b"pg_sleep" in c)
    end = chunks[-1][0]
    during = b"".join(c for t, c in chunks if start <= t < end - 0.1)
    # redrawn while the statement ran: several frames, the running statement's elapsed
    # time advancing, the bar of the slow migration at 1/3
    frames = [c for t, c in chunks if start <= t < end - 0.1]
    assert len(frames) >= 4, len(frames)
    assert b"line 2: SELECT pg_sleep(2);" in during
    assert b"1/3" in during
    text = during.decode("utf-8", "replace")
    ticking = set(re.findall(r"\b(\d\.\d)s\b", text))
    assert len(ticking) >= 3, ticking  # elapsed time advancing frame by frame
    assert "\x1b[" in text  # a terminal: ANSI drawing
    final = b"".join(c for _, c in chunks).decode("utf-8", "replace")
    assert "applied 2 migrations" in final


def test_closed_output_pipe_does_not_abort_the_migration(tmp_path: Path, dsn: str) -> None:
    """``asyncmig migrate | head -1``: the reader goes away, the migration still completes."""
    tree(tmp_path, {
        "001_a.sql": "CREATE TABLE a (id int);\nSELECT pg_sleep(0.5);\n",
        "002_b.sql": "CREATE TABLE b (id int);\n",
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")}
    env["DATABASE_URL"] = dsn
    proc = subprocess.Popen(
        [str(ASYNCMIG), "migrate"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `head -1` exiting
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0, err
    assert "BrokenPipe" not in err and "Exception ignored" not in err
    tables = {r["relname"] for r in fetch(dsn, "SELECT relname FROM pg_class WHERE relkind='r'")}
    assert {"a", "b"} <= tables
