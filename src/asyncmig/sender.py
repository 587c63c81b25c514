"""A file's statements sent one round trip each, on the run's connection.

Used by a unit run statement by statement, by a no-transaction file
(:mod:`asyncmig.autocommit`) and by a seed file. The session and transaction control
due before the next statement (the session reset, ``BEGIN``, a file's timeouts) waits in
:attr:`Sender.prefix` and travels in that statement's message: one round trip, not two.
COPY has a protocol of its own, and a statement that cannot run in a transaction block
cannot share a message (an implicit transaction) either: before those, the prefix goes
alone. Each statement is reported as it starts and finishes (:mod:`asyncmig.feed`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .connection import Conn
from .failures import Failure, File
from .feed import EventFeed
from .splitter import Statement

__all__ = ["Sender", "Step", "elapsed_ms"]

_COPY_CHUNK = 1 << 20

# Sends one statement (its 1-based number given) and returns its command status.
Step = Callable[[Statement, int], Awaitable[str]]


class Sender:
    """Sends statements on ``conn``, each with the session control due before it."""

    def __init__(self, conn: Conn, feed: EventFeed) -> None:
        self.conn = conn
        self.feed = feed
        self.prefix = ""  # session and transaction control sent with the next statement

    async def send(self, st: Statement, failure: Failure) -> str:
        """``st`` with the prefix; ``failure.prefix`` says how much of the message came
        before the statement's text (to place the server's error position)."""
        prefix, self.prefix = self.prefix, ""
        failure.prefix = 0
        if st.copy_from_stdin or st.no_transaction:
            if prefix:
                await self.conn.execute(prefix)
            return (
                await self.copy(st) if st.copy_from_stdin else str(await self.conn.execute(st.text))
            )
        failure.prefix = len(prefix)
        return str(await self.conn.execute(prefix + st.text))

    async def flush(self) -> None:
        """Send what is still due, alone."""
        prefix, self.prefix = self.prefix, ""
        if prefix:
            await self.conn.execute(prefix)

    async def copy(self, st: Statement) -> str:
        """``COPY … FROM stdin`` with the file's inline data."""
        data = st.copy_data or ""

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), _COPY_CHUNK):
                yield data[start : start + _COPY_CHUNK].encode()

        # asyncpg's public COPY helpers build their own COPY statement; the file's
        # statement (any options) goes through the same internal entry point they use.
        copy_in: Any = self.conn._copy_in  # type: ignore[union-attr]
        return str(await copy_in(st.text, chunks(), None))

    async def run(self, f: File, start: int, failure: Failure, *, step: Step | None = None) -> None:
        """The file's statements from ``start`` (0-based). ``step`` sends one (default:
        :meth:`send`); the no-transaction path's also commits its resume point, so the
        statement is committed before it is reported finished."""
        statements = f.sql.statements
        for index in range(start, len(statements)):
            st = statements[index]
            failure.at(f, index + 1)
            await self.feed.statement_started(f, index + 1)
            t0 = time.perf_counter()
            status = await (step(st, index + 1) if step else self.send(st, failure))
            failure.done = index + 1
            if self.feed.inbox:
                await self.feed.drain()
            await self.feed.statement_finished(f, index + 1, status, elapsed_ms(t0))
        failure.at(f, None)


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - t0) * 1000
