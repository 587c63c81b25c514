"""The migration lock: a session advisory lock, polled for, watched, and reclaimed.

* **Key**: a signed 64-bit integer from SHA-256 of the history table's qualified name,
  so two applications (two schemas) in one database never block each other.
* **Waiting never blocks in the server**: ``pg_try_advisory_lock`` in short autocommit
  statements, with exponential backoff and jitter, until the timeout. A blocked
  ``pg_advisory_lock`` (or an open transaction while waiting) would deadlock a holder
  running ``CREATE INDEX CONCURRENTLY``, which waits for every older transaction.
* **Holder information** is published in ``_migration_locks`` and refreshed by a
  heartbeat on a second connection; waiters report it every few seconds.
* **Holder-side watchdog**: the heartbeat task also checks, through ``pg_locks``, that
  the dedicated connection's backend still holds the lock; if not (backend terminated,
  connection gone) the run is stopped with :class:`~asyncmig.errors.LockLostError`.
* **Waiter-side reclaim**: a holder whose backend holds the lock but whose heartbeat is
  older than ``stale_after`` (frozen process, lost node, partition) is presumed dead;
  the waiter terminates exactly that backend (after checking in ``pg_locks`` that it is
  the one holding this key), records the reclaim in the audit log, and takes the lock.
  Staleness is judged by the server's clock on both sides, so client clock skew does
  not matter.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import asyncpg

from .connection import Conn
from .errors import AsyncmigError, LockHolder, LockTimeoutError
from .history import History

__all__ = ["LockKey", "Progress", "acquire", "heartbeat_loop", "lock_key", "release"]

_WAIT_REPORT_EVERY = 3.0
_MIN_BEAT = 0.25  # at most four heartbeat writes a second, however fast migrations go


@dataclass(frozen=True, slots=True)
class LockKey:
    key: int  # signed 64-bit

    @property
    def classid(self) -> int:
        """High 32 bits as ``pg_locks.classid`` shows them (unsigned oid)."""
        return (self.key >> 32) & 0xFFFFFFFF

    @property
    def objid(self) -> int:
        return self.key & 0xFFFFFFFF


def lock_key(qualified_name: str) -> LockKey:
    digest = hashlib.sha256(f"asyncmig:{qualified_name}".encode()).digest()
    return LockKey(int.from_bytes(digest[:8], "big", signed=True))


_HOLDER_PID_SQL = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1
LIMIT 1
"""


@dataclass(slots=True)
class Progress:
    """What the holder is doing now; read by the heartbeat, written by the runner."""

    version: int | None = None
    statement: str | None = None
    lost: bool = False
    lost_reason: str = ""
    changed: anyio.Event = field(default_factory=anyio.Event)

    def moved_to(self, version: int | None) -> None:
        """A new migration started: publish it without waiting for the next beat."""
        self.version = version
        self.statement = None
        self.changed.set()


async def holder_backend_pid(conn: Conn, key: LockKey) -> int | None:
    pid = await conn.fetchval(_HOLDER_PID_SQL, key.classid, key.objid)
    return int(pid) if pid is not None else None


async def acquire(
    conn: Conn,
    key: LockKey,
    history: History,
    *,
    timeout: float,
    stale_after: float,
    on_wait: Callable[[LockHolder | None, float], Awaitable[None]],
    on_reclaim: Callable[[LockHolder, float], Awaitable[None]],
) -> float:
    """Take the lock on ``conn``; return seconds waited. Raises LockTimeoutError."""
    start = time.monotonic()
    delay = 0.05
    next_report = start + 0.0
    holder: LockHolder | None = None
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key.key):
            return time.monotonic() - start
        now = time.monotonic()
        waited = now - start
        if timeout <= 0 or waited >= timeout:
            holder = await _current_holder(conn, key, history)
            who = holder.describe() if holder else "an unknown session"
            raise LockTimeoutError(
                f"could not acquire the migration lock within {timeout:g}s; it is held by "
                f"{who}. If that process is dead, `asyncmig unlock --force` reclaims it.",
                holder=holder,
                waited_s=waited,
            )
        if now >= next_report:
            holder = await _current_holder(conn, key, history)
            await on_wait(holder, waited)
            next_report = now + _WAIT_REPORT_EVERY
            reclaimed = await _reclaim_if_stale(conn, key, history, stale_after, on_reclaim)
            if reclaimed:
                delay = 0.05
                continue
        remaining = timeout - (time.monotonic() - start)
        await anyio.sleep(max(0.0, min(delay * random.uniform(0.5, 1.5), remaining)))
        delay = min(delay * 2, 1.0)


