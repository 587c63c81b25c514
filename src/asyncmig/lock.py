"""The migration lock: its key, its policy, taking it, reclaiming it, releasing it.

* **Key**: a signed 64-bit integer from SHA-256 of the history table's qualified name,
  so two applications (two schemas) in one database never block each other.
* **Waiting never blocks in the server** (:func:`acquire`): ``pg_try_advisory_lock`` in
  short autocommit statements, with exponential backoff and jitter, until the timeout.
  A blocked ``pg_advisory_lock`` (or an open transaction while waiting) would deadlock a
  holder running ``CREATE INDEX CONCURRENTLY``, which waits for every older transaction.
  Each poll is bounded (:data:`POLL_TIMEOUT`): a server that stops answering ends the
  wait with :class:`~asyncmig.errors.DatabaseUnreachableError`, never a hang. Waiters
  report the published holder every few seconds.
* **Waiter-side reclaim**: a holder whose backend holds the lock but whose heartbeat is
  older than ``stale_after`` (frozen process, lost node, partition) is presumed dead;
  the waiter terminates exactly that backend (:func:`terminate_holder`, which checks in
  ``pg_locks`` that it is the one holding this key), records the reclaim in the audit
  log, and takes the lock. Staleness is judged by the server's clock, so client clock
  skew does not matter. ``unlock --force`` uses the same guarded terminate
  (:func:`reclaim_by_hand`). A live holder fences itself before ``stale_after``
  (:attr:`LockPolicy.fence_after`), so a reclaimed holder has already stopped.
* **Release** (:func:`release`): clear the published holder and unlock, bounded; a
  connection that fails meanwhile is terminated (ending the session frees the lock).
* **The holder's statements**: holding the lock — heartbeat, watchdog, fencing — is
  :func:`asyncmig.heartbeat.hold`'s job, but the statements it runs on its side
  connection are written here, where SQL lives: which backend holds the lock
  (:func:`holder_backend_pid`), the end of the run's own session
  (:func:`end_own_session`) and the sample of a long statement (:func:`read_sample`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import asyncpg

from .config import Config
from .connection import Conn
from .errors import (
    DatabaseUnreachableError,
    LockHolder,
    LockTerminateDeniedError,
    LockTimeoutError,
)
from .events import Event, LockReclaimed, LockWaiting
from .history import History
from .models import Blocker
from .progress import Progress, Reading

__all__ = [
    "LockKey",
    "LockPolicy",
    "OwnSession",
    "Progress",  # (its home is asyncmig.progress; the runner imports it from here)
    "acquire",
    "current_holder",
    "end_own_session",
    "holder_backend_pid",
    "lock_key",
    "own_session",
    "read_sample",
    "reclaim_by_hand",
    "release",
    "sample_sql",
    "terminate_holder",
]

Emit = Callable[[Event], Awaitable[None]]

_WAIT_REPORT_EVERY = 3.0
MIN_BEAT = 0.25  # at most four heartbeat writes a second, however fast migrations go
FENCE_FRACTION = 0.8  # a holder stops itself after stale_after × this without a beat
POLL_TIMEOUT = 10.0  # bound of each waiter poll (lock try, holder read, reclaim)
_RELEASE_TIMEOUT = 5.0


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


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """How long to wait for the lock, and the heartbeat/fencing/reclaim timings."""

    wait_timeout: float = 300.0
    stale_after: float = 30.0  # <= 0: never reclaim, never fence
    heartbeat_interval: float = 5.0

    @classmethod
    def of(cls, config: Config) -> LockPolicy:
        return cls(config.lock_timeout, config.stale_after, config.heartbeat_interval)

    @property
    def fence_after(self) -> float | None:
        """Seconds without a successful heartbeat after which the holder stops itself."""
        return self.stale_after * FENCE_FRACTION if self.stale_after > 0 else None

    @property
    def beat_every(self) -> float:
        """The heartbeat period: ``heartbeat_interval``, but at least three beats fit in
        the fencing window (a single slow beat never fences a healthy holder)."""
        every = self.heartbeat_interval
        if self.fence_after is not None:
            every = min(every, self.fence_after / 3)
        return max(MIN_BEAT, every)

    @property
    def statement_timeout(self) -> float:
        """Bound of one heartbeat round (connect if needed, check, update)."""
        return max(0.5, min(5.0, self.beat_every))


_HOLDER_PID_SQL = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1
LIMIT 1
"""

