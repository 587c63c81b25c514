"""Values shared by the pure core and the database edge: history rows, the lock holder,
plan steps and plans, and the planner's issues.

Plain frozen dataclasses with no I/O and no driver import, so that the planner (and
anything else that only reasons about values) can be imported and tested without
asyncpg. ``history`` and ``errors`` re-export :class:`HistoryRow` and
:class:`LockHolder` from their old places.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .loader import Migration, SqlFile

__all__ = [
    "HistoryRow",
    "InvalidIndex",
    "Issue",
    "IssueCode",
    "LockHolder",
    "MigratePlan",
    "MigrateStep",
    "RollbackPlan",
    "RollbackStep",
]


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One version's row in ``_migrations``."""

    version: int
    filename: str
    checksum: str
    status: str  # completed / failed / rolled_back / running
    executed_at: datetime | None
    executed_by: str | None
    execution_time_ms: int
    statements_total: int
    statements_done: int
    transactional: bool
    error_message: str | None
    error_sqlstate: str | None
    rollback_sql: str | None
    rollback_checksum: str | None

    @property
    def interrupted(self) -> bool:
        """A no-transaction run that stopped (or is still going) after some statements:
        those statements stay committed. Whether its runner is alive can only be judged
        by whoever holds the migration lock."""
        return (
            not self.transactional
            and self.status in ("failed", "running")
            and self.statements_done > 0
        )


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds the migration lock, as published in ``_migration_locks``."""

    backend_pid: int | None
    host: str | None = None
    pid: int | None = None
    user: str | None = None
    since: str | None = None
    heartbeat_at: str | None = None
    version: int | None = None
    statement: str | None = None

    def describe(self) -> str:
        parts = []
        if self.host or self.pid:
            parts.append(f"host {self.host or '?'} pid {self.pid or '?'}")
        parts.append(f"backend pid {self.backend_pid if self.backend_pid is not None else '?'}")
        if self.since:
            parts.append(f"since {self.since}")
        if self.version is not None:
            parts.append(f"running version {self.version}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend_pid": self.backend_pid,
            "host": self.host,
            "pid": self.pid,
            "user": self.user,
            "since": self.since,
            "heartbeat_at": self.heartbeat_at,
            "version": self.version,
            "statement": self.statement,
        }


@dataclass(frozen=True, slots=True)
class Blocker:
    """A session that blocks the run's backend (``pg_blocking_pids``), as sampled."""

    pid: int
    user: str | None = None
    application_name: str | None = None
    client_addr: str | None = None
    state: str | None = None
    xact_age_s: float | None = None  # how long its transaction has been open
    query: str | None = None  # the first ~80 characters

    def describe(self) -> str:
        parts = [f"pid {self.pid}"]
        if self.application_name:
            parts.append(f"app={self.application_name}")
        if self.user:
            parts.append(f"user={self.user}")
        if self.client_addr:
            parts.append(f"from {self.client_addr}")
        if self.state:
            parts.append(self.state)
        if self.xact_age_s is not None:
            parts.append(_age(self.xact_age_s))
        if self.query:
            parts.append(repr(self.query))
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "user": self.user,
            "application_name": self.application_name,
            "client_addr": self.client_addr,
            "state": self.state,
            "xact_age_s": self.xact_age_s,
            "query": self.query,
        }


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@dataclass(frozen=True, slots=True)
class MigrateStep:
    migration: Migration
    resume_from: int = 0  # statements already applied (no-transaction resume)


@dataclass(frozen=True, slots=True)
class RollbackStep:
    version: int
    name: str
    filename: str
    sql: SqlFile
    source: str  # "file" or "history"


@dataclass(frozen=True, slots=True)
class MigratePlan:
    """What to apply. ``unsettled``: issues only the lock holder may judge (an
    interrupted no-transaction run whose runner may be alive); a plan made without the
    lock keeps those versions as pending so that the run takes the lock and looks again."""

    steps: tuple[MigrateStep, ...]
    warnings: tuple[str, ...] = ()
    unsettled: tuple[Issue, ...] = ()


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    steps: tuple[RollbackStep, ...]
    warnings: tuple[str, ...] = ()


IssueCode = Literal[
    "missing_file",  # applied, file gone                  (force allows)
    "checksum_mismatch",  # applied, file edited since         (force allows)
    "resume_required",  # no-transaction run stopped half-way  (resume allows)
    "resume_changed",  # ... and its file changed since       (never allowed)
    "out_of_order",  # pending, older than newest applied   (allow_out_of_order allows)
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One way in which the files on disk and the history disagree.

    ``message`` says what is wrong; :func:`asyncmig.planner.issue_error` turns it into
    the typed error with what to do about it. ``row`` is the version's history row.
    """

    code: IssueCode
    version: int
    message: str
    path: Path | None = None
    row: HistoryRow | None = None
    disk_checksum: str | None = None

    @property
    def allowed_by(self) -> str | None:
        """The option that turns this issue from a refusal into a warning (or a resume)."""
        return {
            "missing_file": "force",
            "checksum_mismatch": "force",
            "resume_required": "resume",
            "out_of_order": "allow_out_of_order",
        }.get(self.code)

    @property
    def needs_lock(self) -> bool:
        """True if only the lock holder can judge it (the runner may still be alive)."""
        return self.code in ("resume_required", "resume_changed")


@dataclass(frozen=True, slots=True)
class InvalidIndex:
    """An INVALID index (``pg_index.indisvalid`` false) that no build is creating now."""

    schema: str
    name: str
    table: str  # schema-qualified
    definition: str  # pg_get_indexdef

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.qualified,
            "table": self.table,
            "definition": self.definition,
        }