async def _current_holder(conn: Conn, key: LockKey, history: History) -> LockHolder | None:
    pid = await holder_backend_pid(conn, key)
    if pid is None:
        return None
    published = await history.holder(conn)
    if published is not None and published.backend_pid == pid:
        return published
    return LockHolder(backend_pid=pid)


async def _reclaim_if_stale(
    conn: Conn,
    key: LockKey,
    history: History,
    stale_after: float,
    on_reclaim: Callable[[LockHolder, float], Awaitable[None]],
) -> bool:
    """Terminate the holder's backend if its heartbeat is older than ``stale_after``."""
    if stale_after <= 0 or not await history.exists(conn):
        return False
    rec = await conn.fetchrow(
        f"SELECT backend_pid, extract(epoch FROM now() - heartbeat_at)::float8 AS age "
        f"FROM {history.t_locks} WHERE id = 1"
    )
    if rec is None or rec["backend_pid"] is None or rec["age"] is None:
        return False
    age = float(rec["age"])
    if age <= stale_after:
        return False
    pid = await holder_backend_pid(conn, key)
    if pid is None or pid != rec["backend_pid"]:
        return False  # the published row is not the lock's holder: never guess
    holder = await _current_holder(conn, key, history)
    try:
        ended = await conn.fetchval(
            "SELECT pg_terminate_backend($1)"
            " FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND granted"
            " AND classid = $2::bigint::oid AND objid = $3::bigint::oid AND objsubid = 1",
            pid,
            key.classid,
            key.objid,
        )
    except asyncpg.InsufficientPrivilegeError as exc:
        raise LockTimeoutError(
            f"the lock holder (backend pid {pid}) has not sent a heartbeat for {age:.0f}s "
            f"and looks dead, but this role may not terminate it; an administrator can run: "
            f"SELECT pg_terminate_backend({pid});",
            holder=holder,
            waited_s=0.0,
        ) from exc
    if not ended:
        return False
    assert holder is not None
    await history.log(
        conn,
        "reclaim",
        version=holder.version,
        detail=_json({"terminated_backend_pid": pid, "heartbeat_age_s": round(age, 3),
                      "holder": holder.to_dict()}),
    )  # fmt: skip
    await on_reclaim(holder, age)
    return True


def _json(value: object) -> str:
    import json

    return json.dumps(value, default=str)


async def release(conn: Conn, key: LockKey, history: History) -> None:
    """Clear the published holder and unlock (the caller shields this from cancellation)."""
    if conn.is_closed():
        return
    pid = conn.get_server_pid()
    try:
        if await history.exists(conn):
            await history.clear_holder(conn, pid)
    finally:
        await conn.execute("SELECT pg_advisory_unlock_all()")


async def heartbeat_loop(
    connect: Callable[[], Awaitable[Conn]],
    release: Callable[[Conn], Awaitable[None]],
    key: LockKey,
    history: History,
    holder_pid: int,
    progress: Progress,
    interval: float,
    on_lost: Callable[[str], None],
) -> None:
    """Refresh the heartbeat every ``interval`` and watch that the lock is still held.

    Runs until cancelled. Uses its own connection (``connect``/``release``; re-opened if
    it drops): the dedicated connection is busy running migrations. On loss, calls
    ``on_lost(reason)`` once and returns.
    """
    conn: Conn | None = None
    try:
        while True:
            await anyio.sleep(min(_MIN_BEAT, interval))
            with anyio.move_on_after(max(0.0, interval - _MIN_BEAT)):
                await progress.changed.wait()
            progress.changed = anyio.Event()
            try:
                if conn is None:
                    conn = await connect()
                pid = await holder_backend_pid(conn, key)
                if pid != holder_pid:
                    progress.lost = True
                    progress.lost_reason = (
                        f"backend {holder_pid} no longer holds the migration lock"
                        + (f" (now held by backend {pid})" if pid else "")
                    )
                    on_lost(progress.lost_reason)
                    return
                await history.heartbeat(conn, holder_pid, progress.version, progress.statement)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, AsyncmigError):
                # The heartbeat's own connection failed; the dedicated connection is the
                # truth, so try again next beat with a fresh one. (Beats missed for longer
                # than stale_after let a waiter reclaim the lock: the watchdog then stops
                # this run through the dedicated connection.)
                if conn is not None:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await release(conn)
                conn = None
    finally:
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await release(conn)