# The one way asyncmig ends another session: only a backend that pg_locks shows holding
# this very lock, in this database, is terminated (never "every advisory-lock holder").
_TERMINATE_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE pid = $1 AND locktype = 'advisory' AND granted AND database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $2::bigint::oid AND objid = $3::bigint::oid AND objsubid = 1
"""


# The run's own backend, after its lock was lost while the session lives on (only that
# session: the pid and the session's start time must both match).
_TERMINATE_OWN_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2
"""
_BACKEND_START_SQL = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"


@dataclass(frozen=True, slots=True)
class OwnSession:
    """The run's own backend: its pid and when its session started."""

    pid: int
    started: object


async def own_session(conn: Conn) -> OwnSession:
    """The session of ``conn`` (the run's dedicated connection)."""
    return OwnSession(conn.get_server_pid(), await conn.fetchval(_BACKEND_START_SQL))


async def end_own_session(side_conn: Conn, own: OwnSession) -> None:
    """Terminate the run's own backend from another connection (that session only)."""
    await side_conn.fetchval(_TERMINATE_OWN_SQL, own.pid, own.started)


# -- sampling a long statement (read on the heartbeat connection) ---------------------

# What the run's backend ($1) waits for, and, only while it waits for a lock, the
# sessions that block it and the relation it waits on. pg_blocking_pids takes the lock
# manager's locks briefly, so it runs only for a backend that waits for a lock.
_ACTIVITY_SQL = """
SELECT a.state, a.wait_event_type, a.wait_event,
  CASE WHEN a.wait_event_type = 'Lock' THEN (
    SELECT json_agg(json_build_object(
      'pid', b.pid, 'user', b.usename, 'application_name', b.application_name,
      'client_addr', host(b.client_addr), 'state', b.state,
      'xact_age_s', extract(epoch FROM now() - b.xact_start)::float8,
      'query', left(b.query, 80)) ORDER BY b.xact_start NULLS LAST, b.pid)
    FROM (SELECT DISTINCT unnest(pg_blocking_pids(a.pid)) AS pid) AS bp
    JOIN pg_stat_activity AS b ON b.pid = bp.pid)
  END AS blockers,
  CASE WHEN a.wait_event_type = 'Lock' THEN (
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_locks AS l
    JOIN pg_class AS c ON c.oid = l.relation
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE l.pid = a.pid AND NOT l.granted AND l.locktype = 'relation'
    LIMIT 1)
  END AS relation
"""

# Each progress view the server has (the first server version that has it, then the view), as
# (phase, units done, units total): blocks where the phase counts blocks, else tuples
# (or bytes, lockers) — the units that move in that phase; total NULL when unknown.
_PROGRESS_VIEWS: tuple[tuple[tuple[int, int], str], ...] = (
    (
        (12, 0),
        """
SELECT phase,
  CASE WHEN blocks_total > 0 THEN blocks_done WHEN tuples_total > 0 THEN tuples_done
       WHEN lockers_total > 0 THEN lockers_done END,
  CASE WHEN blocks_total > 0 THEN blocks_total WHEN tuples_total > 0 THEN tuples_total
       WHEN lockers_total > 0 THEN lockers_total END
FROM pg_stat_progress_create_index WHERE pid = $1""",
    ),
    (
        (12, 0),
        """
SELECT command || ': ' || phase,
  CASE WHEN heap_blks_scanned > 0 THEN heap_blks_scanned ELSE heap_tuples_scanned END,
  CASE WHEN heap_blks_scanned > 0 AND heap_blks_total > 0 THEN heap_blks_total END
FROM pg_stat_progress_cluster WHERE pid = $1""",
    ),
    (
        (14, 0),
        """
SELECT command, CASE WHEN bytes_total > 0 THEN bytes_processed ELSE tuples_processed END,
  CASE WHEN bytes_total > 0 THEN bytes_total END
FROM pg_stat_progress_copy WHERE pid = $1""",
    ),
    (
        (13, 0),
        """
SELECT 'analyze: ' || phase, sample_blks_scanned,
  CASE WHEN sample_blks_total > 0 THEN sample_blks_total END
FROM pg_stat_progress_analyze WHERE pid = $1""",
    ),
    (
        (9, 6),
        """
SELECT 'vacuum: ' || phase,
  CASE WHEN phase = 'vacuuming heap' THEN heap_blks_vacuumed ELSE heap_blks_scanned END,
  CASE WHEN heap_blks_total > 0 THEN heap_blks_total END
FROM pg_stat_progress_vacuum WHERE pid = $1""",
    ),
)


