"""The library API: :class:`Migrator` and :func:`migrate`.

A run, from the top::

    load and split every file         (fails before any database is touched)
    connect (retry up to wait_for_db) and check it is a direct session
    read history without the lock     → nothing pending? return at once (replicas)
    poll for the advisory lock        (reporting the holder; reclaiming a dead one)
    create/upgrade history, publish the holder, start the heartbeat + watchdog
    re-read history, plan again       (a waiting replica must not apply a stale plan)
    run each migration                (events stream out as it goes)
    release the lock                  (shielded: also on error and cancellation)

No global state: each Migrator has its own connections, so many can run concurrently
in one process (different schemas or databases, or racing on the same one).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from . import indexes
from .config import Config
from .connection import Conn, Connector, check_direct
from .errors import (
    AsyncmigError,
    ConfigError,
    InvalidIndexError,
    LockHolder,
    MigrationError,
    PendingTimeoutError,
)
from .events import Emitter, Event, EventCallback, Message, RunFinished, RunStarted
from .heartbeat import SideConnection, hold
from .history import History, HistoryRow
from .loader import MigrationSet, load_migrations, scan_migrations
from .lock import LockKey, LockPolicy, current_holder, lock_key, reclaim_by_hand
from .planner import MigratePlan, RollbackPlan, plan_migrate, plan_rollback
from .preflight import (
    FileChecker,
    emit_planned,
    explain_resume,
    parse_stored,
    plan_items,
    rollback_items,
)
from .progress import Progress
from .reports import (
    AppliedMigration,
    MigrateReport,
    RollbackReport,
    StatusReport,
    ValidationIssue,
    ValidationReport,
)
from .runner import Runner
from .status import build_status, file_issue, history_issues, invalid_index_issues

__all__ = ["Migrator", "migrate"]


class Migrator:
    """Migrations of one database and schema.

    ``config`` is a :class:`Config`, a DSN string, or None (then ``DATABASE_URL``).
    ``pool``: an asyncpg pool to take connections from instead of connecting (it needs
    room for two: the run's dedicated connection and the heartbeat's).
    Keyword ``overrides`` change single :class:`Config` fields.
    """

    def __init__(
        self,
        config: Config | str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        on_event: EventCallback | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(config, str):
            config = Config(dsn=config)
        self.config = (config or Config()).with_(**overrides)
        self.pool = pool
        self.connector = Connector(self.config, pool)
        self.on_event = on_event
        self.history = History(self.config.schema)
        self.key: LockKey = lock_key(self.history.qualified_name)

    async def __aenter__(self) -> Migrator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # -- plumbing (connection.py owns connections; preflight.py the plan's views) ------

    def _emitter(self, on_event: EventCallback | None) -> Emitter:
        return Emitter(self.on_event, on_event)

    def _connection(self, purpose: str = "") -> AbstractAsyncContextManager[Conn]:
        return self.connector.connection(purpose)

    async def _connect_extra(self) -> Conn:
        return await self.connector.connect_side()

    async def _release_extra(self, conn: Conn, broken: bool = False) -> None:
        await self.connector.release_side(conn, broken)

    def _load(self, lazy: bool = False) -> MigrationSet:
        return load_migrations(self.config.sql_dir, self.config.rollback_dir, lazy=lazy)

    def _runner(
        self, conn: Conn, emit: Emitter, progress: Progress, rebuild_invalid: bool = False
    ) -> Runner:
        c = self.config
        return Runner(
            conn,
            self.history,
            emit,
            progress,
            migration_timeout=c.migration_timeout,
            fresh=lambda: self._connection("settle"),
            batch=c.batch,
            retry=c.retry_policy(),
            rebuild_invalid=rebuild_invalid,
        )

    def _locked(
        self, conn: Conn, emit: Callable[[Event], Awaitable[None]]
    ) -> AbstractAsyncContextManager[Progress]:
        """Hold the lock for the body; heartbeat, watchdog and fence run beside it."""
        side = SideConnection(self._connect_extra, self._release_extra)
        return hold(conn, self.key, self.history, LockPolicy.of(self.config), side, emit)

    # -- migrate ----------------------------------------------------------------------

    async def migrate(
        self,
        *,
        steps: int | None = None,
        target: int | None = None,
        dry_run: bool = False,
        atomic: bool = False,
        force: bool = False,
        allow_out_of_order: bool = False,
        resume: bool = False,
        rebuild_invalid: bool = False,
        on_event: EventCallback | None = None,
    ) -> MigrateReport:
        """Apply pending migrations. Returns at once, without the lock, if none are.

        A no-transaction migration that runs again (``resume``, or a retry after a
        failure) stops before anything runs if an index it builds exists and is INVALID
        (a failed concurrent build); ``rebuild_invalid`` drops such an index
        concurrently and builds it again instead (:mod:`asyncmig.indexes`)."""
        _check_steps(steps)
        t_start = time.perf_counter()
        emit = self._emitter(on_event)
        async with self.connector.opened_while(self._load) as (migrations, conn):
            for text in migrations.notices:
                await emit(Message(level="notice", text=text))
            for text in migrations.warnings:
                await emit(Message(level="warning", text=text))

            def plan(rows: dict[int, HistoryRow], locked: bool = True) -> MigratePlan:
                return plan_migrate(
                    migrations,
                    rows,
                    steps=steps,
                    target=target,
                    force=force,
                    allow_out_of_order=allow_out_of_order,
                    resume=resume,
                    atomic=atomic,
                    locked=locked,
                    history_table=self.history.qualified_name,
                )

            await check_direct(conn)
            rows = await self.history.rows(conn) or {}
            # Without the lock, an interrupted no-transaction run may be a live runner's:
            # its version stays pending (take the lock, then judge), never an error here.
            ahead = plan(rows, locked=False)
            pending = ahead.steps
            if dry_run:
                for issue in ahead.unsettled:
                    text = issue.message + "; a real run decides under the lock (--resume)"
                    await emit(Message(level="warning", text=text))
            if not pending or dry_run:
                items = plan_items(pending)
                await emit(
                    RunStarted(operation="migrate", plan=items, dry_run=dry_run, atomic=atomic)
                )
                for step in pending if dry_run else ():
                    mig = step.migration
                    await emit_planned(emit, mig.version, mig.forward.statements, step.resume_from)
                await emit(
                    RunFinished(operation="migrate", duration_ms=_ms(t_start), dry_run=dry_run)
                )
                planned = tuple(s.migration.version for s in pending)
                return MigrateReport(planned=planned, dry_run=dry_run, duration_ms=_ms(t_start))

            applied: list[AppliedMigration] = []
            waited = 0.0
            t_wait = time.perf_counter()
            try:
                async with self._locked(conn, emit) as progress:
                    waited = time.perf_counter() - t_wait
                    rows = await self.history.rows(conn) or {}
                    # the leader may have applied them meanwhile, or died half-way; the
                    # --atomic and no-transaction checks apply to this plan too
                    pending = await explain_resume(
                        conn, self.history, migrations, lambda r: plan(r).steps, rows
                    )
                    if not rebuild_invalid:
                        again = [s for s in pending if s.resume_from or s.migration.version in rows]
                        await indexes.refuse_invalid(conn, self.history, again, resume=resume)
                    await emit(
                        RunStarted(operation="migrate", plan=plan_items(pending), atomic=atomic)
                    )
                    async with self._runner(
                        conn, emit, progress, rebuild_invalid=rebuild_invalid
                    ) as runner:
                        applied = runner.done  # what committed, also when a later one fails
                        try:
                            await runner.migrate(pending, atomic=atomic)
                        except MigrationError as exc:
                            if not isinstance(exc, InvalidIndexError):
                                await indexes.name_left_invalid(conn, self.history, pending, exc)
                            raise
            except AsyncmigError:
                with anyio.CancelScope(shield=True):
                    done, ms = tuple(a.version for a in applied), _ms(t_start)
                    await emit(
                        RunFinished(operation="migrate", applied=done, duration_ms=ms, ok=False)
                    )
                raise
            done, ms = tuple(a.version for a in applied), _ms(t_start)
            await emit(RunFinished(operation="migrate", applied=done, duration_ms=ms))
            return MigrateReport(
                applied=tuple(applied),
                planned=done,
                duration_ms=ms,
                lock_waited_s=waited,
                took_lock=True,
            )

    # -- rollback ---------------------------------------------------------------------

    async def rollback(
        self,
        *,
        steps: int | None = None,
        to: int | None = None,
        all: bool = False,
        dry_run: bool = False,
        on_event: EventCallback | None = None,
    ) -> RollbackReport:
        """Undo applied migrations, newest first (default: the newest one)."""
        _check_steps(steps)
        t_start = time.perf_counter()
        emit = self._emitter(on_event)

        # A rollback needs the rollback files of the versions it undoes, not the forward
        # files: load lazily, check only the selection (before the lock).
        async with self.connector.opened_while(partial(self._load, True)) as (migrations, conn):
            checked = FileChecker(emit)

            def plan(rows: dict[int, HistoryRow]) -> RollbackPlan:
                return plan_rollback(migrations, rows, parse_stored, steps=steps, to=to, all=all)

            await check_direct(conn)
            rows = await self.history.rows(conn) or {}
            selected = plan(rows).steps
            await checked([s.sql for s in selected])
            if not selected or dry_run:
                await emit(
                    RunStarted(operation="rollback", plan=rollback_items(selected), dry_run=dry_run)
                )
                for s in selected if dry_run else ():
                    await emit_planned(emit, s.version, s.sql.statements)
                await emit(
                    RunFinished(operation="rollback", duration_ms=_ms(t_start), dry_run=dry_run)
                )
                planned = tuple(s.version for s in selected)
                return RollbackReport(planned=planned, dry_run=dry_run, duration_ms=_ms(t_start))
            done: list[AppliedMigration] = []
            try:
                async with self._locked(conn, emit) as progress:
                    rows = await self.history.rows(conn) or {}
                    result = plan(rows)
                    selected = result.steps
                    await checked([s.sql for s in selected])
                    for text in result.warnings:
                        await emit(Message(level="warning", text=text))
                    await emit(RunStarted(operation="rollback", plan=rollback_items(selected)))
                    async with self._runner(conn, emit, progress) as runner:
                        done = runner.done  # earlier groups stay rolled back if one fails
                        await runner.rollback(selected)
            except AsyncmigError:
                with anyio.CancelScope(shield=True):
                    undone, ms = tuple(d.version for d in done), _ms(t_start)
                    await emit(
                        RunFinished(
                            operation="rollback", rolled_back=undone, duration_ms=ms, ok=False
                        )
                    )
                raise
            undone, ms = tuple(d.version for d in done), _ms(t_start)
            await emit(RunFinished(operation="rollback", rolled_back=undone, duration_ms=ms))
            return RollbackReport(rolled_back=tuple(done), planned=undone, duration_ms=ms)

    def stream(self, operation: str, /, **kwargs: Any) -> Any:
        """``async with m.stream("migrate", steps=1) as events: async for e in events``.

        ``operation`` is ``"migrate"``, ``"rollback"``, ``"reset"`` or ``"seed"``; keyword
        arguments go to that method. ``events.result`` holds its return value afterwards.
        """
        from .stream import run_streamed

        if operation not in ("migrate", "rollback", "reset", "seed"):
            raise ConfigError(f"cannot stream {operation!r}")
        return run_streamed(getattr(self, operation), **kwargs)

    async def reset(
        self, *, on_event: EventCallback | None = None
    ) -> tuple[RollbackReport, MigrateReport]:
        """Roll back everything, then migrate."""
        down = await self.rollback(all=True, on_event=on_event)
        up = await self.migrate(on_event=on_event)
        return down, up

    # -- status / validate ------------------------------------------------------------

    async def status(self) -> StatusReport:
        """Every version, disk and history side by side. Files are read and checksummed
        (drift shows), but only pending ones are split, to count their statements; file
        errors are `validate`'s business."""

        def scan() -> MigrationSet:
            return scan_migrations(self.config.sql_dir, self.config.rollback_dir, lazy=True)[0]

        async with self.connector.opened_while(scan) as (migrations, conn):
            rows = await self.history.rows(conn)
            invalid = await self.history.invalid_indexes(conn)
            return await anyio.to_thread.run_sync(
                build_status, migrations, rows, self.config.schema, invalid
            )

    async def validate(self, *, online: bool = True) -> ValidationReport:
        """Offline checks of every file, and (``online``) comparison with history."""
        migrations, errors = await anyio.to_thread.run_sync(
            scan_migrations, self.config.sql_dir, self.config.rollback_dir
        )
        issues = [file_issue(e) for e in errors]
        issues += [ValidationIssue("warning", "file_warning", w) for w in migrations.warnings]
        if online:
            async with self._connection() as conn:
                rows = await self.history.rows(conn) or {}
                invalid = await self.history.invalid_indexes(conn)
            issues += history_issues(migrations, rows)
            issues += invalid_index_issues(invalid)
        return ValidationReport(tuple(issues), online=online)

    # -- lock administration ----------------------------------------------------------

    async def lock_holder(self) -> LockHolder | None:
        async with self._connection() as conn:
            return await current_holder(conn, self.key, self.history)

    async def unlock(self, *, force: bool = False) -> LockHolder | None:
        """The current holder; with ``force``, terminate its backend (only if it still
        holds this lock) and log it. Raises LockTerminateDeniedError if not allowed."""
        async with self._connection() as conn:
            if force:
                return await reclaim_by_hand(conn, self.key, self.history)
            return await current_holder(conn, self.key, self.history)

    async def wait(self, *, timeout: float, poll_interval: float = 1.0) -> StatusReport:
        """Block until nothing is pending (for replicas that must not migrate)."""
        deadline = time.monotonic() + timeout
        while True:
            report = await self.status()
            if not report.pending:
                return report
            if time.monotonic() >= deadline:
                raise PendingTimeoutError(
                    f"still {len(report.pending)} pending migration(s) after {timeout:g}s",
                    pending=[v.version for v in report.pending],
                    holder=await self.lock_holder(),
                )
            await anyio.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    # -- seeds ------------------------------------------------------------------------

    async def seed(
        self, *, environment: str | None = None, on_event: EventCallback | None = None
    ) -> tuple[str, ...]:
        """Run ``seeds/*.sql`` (then ``seeds/<environment>/*.sql``) in one transaction,
        through the runner (:mod:`asyncmig.seeds`)."""
        from .seeds import load_seeds, run_seeds

        emit = self._emitter(on_event)
        env = environment or self.config.environment
        files = await anyio.to_thread.run_sync(load_seeds, self.config.seeds_dir, env)
        async with self._connection() as conn:
            await run_seeds(conn, self.history, files, emit)
        return tuple(str(f.path) for f in files)


def _check_steps(steps: int | None) -> None:
    if steps is not None and steps < 1:
        raise ConfigError(
            f"--steps must be 1 or more (got {steps}); to undo everything use --all, "
            f"to apply everything leave --steps out"
        )


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def migrate(
    dsn: str | None = None,
    *,
    sql_dir: str | Path = "sql",
    rollback_dir: str | Path = "rollback",
    on_event: EventCallback | None = None,
    lock_timeout: float = 300.0,
    pool: asyncpg.Pool | None = None,
    **options: Any,
) -> MigrateReport:
    """Apply pending migrations: ``await asyncmig.migrate(dsn)`` in a lifespan hook.

    ``options`` are :class:`Config` fields (``schema``, ``stale_after``, …) or
    :meth:`Migrator.migrate` arguments (``target``, ``steps``, ``dry_run``, …).
    """
    run_args = {k: options.pop(k) for k in _RUN_ARGS if k in options}
    options.update(sql_dir=sql_dir, rollback_dir=rollback_dir, lock_timeout=lock_timeout)
    m = Migrator(dsn, pool=pool, **options)
    return await m.migrate(on_event=on_event, **run_args)


_RUN_ARGS = inspect.signature(Migrator.migrate).parameters.keys() - {"self", "on_event"}
