"""Running one library call for a command: event loop, signals, renderer, exit codes.

SIGINT and SIGTERM during a call cancel it (anyio cancellation): the library cancels the
running statement, rolls back, records the failure and releases the lock in shielded
scopes, then the command exits with 130 / 143. A second signal, or cleanup that takes
longer than :data:`HARD_EXIT_AFTER` seconds, exits at once with the same code (the
server still rolls back and frees the lock when the session ends).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..migrator import Migrator
    from .render import Renderer
    from .settings import Settings

__all__ = ["HARD_EXIT_AFTER", "Context", "Interrupted", "Scrubber", "run_cancellable"]

T = TypeVar("T")

HARD_EXIT_AFTER = 4.5  # seconds between the first signal and a forced exit


class Interrupted(Exception):
    """The run was cancelled by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


@dataclass(frozen=True, slots=True)
class Context:
    """What the launcher hands every command: resolved settings and the renderer."""

    settings: Settings
    renderer: Renderer

    def call(self, op: Callable[[Migrator], Awaitable[T]], *, live: bool = True) -> T:
        """Run ``op`` on a :class:`Migrator` for these settings, cancellable by signals."""

        async def go() -> T:
            from ..migrator import Migrator

            async with Migrator(self.settings.config, on_event=self.renderer.event) as m:
                return await op(m)

        if not live:
            return run_cancellable(go)
        with self.renderer.live():
            return run_cancellable(go)

    def require_dsn(self) -> str:
        dsn = self.settings.config.resolved_dsn()
        if not dsn:
            raise ConfigError(
                "no database given: pass --database-url, set DATABASE_URL or "
                "ASYNCMIG_DATABASE_URL, or set database_url in asyncmig.toml"
            )
        return dsn

    def refuse_if_protected(self, yes: bool, action: str) -> None:
        if self.settings.protected and not yes:
            env = self.settings.environment or "this environment"
            raise ConfigError(
                f"{env} is protected: {action} needs --yes to confirm "
                f"(database {self.settings.safe_dsn})"
            )


class Scrubber:
    """Removes the password of every DSN the invocation knows of from output text."""

    def __init__(self, *dsns: str | None) -> None:
        self._dsns: list[str] = []
        for dsn in (*dsns, os.environ.get("ASYNCMIG_DATABASE_URL"), os.environ.get("DATABASE_URL")):
            self.add(dsn)

    def add(self, dsn: str | None) -> None:
        if dsn and dsn not in self._dsns:
            self._dsns.append(dsn)

    def __call__(self, text: str) -> str:
        from ..dsn import scrub

        for dsn in self._dsns:
            text = scrub(text, dsn)
        return text


def run_cancellable(fn: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(fn)``, with SIGINT/SIGTERM cancelling ``fn`` (then :class:`Interrupted`)."""
    import anyio

    state: dict[str, Any] = {}
    timer: list[threading.Timer] = []

    async def watch(scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if "signal" in state:  # second signal: the user means it
                    _hard_exit(128 + signum, "second signal")
                state["signal"] = signum
                reason = f"cleanup did not finish within {HARD_EXIT_AFTER:g}s"
                timer.append(threading.Timer(HARD_EXIT_AFTER, _hard_exit, (128 + signum, reason)))
                timer[0].daemon = True
                timer[0].start()
                scope.cancel()

    # Signal handlers can only be installed from the main thread; elsewhere (the CLI run
    # from a worker thread, as tests do) the call simply is not interruptible by signals.
    watch_signals = threading.current_thread() is threading.main_thread()

    async def main() -> None:
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            if watch_signals:
                tg.start_soon(watch, scope)
            try:
                with scope:
                    state["result"] = await fn()
            except Exception as exc:  # kept out of the task group's ExceptionGroup
                state["error"] = exc
            finally:
                tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        for t in timer:
            t.cancel()
    if "signal" in state:
        raise Interrupted(state["signal"]) from state.get("error")
    if "error" in state:
        raise state["error"]
    return state["result"]  # type: ignore[no-any-return]


def _hard_exit(code: int, reason: str) -> None:
    try:
        sys.stderr.write(f"asyncmig: {reason}; exiting now ({code})\n")
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
