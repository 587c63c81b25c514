"""Typed, immutable events a run emits, in the order they happen.

Every event is a frozen dataclass with a ``ts`` (UTC) and a stable ``event`` name used
in JSON lines (``to_dict()`` / ``to_json()``). :data:`Event` is the union of these
classes (their base is :class:`EventBase`), so a renderer's ``match`` ends in
``case _: assert_never(event)`` and mypy says which event it forgot::

    RunStarted            operation, plan (PlanItem...), dry_run
    LockWaiting           holder (LockHolder or None), waited_s          (every few seconds)
    LockAcquired          waited_s, backend_pid
    LockReclaimed         holder, heartbeat_age_s                         (stale holder ended)
    LockReleased          held_s
    MigrationStarted      version, name, filename, statements, transactional, direction
    StatementStarted      version, index, total, line, column, keyword, preview
    StatementFinished     version, index, total, status, duration_ms
    StatementPlanned      version, index, total, line, column, keyword, preview   (dry run)
    StatementProgress     version, index, phase, done, total, percent, waiting_for_lock,
                          blockers         (a statement running longer than about 1 s)
    LockRetry             version, attempt, attempts, lock_timeout_s, sleep_s, blockers,
                          relation         (a DDL lock not granted in time; retrying)
    ServerNotice          version, severity, message, detail, hint       (RAISE NOTICE …)
    Message               level, text        (loader notices, warnings, resume hints)
    MigrationFinished     version, name, direction, duration_ms, statements
    MigrationFailed       version, name, direction, duration_ms, error (fields of the error)
    RunFinished           operation, applied, rolled_back, duration_ms, dry_run, ok
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeAlias

from .models import Blocker, LockHolder

__all__ = [
    "Emitter",
    "Event",
    "EventBase",
    "EventCallback",
    "LockAcquired",
    "LockReclaimed",
    "LockReleased",
    "LockRetry",
    "LockWaiting",
    "Message",
    "MigrationFailed",
    "MigrationFinished",
    "MigrationStarted",
    "PlanItem",
    "RunFinished",
    "RunStarted",
    "ServerNotice",
    "StatementFinished",
    "StatementPlanned",
    "StatementProgress",
    "StatementStarted",
]

Direction = Literal["up", "down"]
Operation = Literal["migrate", "rollback", "validate", "status", "seed"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBase:
    """What every event has: a timestamp and a JSON name. Annotate with :data:`Event`."""

    name: ClassVar[str] = "event"
    ts: datetime = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name, "ts": self.ts.isoformat()}
        for f in fields(self):
            if f.name == "ts":
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class Emitter:
    """Delivers events to the run's callbacks (sync or async), in order.

    ``active`` is False when nobody listens, so hot paths can skip building events.
    """

    __slots__ = ("_callbacks", "active")

    def __init__(self, *callbacks: EventCallback | None) -> None:
        self._callbacks = [cb for cb in callbacks if cb is not None]
        self.active = bool(self._callbacks)

    async def __call__(self, event: Event) -> None:
        for cb in self._callbacks:
            result = cb(event)
            if result is not None and inspect.isawaitable(result):
                await result


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One migration the run will apply (``up``) or undo (``down``)."""

    version: int
    name: str
    filename: str
    statements: int
    transactional: bool
    direction: Direction = "up"
    resume_from: int = 0  # statements already done (no-transaction resume)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "filename": self.filename,
            "statements": self.statements,
            "transactional": self.transactional,
            "direction": self.direction,
            "resume_from": self.resume_from,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(EventBase):
    name: ClassVar[str] = "run_started"
    operation: Operation
    plan: tuple[PlanItem, ...]
    dry_run: bool = False
    atomic: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LockWaiting(EventBase):
    name: ClassVar[str] = "lock_waiting"
    holder: LockHolder | None
    waited_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LockAcquired(EventBase):
    name: ClassVar[str] = "lock_acquired"
    waited_s: float
    backend_pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LockReclaimed(EventBase):
    name: ClassVar[str] = "lock_reclaimed"
    holder: LockHolder
    heartbeat_age_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LockReleased(EventBase):
    name: ClassVar[str] = "lock_released"
    held_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationStarted(EventBase):
    name: ClassVar[str] = "migration_started"
    version: int
    migration: str
    filename: str
    statements: int
    transactional: bool
    direction: Direction = "up"


