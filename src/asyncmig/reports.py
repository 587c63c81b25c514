"""Immutable results of library calls (what ``await m.migrate()`` & co. return)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .models import InvalidIndex

__all__ = [
    "AppliedMigration",
    "MigrateReport",
    "RollbackReport",
    "StatusReport",
    "ValidationIssue",
    "ValidationReport",
    "VersionStatus",
]


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    filename: str
    duration_ms: float
    statements: int
    direction: Literal["up", "down"] = "up"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "filename": self.filename,
            "duration_ms": round(self.duration_ms, 3),
            "statements": self.statements,
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What a ``migrate`` run did. ``planned`` is filled for dry runs too."""

    applied: tuple[AppliedMigration, ...] = ()
    planned: tuple[int, ...] = ()
    dry_run: bool = False
    duration_ms: float = 0.0
    lock_waited_s: float = 0.0
    took_lock: bool = False

    @property
    def nothing_to_do(self) -> bool:
        return not self.planned

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(m.version for m in self.applied)


@dataclass(frozen=True, slots=True)
class RollbackReport:
    rolled_back: tuple[AppliedMigration, ...] = ()
    planned: tuple[int, ...] = ()
    dry_run: bool = False
    duration_ms: float = 0.0

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(m.version for m in self.rolled_back)


State = Literal["applied", "pending", "failed", "rolled_back", "running"]


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version as ``status`` shows it: disk and history side by side."""

    version: int
    name: str
    filename: str | None
    state: State
    applied_at: datetime | None = None
    applied_by: str | None = None
    duration_ms: int | None = None
    checksum: str | None = None
    modified: bool = False  # applied file edited since (checksum drift)
    missing_file: bool = False  # in history, not on disk
    has_rollback: bool = False
    statements_done: int | None = None
    statements_total: int | None = None
    error_message: str | None = None
    error_sqlstate: str | None = None
    on_disk: bool = True  # its migration file exists
    issues: tuple[str, ...] = ()  # planner.check's codes for this version

    @property
    def pending(self) -> bool:
        """What a run would apply: on disk and not applied. A ``failed`` or ``running``
        version is pending too (a leader may be applying it; a failure needs a run)."""
        return self.on_disk and self.state != "applied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "filename": self.filename,
            "state": self.state,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "applied_by": self.applied_by,
            "duration_ms": self.duration_ms,
            "checksum": self.checksum,
            "modified": self.modified,
            "missing_file": self.missing_file,
            "has_rollback": self.has_rollback,
            "statements_done": self.statements_done,
            "statements_total": self.statements_total,
            "error_message": self.error_message,
            "error_sqlstate": self.error_sqlstate,
            "pending": self.pending,
            "issues": list(self.issues),
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    versions: tuple[VersionStatus, ...] = ()
    schema: str = "public"
    history_exists: bool = False
    invalid_indexes: tuple[InvalidIndex, ...] = ()  # left by failed concurrent builds

    @property
    def pending(self) -> tuple[VersionStatus, ...]:
        return tuple(v for v in self.versions if v.pending)

    @property
    def current_version(self) -> int | None:
        applied = [v.version for v in self.versions if v.state == "applied"]
        return max(applied) if applied else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "current_version": self.current_version,
            "pending": [v.version for v in self.pending],
            "versions": [v.to_dict() for v in self.versions],
            "invalid_indexes": [i.to_dict() for i in self.invalid_indexes],
        }


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    level: Literal["error", "warning"]
    code: str  # e.g. "checksum_mismatch", "split_error", "missing_rollback"
    message: str
    version: int | None = None
    path: str | None = None
    line: int | None = None
    column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "version": self.version,
            "path": self.path,
            "line": self.line,
            "column": self.column,
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    issues: tuple[ValidationIssue, ...] = field(default=())
    online: bool = False  # whether history was compared too

    @property
    def ok(self) -> bool:
        return not any(i.level == "error" for i in self.issues)

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        return tuple(i for i in self.issues if i.level == "error")

    @property
    def warnings(self) -> tuple[ValidationIssue, ...]:
        return tuple(i for i in self.issues if i.level == "warning")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "online": self.online, "issues": [i.to_dict() for i in self.issues]}
