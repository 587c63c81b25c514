"""The migration lock: a session advisory lock, polled for, watched, fenced, and reclaimed.

* **Key**: a signed 64-bit integer from SHA-256 of the history table's qualified name,
  so two applications (two schemas) in one database never block each other.
* **Waiting never blocks in the server**: ``pg_try_advisory_lock`` in short autocommit
  statements, with exponential backoff and jitter, until the timeout. A blocked
  ``pg_advisory_lock`` (or an open transaction while waiting) would deadlock a holder
  running ``CREATE INDEX CONCURRENTLY``, which waits for every older transaction.
  Each poll is bounded (:data:`POLL_TIMEOUT`): a server that stops answering ends the
  wait with :class:`~asyncmig.errors.DatabaseUnreachableError`, never a hang.
* **Holding** (:func:`hold`): holder information is published in ``_migration_locks``
  and refreshed by a heartbeat on a second connection; waiters report it every few
  seconds. Every heartbeat statement (connect, ``pg_locks`` check, UPDATE) is bounded
  by :attr:`LockPolicy.statement_timeout`; a hung socket is dropped and reopened.
* **Holder-side watchdog**: each beat also checks, through ``pg_locks``, that the
  dedicated connection's backend still holds the lock. If it does not (a statement
  released it, the backend was terminated) or the connection closed, the run stops
  at once with :class:`~asyncmig.errors.LockLostError`.
* **Fencing**: a holder that cannot prove it is alive — no heartbeat reached the server
  for :attr:`LockPolicy.fence_after` (``stale_after`` × 0.8) — stops its own run before
  any waiter may reclaim the lock (a waiter needs ``stale_after``). The 20 % margin
  (6 s at the default 30 s) covers the time the holder needs to stop and the latency
  of its last beat; it assumes every runner of one database uses the same
  ``stale_after``. Stopping a run, for any of these reasons, means: its dedicated
  connection is closed at once (the server rolls its transaction back and frees the
  lock; nothing more is sent on it, not even a failure record) and its body cancelled.
* **Waiter-side reclaim**: a holder whose backend holds the lock but whose heartbeat is
  older than ``stale_after`` (frozen process, lost node, partition) is presumed dead;
  the waiter terminates exactly that backend (:func:`terminate_holder`, which checks in
  ``pg_locks`` that it is the one holding this key), records the reclaim in the audit
  log, and takes the lock. Staleness is judged by the server's clock, so client clock
  skew does not matter. ``unlock --force`` uses the same guarded terminate.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import asyncpg
from anyio.streams.memory import MemoryObjectSendStream

from .config import Config
from .connection import Conn
from .errors import (
    AsyncmigError,
    DatabaseUnreachableError,
    LockHolder,
    LockLostError,
    LockTerminateDeniedError,
    LockTimeoutError,
)
from .events import (
    Event,
    LockAcquired,
    LockReclaimed,
    LockReleased,
    LockWaiting,
    StatementProgress,
)
from .history import History
from .models import Blocker
from .progress import Progress, Reading, RunningStatement, Sampler, relay

__all__ = [
    "LockKey",
    "LockPolicy",
    "Progress",
    "SideConnection",
    "current_holder",
    "hold",
    "lock_key",
    "reclaim_by_hand",
    "terminate_holder",
]

Emit = Callable[[Event], Awaitable[None]]

_WAIT_REPORT_EVERY = 3.0
_MIN_BEAT = 0.25  # at most four heartbeat writes a second, however fast migrations go
FENCE_FRACTION = 0.8  # a holder stops itself after stale_after × this without a beat
POLL_TIMEOUT = 10.0  # bound of each waiter poll (lock try, holder read, reclaim)
_RELEASE_TIMEOUT = 5.0
_READINGS_QUEUED = 16  # readings not yet emitted (more are dropped: a stuck consumer)


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
        return max(_MIN_BEAT, every)

    @property
    def statement_timeout(self) -> float:
        """Bound of one heartbeat round (connect if needed, check, update)."""
        return max(0.5, min(5.0, self.beat_every))


@dataclass(frozen=True, slots=True)
class SideConnection:
    """Where the heartbeat takes its own connection, and how it gives it back
    (``broken``: it failed or hung, so end it rather than reuse it)."""

    open: Callable[[], Awaitable[Conn]]
    close: Callable[[Conn, bool], Awaitable[None]]


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


# -- holding ----------------------------------------------------------------------------


@asynccontextmanager
async def hold(
    conn: Conn,
    key: LockKey,
    history: History,
    policy: LockPolicy,
    side: SideConnection,
    emit: Emit,
) -> AsyncIterator[Progress]:
    """Wait for the lock, then hold it for the body with heartbeat, watchdog and fence.

    The body is cancelled, and :class:`LockLostError` raised, when the lock is lost or
    cannot be proven held. The lock is released (shielded, bounded) on every exit.
    """
    waited = await acquire(conn, key, history, policy, emit)
    t_lock = time.monotonic()
    backend_pid = conn.get_server_pid()
    progress = Progress(proved_at=time.monotonic())
    try:
        await emit(LockAcquired(waited_s=round(waited, 3), backend_pid=backend_pid))
        own = _Own(backend_pid, await conn.fetchval(_BACKEND_START_SQL))
        await history.ensure(conn)
        sent = time.monotonic()
        await history.publish_holder(conn)  # the first heartbeat
        progress.proved_at = sent
        body_error: Exception | None = None
        # Readings of a long statement, queued by the heartbeat, emitted beside it.
        report, readings = anyio.create_memory_object_stream[
            tuple[RunningStatement, StatementProgress]
        ](_READINGS_QUEUED)
        with report, readings:
            async with anyio.create_task_group() as tg:
                body_scope = anyio.CancelScope()

                def stop(reason: str) -> None:
                    if progress.lost:
                        return
                    progress.lost = True
                    progress.lost_reason = reason
                    conn.terminate()  # the server rolls back and frees the lock; we send no more
                    body_scope.cancel()

                tg.start_soon(relay, progress, readings, emit)
                tg.start_soon(
                    _heartbeat, conn, key, history, own, progress, policy, side, stop, report
                )
                tg.start_soon(_fence, progress, policy, stop)
                try:
                    with body_scope:
                        yield progress
                except Exception as exc:  # re-raised below, outside the task group
                    body_error = exc
                finally:
                    tg.cancel_scope.cancel()
        if progress.lost and not isinstance(body_error, LockLostError):
            raise LockLostError(
                f"lost the migration lock: {progress.lost_reason}; the run's connection was "
                f"closed, so the server rolled back any open transaction"
            ) from body_error
        if body_error is not None:
            raise body_error
    finally:
        with anyio.CancelScope(shield=True):
            await _release(conn, key, history)
            await emit(LockReleased(held_s=round(time.monotonic() - t_lock, 3)))


async def _release(conn: Conn, key: LockKey, history: History) -> None:
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


async def _fence(progress: Progress, policy: LockPolicy, stop: Callable[[str], None]) -> None:
    """Stop the run when no heartbeat has reached the server for ``fence_after``."""
    fence_after = policy.fence_after
    if fence_after is None:
        return
    while True:
        now = time.monotonic()
        due = progress.proved_at + fence_after
        if now >= due:
            stop(
                f"no heartbeat reached the server for {now - progress.proved_at:.1f}s, so "
                f"this run could not prove it still held the lock and stopped itself before "
                f"another runner could reclaim it (stale_after {policy.stale_after:g}s)"
            )
            return
        await anyio.sleep(due - now)


@dataclass(frozen=True, slots=True)
class _Own:
    """The run's own backend: its pid and when its session started."""

    pid: int
    started: object


