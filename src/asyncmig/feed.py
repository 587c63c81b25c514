"""What the server says while a run goes on, turned into the run's events, in order.

The run's connection reports every NOTICE here (:meth:`EventFeed.on_notice`): a file's
own notices become :class:`ServerNotice` events; the markers a one-message unit carries
(SQLSTATE ``AM001``, see :mod:`asyncmig.batch`) become statement events, followed by a
:class:`~asyncmig.batch.Tracker`. While a message runs, :meth:`EventFeed.live` delivers
them as they arrive.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import anyio
import asyncpg

from .batch import Tracker, parse_mark
from .events import (
    Emitter,
    MigrationStarted,
    ServerNotice,
    StatementFinished,
    StatementStarted,
    preview,
)
from .failures import File
from .history import MARK_SQLSTATE
from .progress import Progress

__all__ = ["EventFeed"]


class EventFeed:
    """The notices and markers of one run's connection, and the events they make."""

    def __init__(self, emit: Emitter, progress: Progress) -> None:
        self.emit = emit
        self.progress = progress
        self.inbox: list[asyncpg.PostgresLogMessage] = []
        self.tracker: Tracker | None = None  # while a one-message unit runs
        self.files: Sequence[File] = ()  # that unit's files
        self._arrived = anyio.Event()
        self._version: int | None = None

    def follow(self, files: Sequence[File]) -> Tracker:
        """A one-message unit of ``files`` starts: follow its markers."""
        self.files = files
        self.tracker = Tracker([f.version for f in files], [len(f.sql.statements) for f in files])
        return self.tracker

    def forget_since(self, seen: int) -> None:
        """Drop what arrived after ``seen`` (the run's own clean-up talking)."""
        del self.inbox[seen:]

    def on_notice(self, _conn: object, message: asyncpg.PostgresLogMessage) -> None:
        self.inbox.append(message)
        self._arrived.set()

    async def drain(self) -> None:
        """Turn what the server said so far into events, in order."""
        while self.inbox:
            msg = self.inbox.pop(0)
            if getattr(msg, "sqlstate", None) == MARK_SQLSTATE:
                mark = parse_mark(getattr(msg, "message", ""))
                if mark is not None and self.tracker is not None:
                    await self._on_mark(*mark)
                continue
            await self.emit(
                ServerNotice(
                    version=self._version,
                    severity=getattr(msg, "severity", "NOTICE") or "NOTICE",
                    message=getattr(msg, "message", str(msg)),
                    detail=getattr(msg, "detail", None),
                    hint=getattr(msg, "hint", None),
                )
            )

    async def _on_mark(self, version: int, k: int, ts: float) -> None:
        assert self.tracker is not None
        for kind, j, index, ms in self.tracker.feed(version, k, ts):
            f = self.files[j]
            if kind == "file":
                await self.started(f)
            elif kind == "done":
                continue
            elif kind == "finished":
                await self.statement_finished(f, index, f.sql.statements[index - 1].keyword, ms)
            else:
                await self.statement_started(f, index)

    @contextlib.asynccontextmanager
    async def live(self) -> AsyncIterator[None]:
        """Deliver markers and notices as events while the body waits on the server."""

        done = False

        async def pump() -> None:
            while not done:
                await self._arrived.wait()
                self._arrived = anyio.Event()
                await self.drain()

        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield
            except BaseException as exc:  # re-raised below, outside the task group
                error = exc
            # The pump finishes what arrived (never cut off between taking a message
            # and emitting it), then stops.
            done = True
            self._arrived.set()
        if error is not None:
            raise error
        await self.drain()

    async def statement_started(self, f: File, index: int) -> None:
        st = f.sql.statements[index - 1]
        text_preview = preview(st.text)
        self.progress.statement_started(f.version, index, len(f.sql.statements), text_preview)
        if self.emit.active:
            await self.emit(
                StatementStarted(
                    version=f.version, index=index, total=len(f.sql.statements), line=st.line,
                    column=st.column, keyword=st.keyword, preview=text_preview,
                )
            )  # fmt: skip

    async def statement_finished(self, f: File, index: int, status: str, ms: float) -> None:
        self.progress.statement_done()
        if self.emit.active:
            await self.emit(
                StatementFinished(
                    version=f.version, index=index, total=len(f.sql.statements),
                    status=status, duration_ms=ms,
                )
            )  # fmt: skip

    async def started(self, f: File) -> None:
        """A file begins: publish it, emit it."""
        self._version = f.version
        self.progress.moved_to(f.version)
        await self.emit(
            MigrationStarted(
                version=f.version, migration=f.name, filename=f.filename,
                statements=len(f.sql.statements), transactional=f.transactional,
                direction=f.direction,
            )
        )  # fmt: skip
