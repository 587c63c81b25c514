"""A transactional unit as few messages: its statements, with a marker before each.

A unit (one migration, an ``--atomic`` batch, a group of rollbacks) goes to the server
as one simple-query message — or a few: a ``COPY … FROM STDIN`` is sent on its own,
since its data follows it, and a message is cut after about a megabyte, and after a
statement that changes how the rest would be lexed (``standard_conforming_strings``),
since the server lexes a whole message before running it::

    <session reset>; BEGIN;
    SELECT mark(v, 1, true); <statement 1>;
    SELECT mark(v, 2, false); <statement 2>;
    SELECT mark(v, 3, false);                -- the file is done
    <own identity>; SELECT record(v); COMMIT

Each marker makes the server send a NOTICE as the statement starts, which the client
receives while the message runs: live per-statement events with server-side durations,
and, when a statement fails, the last marker names it. An error the server reports
with a position (a syntax error, found before anything runs) is placed by the position
instead, through :attr:`Segment.spans`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from . import session
from .history import History
from .loader import SqlFile
from .splitter import Statement

__all__ = ["Segment", "Span", "Tracker", "build"]

_LIMIT = 1 << 20  # characters per message, about


@dataclass(frozen=True, slots=True)
class Span:
    """Where a statement sits: its offset in its segment's text, its file and index."""

    start: int
    file: int
    index: int  # 1-based


@dataclass(slots=True)
class Segment:
    """One message, and the COPY (if any) sent right after it."""

    text: str
    spans: list[Span] = field(default_factory=list)
    copy: Span | None = None
    last: bool = False  # it carries the COMMIT

    def at(self, position: int) -> Span | None:
        """The statement holding the server's 1-based error ``position``."""
        starts = [s.start for s in self.spans]
        i = bisect.bisect_right(starts, position - 1) - 1
        return self.spans[i] if i >= 0 else None


def build(
    versions: Sequence[int],
    files: Sequence[SqlFile],
    history: History,
    lock_timeouts: Sequence[float | None],
    *,
    limit: int = _LIMIT,
) -> Iterator[Segment]:
    """The messages of a unit of ``files`` (with their ``versions`` and this attempt's
    ``lock_timeouts``), made one at a time as they are sent: a big file's text is not
    copied into all its messages at once. The last one (``last``) carries the COMMIT."""
    ready: list[Segment] = []
    parts: list[str] = []
    spans: list[Span] = []
    size = 0

    def add(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)

    def cut(copy: Span | None = None) -> None:
        nonlocal parts, spans, size
        ready.append(Segment("".join(parts), spans, copy))
        parts, spans, size = [], [], 0

    add(session.RESET + session.BEGIN)
    for j, (version, sql) in enumerate(zip(versions, files, strict=True)):
        if j:
            add(session.RESET)
        d = sql.directives
        add(session.timeouts(lock_timeouts[j], d.statement_timeout, local=True))
        statements = sql.statements
        for k, st in enumerate(statements, 1):
            add(history.mark_sql(version, k, first=k == 1) + ";")
            if st.copy_from_stdin:
                cut(copy=Span(-1, j, k))
            else:
                spans.append(Span(size, j, k))
                add(st.text if st.text.endswith(";") else st.text + ";")
                if size >= limit or _changes_lexing(st):
                    cut()
            while ready:
                yield ready.pop()
        add(history.mark_sql(version, len(statements) + 1, first=not statements) + ";")
    add(session.OWN_IDENTITY + ";")
    for version in versions:
        add(history.record_sql(version) + ";")
    add(session.COMMIT)
    cut()
    ready[-1].last = True
    yield ready.pop()


_SETTERS = frozenset({"SET", "RESET", "SELECT", "DO", "CALL"})


def _changes_lexing(st: Statement) -> bool:
    """A statement that may change how the server lexes what follows it."""
    if st.keyword.partition(" ")[0] not in _SETTERS:
        return False
    lowered = st.text.lower()
    return "standard_conforming_strings" in lowered or "backslash_quote" in lowered


@dataclass(slots=True)
class Tracker:
    """Follows a unit's markers as they arrive: which statement runs, since when.

    :meth:`feed` returns what happened, as ``(kind, file, index, ms)`` tuples: a file
    began (``"file"``), a statement finished (``"finished"``, with its server-side
    duration), a statement started (``"started"``), a file is done (``"done"``, with its
    server-side duration, also kept in :attr:`durations`).
    """

    versions: Sequence[int]
    totals: Sequence[int]
    file: int | None = None
    index: int = 0  # the statement running in ``file``; 0: none
    at: float = 0.0  # server time of the last marker
    file_at: float = 0.0  # server time of the file's first marker
    durations: dict[int, float] = field(default_factory=dict)

    def feed(self, version: int, k: int, ts: float) -> list[tuple[str, int, int, float]]:
        out: list[tuple[str, int, int, float]] = []
        j = self.versions.index(version)
        if j != self.file:
            self.file, self.index, self.file_at = j, 0, ts
            out.append(("file", j, 0, 0.0))
        if self.index:
            out.append(("finished", j, self.index, (ts - self.at) * 1000))
        self.index = k if k <= self.totals[j] else 0
        if self.index:
            out.append(("started", j, k, 0.0))
        else:
            self.durations[j] = (ts - self.file_at) * 1000
            out.append(("done", j, 0, self.durations[j]))
        self.at = ts
        return out


def parse_mark(message: str) -> tuple[int, int, float] | None:
    """``(version, k, server time)`` of a marker NOTICE's message."""
    parts = message.split(" ")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        return None