async def _end_own_session(side_conn: Conn, own: _Own, timeout: float) -> None:
    """Terminate the run's own backend (shielded: the run is already stopping)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(timeout),
        contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError),
    ):
        await side_conn.fetchval(_TERMINATE_OWN_SQL, own.pid, own.started)


async def _heartbeat(
    conn: Conn,
    key: LockKey,
    history: History,
    own: _Own,
    progress: Progress,
    policy: LockPolicy,
    side: SideConnection,
    stop: Callable[[str], None],
    report: MemoryObjectSendStream[tuple[RunningStatement, StatementProgress]],
) -> None:
    """Every beat: check in ``pg_locks`` that ``holder_pid`` holds the lock, then refresh
    ``heartbeat_at`` and progress, on the side connection, within a bounded time.
    Between beats, a statement that has run for ``progress.sample_after`` is sampled
    (:class:`~asyncmig.progress.Sampler`) on the same connection, also bounded.

    A failed or hung beat (or sample) drops the side connection (a fresh one is opened
    next time); the fence decides when too many beats have failed. When the lock is gone
    while the run's session lives, that session is ended here too: closing the client's
    socket alone would leave a busy backend running its statement to the end.
    """
    holder_pid = own.pid
    side_conn: Conn | None = None
    sampler = Sampler(lambda on: read_sample(on, holder_pid))
    last_beat = time.monotonic()
    try:
        while True:
            beat, sample = await _next_due(progress, policy, last_beat, sampler)
            if conn.is_closed():
                stop("the run's connection closed")
                return
            try:
                with anyio.fail_after(policy.statement_timeout):
                    if side_conn is None:
                        side_conn = await side.open()
                    if beat:
                        progress.changed = anyio.Event()
                        sent = time.monotonic()
                        pid = await holder_backend_pid(side_conn, key)
                        if pid != holder_pid:
                            stop(
                                f"backend {holder_pid} no longer holds the migration lock"
                                + (f" (now held by backend {pid})" if pid else "")
                            )
                            await _end_own_session(side_conn, own, policy.statement_timeout)
                            return
                        await history.heartbeat(
                            side_conn, holder_pid, progress.version, progress.statement
                        )
                        progress.proved_at = max(progress.proved_at, sent)
                    if sample:
                        await sampler.sample(side_conn, progress, report)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    AsyncmigError):  # fmt: skip
                if side_conn is not None:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await side.close(side_conn, True)
                side_conn = None
            finally:
                if beat:
                    last_beat = time.monotonic()
    finally:
        if side_conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await side.close(side_conn, False)


async def _next_due(
    progress: Progress, policy: LockPolicy, last_beat: float, sampler: Sampler
) -> tuple[bool, bool]:
    """Wait until a beat or a sample is due; which of them are.

    A beat is due ``beat_every`` after the last one, or ``_MIN_BEAT`` after it once the
    runner moved to another migration (``progress.changed``). A sample is due when the
    running statement has run for ``sample_after``, then as often as
    :meth:`~asyncmig.progress.Sampler.due` says.
    """
    while True:
        if progress.woken.is_set():
            progress.woken = anyio.Event()
        now = time.monotonic()
        gap = min(_MIN_BEAT, policy.beat_every) if progress.changed.is_set() else policy.beat_every
        beat_at = last_beat + gap
        sample_at = sampler.due(progress)
        if now >= beat_at or now >= sample_at:
            return now >= beat_at, now >= sample_at
        woken = progress.woken
        progress.wakes_at = min(beat_at, sample_at)
        with anyio.move_on_after(progress.wakes_at - now):
            await woken.wait()