@functools.cache
def sample_sql(server_version: tuple[int, int]) -> str:
    """The one statement a sample runs: activity, blockers and the progress views this
    server has (a view a server lacks is left out, never tried)."""
    union = "\nUNION ALL".join(v for since, v in _PROGRESS_VIEWS if server_version >= since)
    return (
        f"{_ACTIVITY_SQL.rstrip()},\n"
        f"  (SELECT json_build_object('phase', p.phase, 'done', p.done, 'total', p.total)\n"
        f"   FROM ({union}) AS p(phase, done, total) LIMIT 1) AS progress\n"
        f"FROM pg_stat_activity AS a WHERE a.pid = $1"
    )


async def read_sample(conn: Conn, backend_pid: int) -> Reading:
    """Sample backend ``backend_pid`` (on a connection that is not its own)."""
    version = conn.get_server_version()
    row = await conn.fetchrow(sample_sql((version.major, version.minor)), backend_pid)
    if row is None:
        return Reading(busy=False)  # the backend is gone
    blockers = tuple(
        Blocker(
            pid=int(b["pid"]),
            user=b.get("user"),
            application_name=b.get("application_name"),
            client_addr=b.get("client_addr"),
            state=b.get("state"),
            xact_age_s=round(b["xact_age_s"], 3) if b.get("xact_age_s") is not None else None,
            query=b.get("query"),
        )
        for b in json.loads(row["blockers"] or "[]")
    )
    progress = json.loads(row["progress"]) if row["progress"] else {}
    return Reading(
        busy=row["state"] not in ("idle", "idle in transaction", "idle in transaction (aborted)"),
        waiting_for_lock=row["wait_event_type"] == "Lock",
        blockers=blockers,
        relation=row["relation"],
        phase=progress.get("phase"),
        done=progress.get("done"),
        total=progress.get("total"),
    )


async def holder_backend_pid(conn: Conn, key: LockKey) -> int | None:
    pid = await conn.fetchval(_HOLDER_PID_SQL, key.classid, key.objid)
    return int(pid) if pid is not None else None


async def current_holder(conn: Conn, key: LockKey, history: History) -> LockHolder | None:
    """Who holds the lock: the published row if it is about that backend, else the pid."""
    pid = await holder_backend_pid(conn, key)
    if pid is None:
        return None
    published = await history.holder(conn)
    if published is not None and published.backend_pid == pid:
        return published
    return LockHolder(backend_pid=pid)


async def terminate_holder(conn: Conn, key: LockKey, backend_pid: int) -> bool:
    """End ``backend_pid`` if, and only if, it holds ``key``; True if it was signalled.

    Raises LockTerminateDeniedError (naming the statement an administrator can run)
    when this role may not terminate it.
    """
    try:
        ended = await conn.fetchval(_TERMINATE_SQL, backend_pid, key.classid, key.objid)
    except asyncpg.InsufficientPrivilegeError as exc:
        statement = f"SELECT pg_terminate_backend({int(backend_pid)});"
        raise LockTerminateDeniedError(
            f"this role may not terminate backend pid {backend_pid}, which holds the "
            f"migration lock ({exc}); an administrator can run: {statement}",
            backend_pid=backend_pid,
            statement=statement,
        ) from exc
    return bool(ended)


async def reclaim_by_hand(conn: Conn, key: LockKey, history: History) -> LockHolder | None:
    """``unlock --force``: terminate the holder's backend (guarded) and log it."""
    holder = await current_holder(conn, key, history)
    if holder is None or holder.backend_pid is None:
        return holder
    if await terminate_holder(conn, key, holder.backend_pid) and await history.exists(conn):
        detail = {"terminated_backend_pid": holder.backend_pid, "holder": holder.to_dict()}
        await history.log(
            conn, "unlock", version=holder.version, detail=json.dumps(detail, default=str)
        )
    return holder


