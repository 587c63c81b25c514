"""Proof that every rollback undoes its migration: :func:`check_rollbacks`.

In a throwaway database (created on the given server, dropped afterwards), for each
migration in order::

    snapshot the catalog → apply → roll back → snapshot again and compare → apply again

A finding is one of:

* ``not_restored``: the catalog after the rollback differs from before the migration;
  the message says how, in words ("rollback of 12 leaves index `orders_created_idx` on
  public.orders");
* ``rollback_failed``: the rollback itself fails (the error, with its SQLSTATE);
* ``reapply_failed``: the migration cannot be applied a second time after its rollback
  (the rollback left something behind that the catalog comparison cannot see, such as
  rows in a table the migration fills); the check stops there;
* ``apply_failed``: the migration does not apply at all; the check stops there;
* ``no_rollback``: the migration has no rollback file (nothing to check; it stays
  applied and the check goes on).

asyncmig's history tables are created before the first snapshot, so they are part of
every "before" and never show as a difference. The catalog snapshot is
:mod:`asyncmig.snapshot`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from .. import session
from ..config import Config
from ..errors import AsyncmigError
from ..history import History
from ..loader import MigrationSet, load_migrations
from ..migrator import Migrator
from ..snapshot import Difference, diff, take_snapshot
from .templates import database_dsn, project_key

__all__ = ["RollbackCheck", "RollbackFinding", "check_rollbacks"]

FindingKind = Literal[
    "not_restored", "rollback_failed", "reapply_failed", "apply_failed", "no_rollback"
]


@dataclass(frozen=True, slots=True)
class RollbackFinding:
    """One problem with one migration's rollback."""

    version: int
    name: str
    kind: FindingKind
    message: str
    differences: tuple[Difference, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "kind": self.kind,
            "message": self.message,
            "differences": [d.to_dict() for d in self.differences],
        }


@dataclass(frozen=True, slots=True)
class RollbackCheck:
    """What :func:`check_rollbacks` found. ``ok`` when there is no finding."""

    checked: tuple[int, ...] = ()
    findings: tuple[RollbackFinding, ...] = ()
    duration_ms: float = 0.0
    stopped_at: int | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_not_restored(self) -> RollbackFinding | None:
        """The first migration whose rollback does not restore the catalog."""
        return next((f for f in self.findings if f.kind == "not_restored"), None)

    def summary(self) -> str:
        if self.ok:
            return (
                f"every rollback restores the catalog ({len(self.checked)} migration"
                f"{'s' if len(self.checked) != 1 else ''} checked)"
            )
        lines = [
            f"{len(self.findings)} rollback finding(s) in {len(self.checked)} migration(s) checked:"
        ]
        lines += [f"  {f.message}" for f in self.findings]
        if self.stopped_at is not None:
            lines.append(f"  (stopped at {self.stopped_at}: later migrations were not checked)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": list(self.checked),
            "findings": [f.to_dict() for f in self.findings],
            "stopped_at": self.stopped_at,
            "duration_ms": round(self.duration_ms, 3),
        }


class _Loaded(Migrator):
    """A Migrator that reads and splits the files once for the whole check (the check
    runs three operations per migration; re-reading 300 files each time would dominate)."""

    def __init__(self, config: Config, migrations: MigrationSet, pool: asyncpg.Pool) -> None:
        super().__init__(config, pool=pool)
        self._migrations = migrations

    def _load(self, lazy: bool = False) -> MigrationSet:
        return self._migrations


async def check_rollbacks(
    server_dsn: str,
    config: Config | None = None,
    **overrides: Any,
) -> RollbackCheck:
    """Check every migration's rollback in a throwaway database on ``server_dsn``'s
    server (the role needs CREATEDB). ``config`` gives the directories and the history
    schema (its ``dsn`` is ignored); keyword ``overrides`` change its fields
    (``sql_dir="db/sql"``)."""
    config = (config or Config()).with_(**overrides)
    t0 = time.perf_counter()
    migrations = load_migrations(config.sql_dir, config.rollback_dir)
    for m in migrations:
        if m.rollback is not None:
            m.rollback.check()
    name = f"asyncmig_rb_{project_key(config)}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(session.create_database(name))
        try:
            dsn = database_dsn(server_dsn, name)
            checked, findings, stopped = await _check(dsn, config, migrations)
        finally:
            await admin.execute(session.drop_database(name))
    finally:
        await admin.close()
    return RollbackCheck(
        tuple(checked), tuple(findings), (time.perf_counter() - t0) * 1000, stopped
    )


async def _check(
    dsn: str, config: Config, migrations: MigrationSet
) -> tuple[list[int], list[RollbackFinding], int | None]:
    checked: list[int] = []
    findings: list[RollbackFinding] = []
    async with asyncpg.create_pool(dsn, min_size=2, max_size=3) as pool:
        migrator = _Loaded(config.with_(dsn=dsn, lock_timeout=30.0), migrations, pool)
        async with pool.acquire() as conn:
            await History(config.schema).ensure(conn)
            snapshot = await take_snapshot(conn, history_schema=config.schema)
        for m in migrations:
            v = m.version
            checked.append(v)

            def finding(kind: FindingKind, message: str, *d: Difference) -> None:
                findings.append(RollbackFinding(v, m.name, kind, message, tuple(d)))  # noqa: B023

            try:
                await migrator.migrate(target=v)
            except AsyncmigError as exc:
                finding("apply_failed", f"{v} fails to apply: {exc}")
                return checked, findings, v
            if m.rollback is None:
                finding("no_rollback", f"{v} has no rollback file")
                async with pool.acquire() as conn:
                    snapshot = await take_snapshot(conn, history_schema=config.schema)
                continue
            try:
                await migrator.rollback(steps=1)
            except AsyncmigError as exc:
                finding("rollback_failed", f"rollback of {v} fails: {exc}")
                if not m.rollback.directives.transactional:
                    return checked, findings, v  # partly undone: nothing later is meaningful
                async with pool.acquire() as conn:
                    snapshot = await take_snapshot(conn, history_schema=config.schema)
                continue
            async with pool.acquire() as conn:
                after = await take_snapshot(conn, history_schema=config.schema)
            differences = diff(snapshot, after)
            if differences:
                words = "; ".join(d.describe() for d in differences)
                finding("not_restored", f"rollback of {v} {words}", *differences)
            try:
                await migrator.migrate(target=v)
            except AsyncmigError as exc:
                finding(
                    "reapply_failed",
                    f"{v} cannot be applied again after its rollback "
                    f"(the rollback left something behind): {exc}",
                )
                return checked, findings, v
            async with pool.acquire() as conn:
                snapshot = await take_snapshot(conn, history_schema=config.schema)
    return checked, findings, None
