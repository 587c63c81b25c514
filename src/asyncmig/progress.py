"""What the lock holder is doing now, and the sampler that watches a long statement.

The runner tells :class:`Progress` which migration and which statement run now; the
heartbeat (:mod:`asyncmig.heartbeat`) publishes that with each beat. Once a statement
has run for :attr:`Progress.sample_after`, the heartbeat's :class:`Sampler` reads it on
the side connection (progress views, lock wait, blockers: a :class:`Reading`, through
the lock's own statement, :func:`asyncmig.lock.read_sample`), and :func:`relay` emits
each reading as a :class:`~asyncmig.events.StatementProgress`, apart from the heartbeat,
so a slow event consumer never delays a beat. A statement that ends sooner costs nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .connection import Conn
from .events import Event, StatementProgress
from .models import Blocker

__all__ = ["Progress", "Reading", "RunningStatement", "Sampler", "relay"]

_SAMPLE_EVERY = 0.5  # seconds between samples of a long statement
_SAMPLE_SLOWER_AFTER = 10.0  # ... and after it has run this long, one a second


@dataclass(frozen=True, slots=True)
class RunningStatement:
    """The statement the run's backend is executing, as the runner last said."""

    version: int
    index: int  # 1-based
    total: int
    preview: str
    started: float  # time.monotonic() when it started


@dataclass(slots=True)
class Progress:
    """What the holder is doing now; read by the heartbeat, written by the runner.

    The runner calls :meth:`statement_started` / :meth:`statement_done` around each
    statement. Once one has run for :attr:`sample_after` seconds, the heartbeat samples
    it (progress views, lock wait, blockers) on its side connection, emits each reading
    as a :class:`~asyncmig.events.StatementProgress`, and leaves the latest blockers in
    :attr:`blockers` (and the relation waited for in :attr:`lock_relation`) for the
    runner's lock-retry events. A statement that ends sooner costs nothing.
    """

    version: int | None = None
    statement: str | None = None
    lost: bool = False
    lost_reason: str = ""
    changed: anyio.Event = field(default_factory=anyio.Event)
    proved_at: float = 0.0  # monotonic time a beat that succeeded was sent
    # Set by the runner: a statement running this long gets its progress and blockers
    # sampled; the latest blockers, for the runner's lock-retry events.
    sample_after: float = 1.0
    blockers: tuple[Blocker, ...] = ()
    lock_relation: str | None = None  # the relation the last sample saw it wait for
    running: RunningStatement | None = None
    woken: anyio.Event = field(default_factory=anyio.Event)  # the heartbeat re-plans
    wakes_at: float = math.inf  # when the heartbeat wakes by itself (monotonic)

    def moved_to(self, version: int | None) -> None:
        """A new migration started: publish it without waiting for the next beat."""
        self.version = version
        self.statement = None
        self.running = None
        self.changed.set()
        self.woken.set()

    def statement_started(self, version: int, index: int, total: int, preview: str) -> None:
        """Statement ``index`` of ``total`` of ``version`` starts now (its clock for
        :attr:`sample_after`); the previous statement's blockers are forgotten."""
        self.statement = preview
        started = time.monotonic()
        self.running = RunningStatement(version, index, total, preview, started)
        self.blockers = ()
        self.lock_relation = None
        if started + self.sample_after < self.wakes_at:
            self.woken.set()  # else it wakes in time anyway: no task switch per statement

    def statement_done(self) -> None:
        """The running statement ended: nothing more is sampled for it."""
        self.running = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of a long statement."""

    busy: bool = True  # False: the backend is idle (its statement ended or failed)
    waiting_for_lock: bool = False
    blockers: tuple[Blocker, ...] = ()
    relation: str | None = None
    phase: str | None = None
    done: int | None = None
    total: int | None = None

    @property
    def percent(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return round(min(100.0, 100.0 * self.done / self.total), 1)

    @property
    def worth_reporting(self) -> bool:
        """A lock wait or a progress view's row; otherwise there is nothing to say."""
        return self.waiting_for_lock or self.phase is not None or self.done is not None


class Sampler:
    """Samples the statement the run's backend has been running for a while: one bounded
    statement (:func:`~asyncmig.lock.sample_sql`) per reading, none before ``sample_after``."""

    def __init__(self, read: Callable[[Conn], Awaitable[Reading]]) -> None:
        self._read = read  # one reading of the run's backend, on the connection given
        self._for: RunningStatement | None = None  # the statement sampled last
        self._idle: RunningStatement | None = None  # found over (the runner had not said)
        self._last = 0.0

    def due(self, progress: Progress) -> float:
        """Monotonic time of the next sample (infinity: none while nothing runs)."""
        running = progress.running
        if running is None or progress.lost or running is self._idle:
            return math.inf
        if running is not self._for:
            return running.started + progress.sample_after
        every = _SAMPLE_EVERY if self._last - running.started < _SAMPLE_SLOWER_AFTER else 1.0
        return self._last + every

    async def sample(
        self,
        conn: Conn,
        progress: Progress,
        report: MemoryObjectSendStream[tuple[RunningStatement, StatementProgress]],
    ) -> None:
        running = progress.running
        if running is None:
            return
        self._for, self._last = running, time.monotonic()
        reading = await self._read(conn)
        if progress.running is not running:
            return  # it ended meanwhile: the reading may be about the next statement
        if not reading.busy:
            self._idle = running  # a failed one, or a retry's pause: nothing more to read
            return
        progress.blockers = reading.blockers
        progress.lock_relation = reading.relation
        if reading.worth_reporting:
            event = StatementProgress(
                version=running.version, index=running.index, total=running.total,
                elapsed_s=round(time.monotonic() - running.started, 3), phase=reading.phase,
                done=reading.done, units_total=reading.total, percent=reading.percent,
                waiting_for_lock=reading.waiting_for_lock, blockers=reading.blockers,
            )  # fmt: skip
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                report.send_nowait((running, event))


async def relay(
    progress: Progress,
    receive: MemoryObjectReceiveStream[tuple[RunningStatement, StatementProgress]],
    emit: Callable[[Event], Awaitable[None]],
) -> None:
    """Emit the heartbeat's readings, apart from it (a slow event consumer never delays
    a beat), and only while their statement still runs (never after its end)."""
    async with receive:
        async for running, event in receive:
            if progress.running is running:
                try:
                    await emit(event)
                except Exception:  # a display or callback failure never stops a run
                    return
