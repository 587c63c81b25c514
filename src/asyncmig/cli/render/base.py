"""The renderer interface, and the stream wrapper that keeps passwords out of output."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from ...errors import LockHolder
from ...events import Event
from ...reports import StatusReport, ValidationReport

__all__ = ["Renderer", "Scrub", "ScrubbingWriter", "identity"]

Scrub = Callable[[str], str]


def identity(text: str) -> str:
    return text


class ScrubbingWriter:
    """A text stream that scrubs secrets from everything written through it, and that
    survives its reader going away.

    A closed pipe (``asyncmig migrate | head -3``) must never reach the library as an
    exception from the event callback (that would abort a migration over a display
    problem): output is silently dropped from then on, and the descriptor is pointed at
    ``/dev/null`` so the interpreter's final flush does not complain either.
    """

    def __init__(self, stream: IO[str], scrub: Scrub = identity) -> None:
        self._stream = stream
        self._scrub = scrub
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                self._stream.write(self._scrub(text))
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._drop()

    def _drop(self) -> None:
        self._closed = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", "utf-8")


class Renderer:
    """What commands call; subclasses decide how it looks."""

    verbose: bool = False

    @contextmanager
    def live(self) -> Iterator[None]:
        """Around a library call that emits events (starts/stops live displays)."""
        yield

    def event(self, event: Event) -> None:
        raise NotImplementedError

    def status(self, report: StatusReport) -> None:
        raise NotImplementedError

    def validation(self, report: ValidationReport) -> None:
        raise NotImplementedError

    def result(self, kind: str, text: str, **data: Any) -> None:
        """A command's outcome that is not an event stream (created, dumped, seeded…)."""
        raise NotImplementedError

    def lock_holder(self, holder: LockHolder | None, *, forced: bool) -> None:
        if holder is None:
            self.result("lock", "the migration lock is free", holder=None, forced=forced)
        elif forced:
            self.result(
                "lock",
                f"terminated the lock holder: {holder.describe()}",
                holder=holder.to_dict(),
                forced=True,
            )
        else:
            hint = "; `asyncmig unlock --force` ends that session and frees the lock"
            self.result(
                "lock",
                f"the migration lock is held by {holder.describe()}{hint}",
                holder=holder.to_dict(),
                forced=False,
            )

    def error(self, exc: BaseException, exit_code: int) -> None:
        raise NotImplementedError

    def interrupted(self, signal_name: str, exit_code: int) -> None:
        raise NotImplementedError