@dataclass(frozen=True, slots=True, kw_only=True)
class _StatementEvent(EventBase):
    version: int
    index: int  # 1-based
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _StatementAt(_StatementEvent):
    line: int
    column: int
    keyword: str
    preview: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementStarted(_StatementAt):
    name: ClassVar[str] = "statement_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementFinished(_StatementEvent):
    name: ClassVar[str] = "statement_finished"
    status: str  # the server's command tag, e.g. "CREATE TABLE", "INSERT 0 3"
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementPlanned(_StatementAt):
    """A statement a dry run would execute (nothing is sent)."""

    name: ClassVar[str] = "statement_planned"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementProgress(_StatementEvent):
    """A long statement's progress, read on the heartbeat connection: a
    ``pg_stat_progress_*`` view's phase and units (``done`` of ``total``, ``percent``
    where one exists), or a lock wait with its blockers."""

    name: ClassVar[str] = "statement_progress"
    elapsed_s: float
    phase: str | None = None
    done: int | None = None
    units_total: int | None = None
    percent: float | None = None
    waiting_for_lock: bool = False
    blockers: tuple[Blocker, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LockRetry(EventBase):
    """A transactional unit (or a no-transaction statement) was not granted a lock
    within its DDL lock timeout (SQLSTATE 55P03): it rolled back and runs again after
    ``sleep_s``. ``blockers`` are the sessions that held it up."""

    name: ClassVar[str] = "lock_retry"
    version: int
    index: int | None
    attempt: int  # the attempt that failed, 1-based
    attempts: int
    lock_timeout_s: float
    sleep_s: float
    relation: str | None = None
    blockers: tuple[Blocker, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerNotice(EventBase):
    name: ClassVar[str] = "server_notice"
    version: int | None
    severity: str
    message: str
    detail: str | None = None
    hint: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(EventBase):
    name: ClassVar[str] = "message"
    level: Literal["info", "notice", "warning", "error"]
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationFinished(EventBase):
    name: ClassVar[str] = "migration_finished"
    version: int
    migration: str
    direction: Direction
    duration_ms: float
    statements: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationFailed(EventBase):
    name: ClassVar[str] = "migration_failed"
    version: int
    migration: str
    direction: Direction
    duration_ms: float
    error: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(EventBase):
    name: ClassVar[str] = "run_finished"
    operation: Operation
    applied: tuple[int, ...] = ()
    rolled_back: tuple[int, ...] = ()
    duration_ms: float = 0.0
    dry_run: bool = False
    ok: bool = True


# Every event a run emits: renderers match on it exhaustively (mypy checks assert_never).
Event: TypeAlias = (
    RunStarted
    | LockWaiting
    | LockAcquired
    | LockReclaimed
    | LockReleased
    | MigrationStarted
    | StatementStarted
    | StatementFinished
    | StatementPlanned
    | StatementProgress
    | LockRetry
    | ServerNotice
    | Message
    | MigrationFinished
    | MigrationFailed
    | RunFinished
)
EventCallback = Callable[[Event], Awaitable[None] | None]


def preview(sql: str, width: int = 80) -> str:
    """The first non-empty, non-comment line of a statement, at most ``width`` characters.

    Looks at lines one at a time (a data migration's statement can be megabytes long).
    """
    start = 0
    size = len(sql)
    while start < size:
        end = sql.find("\n", start)
        if end < 0:
            end = size
        line = sql[start : min(end, start + 4 * width)].strip()
        if line and not line.startswith("--"):
            return line if len(line) <= width else line[: width - 1] + "…"
        start = end + 1
    return ""
