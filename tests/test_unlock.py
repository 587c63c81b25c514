"""``unlock --force``: it ends only a backend that holds this lock, and a role that may
not end it gets an error naming the statement an administrator can run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig.lock import terminate_holder
from asyncmig.migrator import Migrator

from .cli_helpers import ASYNCMIG
from .migtree import fetch, fetchval

pytestmark = pytest.mark.anyio


async def alive(dsn: str, pid: int) -> bool:
    return bool(await fetchval(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


@pytest.fixture
async def weak_dsn(dsn: str) -> AsyncIterator[str]:
    """A login role without superuser or pg_signal_backend."""
    role = f"weak_{os.getpid()}"
    await fetch(dsn, f'CREATE ROLE "{role}" LOGIN')
    parts = urlsplit(dsn)
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    finally:
        await fetch(dsn, f'DROP OWNED BY "{role}"')
        await fetch(dsn, f'DROP ROLE "{role}"')


async def test_unlock_force_terminates_only_the_backend_holding_this_lock(
    dsn: str, tmp_path: Path
) -> None:
    """unlock --force ends the session holding the migration lock and no other (one
    holding another advisory lock, one idle); the guarded terminate refuses a pid that
    does not hold this lock."""
    m = Migrator(dsn, sql_dir=tmp_path)
    holder, other, idle = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", m.key.key)
        await other.execute("SELECT pg_advisory_lock(4242)")
        admin = await asyncpg.connect(dsn)
        try:
            assert not await terminate_holder(admin, m.key, other.get_server_pid())
            assert not await terminate_holder(admin, m.key, idle.get_server_pid())
        finally:
            await admin.close()
        forced = await m.unlock(force=True)
        assert forced is not None and forced.backend_pid == holder.get_server_pid()
        assert await m.lock_holder() is None
        assert await alive(dsn, other.get_server_pid()) and await alive(dsn, idle.get_server_pid())
        assert await other.fetchval("SELECT 1") == 1
    finally:
        for conn in (holder, other, idle):
            conn.terminate()


async def test_unlock_force_without_the_right_to_terminate_names_the_statement(
    dsn: str, weak_dsn: str, tmp_path: Path
) -> None:
    """A role that may not end the holder's (superuser) backend: the library raises
    LockTerminateDeniedError with the pid and `SELECT pg_terminate_backend(pid);`, the
    CLI exits 4 with that statement in its JSON error, and the holder keeps the lock."""
    m = Migrator(weak_dsn, sql_dir=tmp_path)
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", m.key.key)
        pid = holder.get_server_pid()
        statement = f"SELECT pg_terminate_backend({pid});"
        with pytest.raises(asyncmig.LockTerminateDeniedError) as info:
            await m.unlock(force=True)
        assert info.value.backend_pid == pid and info.value.statement == statement
        assert statement in str(info.value) and info.value.exit_code == 4
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCMIG_", "PG"))}
        env.pop("DATABASE_URL", None)
        proc = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(ASYNCMIG), "--json", "--database-url", weak_dsn, "unlock", "--force"],
            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
        ))  # fmt: skip
        assert proc.returncode == 4, (proc.stdout, proc.stderr)
        errors = [json.loads(ln) for ln in proc.stdout.splitlines() if '"error"' in ln]
        assert errors and statement in errors[-1]["message"], proc.stdout
        assert await holder.fetchval("SELECT 1") == 1
        assert (await m.lock_holder()) is not None
    finally:
        await holder.close()
