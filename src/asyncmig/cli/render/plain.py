"""Not a terminal (CI logs, ``kubectl logs``): timestamped lines, one per migration.

What is printed, by default:

* one line per migration, when it ends (``12 add_orders: applied in 40ms``), or its
  failure with the error;
* a statement that ran for :attr:`PlainRenderer.slow_after` (1 s) or longer gets a line
  of its own when it ends, with its duration; and while it is still running, a
  ``still running`` line at 1 s and then every minute, so a long index build does not
  look like a hang in a log that only shows finished things. A watcher thread (started
  by :meth:`~PlainRenderer.live`, around a run) checks ten times a second;
* the plan (file names for up to three migrations, version ranges beyond) and the
  summary, which names ranges: ``migrate: applied 300 migrations, 1–300 in 4.9s``;
* lock waits and reclaims, server notices, warnings.

``-v`` adds every statement's start and end, migration starts and lock acquire/release.
``--json`` (:mod:`.jsonl`) keeps every event. Errors go to stderr.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, assert_never

from ...durations import format_duration
from ...events import (
    Event,
    LockAcquired,
    LockReclaimed,
    LockReleased,
    LockRetry,
    LockWaiting,
    Message,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    RunFinished,
    RunStarted,
    ServerNotice,
    StatementFinished,
    StatementPlanned,
    StatementProgress,
    StatementStarted,
)
from ...reports import StatusReport, ValidationReport
from .base import Renderer, Scrub, ScrubbingWriter, identity
from .text import (
    applied_when,
    describe_event,
    error_lines,
    fmt_ms,
    notes,
    state_label,
    status_footer,
    validation_footer,
    where,
)

__all__ = ["PlainRenderer"]

REPEAT_EVERY = 60.0  # seconds between "still running" lines after the first
PROGRESS_EVERY = 10.0  # seconds between progress lines of one statement


@dataclass
class _Running:
    """The statement now running, and when to say so next."""

    event: StatementStarted
    started: float  # the renderer's clock
    next_report: float


class PlainRenderer(Renderer):
    """Timestamped lines on ``out``; errors on ``err``."""

    def __init__(
        self,
        out: IO[str],
        err: IO[str],
        *,
        scrub: Scrub = identity,
        verbose: bool = False,
        slow_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = ScrubbingWriter(out, scrub)
        self.err = ScrubbingWriter(err, scrub)
        self.verbose = verbose
        self.slow_after = slow_after
        self._clock = clock
        self._order: tuple[int, ...] = ()  # the run's planned versions, for ranges
        self._running: _Running | None = None
        self._write_lock = threading.Lock()
        # The last progress line: (version, index, waiting for a lock) and when.
        self._progress_said: tuple[tuple[int, int, bool], float] | None = None

    def _line(
        self, text: str, *, ts: datetime | None = None, stream: ScrubbingWriter | None = None
    ) -> None:
        stamp = (ts or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        target = stream or self.out
        with self._write_lock:
            target.write(f"{stamp}Z {text}" + "\n")
            target.flush()

    @contextmanager
    def live(self) -> Iterator[None]:
        """Around a run: a watcher thread says when a statement runs for a long time."""
        stop = threading.Event()
        interval = min(0.1, self.slow_after / 4) if self.slow_after > 0 else 0.1

        def watch() -> None:
            while not stop.wait(interval):
                self.tick()

        watcher = threading.Thread(target=watch, name="asyncmig-slow-statements", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            self._running = None

    def tick(self, now: float | None = None) -> None:
        """Print ``still running`` for a statement that has run for ``slow_after`` (then
        every :data:`REPEAT_EVERY` seconds). Called by the watcher thread; ``now`` is the
        renderer's clock (``time.monotonic`` unless another clock was given)."""
        running = self._running
        now = self._clock() if now is None else now
        if running is None or now < running.next_report:
            return
        running.next_report = now + REPEAT_EVERY
        e = running.event
        took = format_duration(now - running.started)
        self._line(f"{e.version} [{e.index}/{e.total}] still running after {took}, "
                   f"line {e.line}: {e.preview}")  # fmt: skip

    def event(self, event: Event) -> None:
        match event:
            case StatementStarted():
                now = self._clock()
                self._running = _Running(event, now, now + self.slow_after)
                if self.verbose:
                    self._line(describe_event(event) or "", ts=event.ts)
                return
            case StatementFinished(duration_ms=ms):
                running, self._running = self._running, None
                if self.verbose:
                    self._line(describe_event(event) or "", ts=event.ts)
                elif ms >= self.slow_after * 1000:
                    self._line(_slow_line(event, running), ts=event.ts)
                return
            case StatementProgress():
                self._progress(event)
                return
            case MigrationStarted() | LockAcquired() | LockReleased():
                if self.verbose:
                    self._line(describe_event(event) or "", ts=event.ts)
                return
            case MigrationFinished() | MigrationFailed():
                self._running = None
            case RunStarted(plan=plan):
                self._order = tuple(p.version for p in plan)
            case RunFinished(applied=applied, rolled_back=back, ok=ok, dry_run=dry):
                self._running = None
                if ok and not dry and not applied and not back:
                    return  # "nothing to do" was said when the run started
            case (
                LockWaiting()
                | LockReclaimed()
                | StatementPlanned()
                | LockRetry()
                | ServerNotice()
                | Message()
            ):
                pass  # described below, as they are
            case _:
                assert_never(event)
        text = describe_event(event, self._order)
        if text is not None:
            self._line(text, ts=event.ts)

    def _progress(self, event: StatementProgress) -> None:
        """A long statement's progress: a line at its first reading, when it starts or
        stops waiting for a lock, and at most every :data:`PROGRESS_EVERY` seconds
        (``--json`` keeps every reading). It stands in for the ``still running`` line."""
        now = self._clock()
        key = (event.version, event.index, event.waiting_for_lock)
        said = self._progress_said
        if said is not None and said[0] == key and now < said[1] + PROGRESS_EVERY:
            return
        self._progress_said = (key, now)
        running = self._running
        if running is not None:
            running.next_report = max(running.next_report, now + REPEAT_EVERY)
        self._line(describe_event(event) or "", ts=event.ts)

    def status(self, report: StatusReport) -> None:
        rows = [("VERSION", "NAME", "STATE", "APPLIED AT", "BY", "DURATION", "NOTES")]
        rows += [
            (str(v.version), v.name, state_label(v), applied_when(v), v.applied_by or "-",
             fmt_ms(v.duration_ms) if v.duration_ms is not None else "-",
             ", ".join(notes(v)) or "-")
            for v in report.versions
        ]  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        out.append(status_footer(report))
        self.out.write("\n".join(out) + "\n")
        self.out.flush()

    def validation(self, report: ValidationReport) -> None:
        for issue in report.issues:
            loc = where(issue.path, issue.line, issue.column)
            self.out.write(f"{issue.level}: {issue.code}: {loc}{issue.message}" + "\n")
        self.out.write(validation_footer(report) + "\n")
        self.out.flush()

    def result(self, kind: str, text: str, **data: Any) -> None:
        self._line(text)

    def error(self, exc: BaseException, exit_code: int) -> None:
        for line in error_lines(exc, verbose=self.verbose):
            self.err.write(line.rstrip("\n") + "\n")
        self.err.flush()

    def interrupted(self, signal_name: str, exit_code: int) -> None:
        self.err.write(
            f"interrupted by {signal_name}: the running migration was rolled back and the "
            f"lock released\n"
        )
        self.err.flush()


def _slow_line(event: StatementFinished, running: _Running | None) -> str:
    """A slow statement's end: where it is in the file when its start is known."""
    head = f"{event.version} [{event.index}/{event.total}] {event.status or 'OK'} "
    head += f"in {fmt_ms(event.duration_ms)}"
    started = running.event if running is not None else None
    if started is not None and (started.version, started.index) == (event.version, event.index):
        head += f", line {started.line}: {started.preview}"
    return head