# -- waiting ----------------------------------------------------------------------------


async def acquire(
    conn: Conn, key: LockKey, history: History, policy: LockPolicy, emit: Emit
) -> float:
    """Take the lock on ``conn``; return seconds waited. Raises LockTimeoutError."""
    start = time.monotonic()
    delay = 0.05
    next_report = start
    timeout = policy.wait_timeout
    while True:
        try:
            with anyio.fail_after(POLL_TIMEOUT):
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key.key):
                    return time.monotonic() - start
                now = time.monotonic()
                waited = now - start
                if timeout <= 0 or waited >= timeout:
                    holder = await current_holder(conn, key, history)
                    who = holder.describe() if holder else "an unknown session"
                    raise LockTimeoutError(
                        f"could not acquire the migration lock within {timeout:g}s; it is "
                        f"held by {who}. If that process is dead, `asyncmig unlock --force` "
                        f"reclaims it.",
                        holder=holder,
                        waited_s=waited,
                    )
                reclaimed = False
                if now >= next_report:
                    holder = await current_holder(conn, key, history)
                    await emit(LockWaiting(holder=holder, waited_s=round(waited, 3)))
                    next_report = now + _WAIT_REPORT_EVERY
                    reclaimed = await _reclaim_if_stale(conn, key, history, policy, emit)
        except TimeoutError:
            raise DatabaseUnreachableError(
                f"the database did not answer within {POLL_TIMEOUT:g}s while waiting for "
                f"the migration lock"
            ) from None
        if reclaimed:
            delay = 0.05
            continue
        remaining = timeout - (time.monotonic() - start)
        await anyio.sleep(max(0.0, min(delay * random.uniform(0.5, 1.5), remaining)))
        delay = min(delay * 2, 1.0)


async def _reclaim_if_stale(
    conn: Conn, key: LockKey, history: History, policy: LockPolicy, emit: Emit
) -> bool:
    """Terminate the holder's backend if its heartbeat is older than ``stale_after``."""
    if policy.stale_after <= 0 or not await history.exists(conn):
        return False
    rec = await conn.fetchrow(
        f"SELECT backend_pid, extract(epoch FROM now() - heartbeat_at)::float8 AS age "
        f"FROM {history.t_locks} WHERE id = 1"
    )
    if rec is None or rec["backend_pid"] is None or rec["age"] is None:
        return False
    age = float(rec["age"])
    if age <= policy.stale_after:
        return False
    pid = await holder_backend_pid(conn, key)
    if pid is None or pid != rec["backend_pid"]:
        return False  # the published row is not the lock's holder: never guess
    holder = await current_holder(conn, key, history) or LockHolder(backend_pid=pid)
    try:
        ended = await terminate_holder(conn, key, pid)
    except LockTerminateDeniedError as exc:
        raise LockTimeoutError(
            f"the lock holder (backend pid {pid}) has not sent a heartbeat for {age:.0f}s "
            f"and looks dead, but this role may not terminate it; an administrator can "
            f"run: {exc.statement}",
            holder=holder,
            waited_s=0.0,
        ) from exc
    if not ended:
        return False
    detail = {
        "terminated_backend_pid": pid,
        "heartbeat_age_s": round(age, 3),
        "holder": holder.to_dict(),
    }
    await history.log(
        conn, "reclaim", version=holder.version, detail=json.dumps(detail, default=str)
    )
    await emit(LockReclaimed(holder=holder, heartbeat_age_s=round(age, 3)))
    return True


# -- releasing --------------------------------------------------------------------------


async def release(conn: Conn, key: LockKey, history: History) -> None:
    """Clear the published holder and unlock; bounded. Ending the session frees the lock
    too, so a connection that fails here is terminated."""
    if conn.is_closed():
        return
    with anyio.move_on_after(_RELEASE_TIMEOUT) as scope:
        try:
            if await history.exists(conn):
                await history.clear_holder(conn, conn.get_server_pid())
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()
