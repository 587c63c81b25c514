"""Events, errors and reports as plain text: shared by the plain and terminal renderers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any, assert_never

from ...durations import format_duration
from ...errors import AsyncmigError, LockTimeoutError, MigrationError
from ...events import (
    Event,
    LockAcquired,
    LockReclaimed,
    LockReleased,
    LockRetry,
    LockWaiting,
    Message,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    RunFinished,
    RunStarted,
    ServerNotice,
    StatementFinished,
    StatementPlanned,
    StatementProgress,
    StatementStarted,
)
from ...models import Blocker
from ...reports import StatusReport, ValidationReport, VersionStatus

__all__ = [
    "RANGE_PARTS",
    "applied_when",
    "bar",
    "blocked_by",
    "describe_event",
    "error_line",
    "error_lines",
    "fmt_ms",
    "notes",
    "plural",
    "progress_line",
    "retry_line",
    "state_label",
    "status_footer",
    "validation_footer",
    "version_ranges",
    "where",
]

RANGE_PARTS = 8  # a summary names at most this many ranges, then how many more


def fmt_ms(value: float | None) -> str:
    return "?" if value is None else format_duration(value / 1000)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def version_ranges(versions: Sequence[int], order: Sequence[int] | None = None) -> str:
    """Versions as ranges: ``1–300``; ``1–3, 5, 7–9``.

    A range is a run of versions that are neighbours in ``order`` (the run's plan, so
    timestamp versions such as ``20261126153000`` form ranges too), or, without it,
    consecutive integers; ascending or descending (a rollback's ``300–1``). At most
    :data:`RANGE_PARTS` parts, then how many more.
    """
    if not versions:
        return ""
    position = {v: i for i, v in enumerate(order)} if order else None

    def key(v: int) -> int | None:
        return v if position is None else position.get(v)

    runs: list[list[int]] = []
    step = 0  # +1 / -1 once the last run has two versions
    for v in versions:
        if runs:
            here, last = key(v), key(runs[-1][-1])
            delta = None if here is None or last is None else here - last
            if delta in ((step,) if step else (1, -1)):
                runs[-1].append(v)
                step = delta or 0
                continue
        runs.append([v])
        step = 0
    parts = [f"{r[0]}" if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs[:RANGE_PARTS]]
    if len(runs) > RANGE_PARTS:
        parts.append(f"and {len(runs) - RANGE_PARTS} more")
    return ", ".join(parts)


def describe_event(event: Event, order: Sequence[int] | None = None) -> str | None:
    """One line of text for an event (plain logs and rich's scrolling lines).

    ``order``: the run's planned versions, so that a summary's ranges follow the plan.
    """
    match event:
        case RunStarted(operation=op, plan=plan, dry_run=dry, atomic=atomic):
            if not plan:
                return f"{op}: nothing to do"
            what = "would apply" if dry and op == "migrate" else "applying"
            if op == "rollback":
                what = "would roll back" if dry else "rolling back"
            mode = " in one transaction" if atomic else ""
            if len(plan) <= 3:
                names = ": " + ", ".join(p.filename for p in plan)
            else:
                versions = [p.version for p in plan]
                names = ", " + version_ranges(versions, versions)
            return f"{op}: {what} {plural(len(plan), 'migration')}{mode}{names}"
        case LockWaiting(holder=holder, waited_s=waited):
            who = holder.describe() if holder else "another session"
            return f"waiting for the migration lock held by {who} ({waited:.0f}s so far)"
        case LockAcquired(waited_s=waited, backend_pid=pid):
            return f"lock acquired after {format_duration(waited)} (backend pid {pid})"
        case LockReclaimed(holder=holder, heartbeat_age_s=age):
            return (
                f"reclaimed the lock from a stale holder ({holder.describe()}; "
                f"no heartbeat for {format_duration(age)})"
            )
        case LockReleased(held_s=held):
            return f"lock released (held {format_duration(held)})"
        case MigrationStarted(version=v, migration=name, statements=n, transactional=tx):
            arrow = "rolling back" if event.direction == "down" else "applying"
            mode = "one transaction" if tx else "no transaction"
            return f"{v} {name}: {arrow} ({plural(n, 'statement')}, {mode})"
        case StatementStarted(version=v, index=i, total=n, line=line, preview=text):
            return f"{v} [{i}/{n}] line {line}: {text}"
        case StatementFinished(version=v, index=i, total=n, status=tag, duration_ms=ms):
            return f"{v} [{i}/{n}] {tag or 'OK'} ({fmt_ms(ms)})"
        case StatementPlanned(version=v, index=i, total=n, line=line, preview=text):
            return f"{v} [{i}/{n}] line {line}: {text}"
        case StatementProgress(version=v, index=i, total=n, elapsed_s=t):
            return f"{v} [{i}/{n}] {progress_line(event, full=True)} (running {format_duration(t)})"
        case LockRetry():
            return retry_line(event, full=True)
        case ServerNotice(version=v, severity=sev, message=msg):
            prefix = f"{v} " if v is not None else ""
            return f"{prefix}{sev}: {msg}"
        case Message(level=level, text=text):
            return f"{level}: {text}"
        case MigrationFinished(version=v, migration=name, direction=d, duration_ms=ms):
            return f"{v} {name}: {'rolled back' if d == 'down' else 'applied'} in {fmt_ms(ms)}"
        case MigrationFailed(version=v, migration=name, duration_ms=ms, error=err):
            return f"{v} {name}: FAILED after {fmt_ms(ms)}: {error_line(err)}"
        case RunFinished(operation=op, applied=applied, rolled_back=back, ok=ok, dry_run=dry):
            took = fmt_ms(event.duration_ms)
            if dry:
                return f"{op}: dry run finished in {took}; nothing was changed"
            done = applied if op != "rollback" else back
            verb = "rolled back" if op == "rollback" else "applied"
            listed = f", {version_ranges(done, order)}" if done else ""
            if not ok:
                return f"{op}: failed after {took}; {verb} {plural(len(done), 'migration')}{listed}"
            return f"{op}: {verb} {plural(len(done), 'migration')}{listed} in {took}"
        case _:
            assert_never(event)


def bar(percent: float, width: int = 12) -> str:
    """A text progress bar: ``▕██████░░░░░░▏ 50%``."""
    filled = round(width * max(0.0, min(percent, 100.0)) / 100)
    return f"▕{'█' * filled}{'░' * (width - filled)}▏ {percent:.0f}%"


def _brief(b: Blocker) -> str:
    """``pid 4242 app=billing idle in transaction 14m`` (the live line's short form)."""
    parts = [f"pid {b.pid}"]
    if b.application_name:
        parts.append(f"app={b.application_name}")
    if b.state:
        parts.append(b.state)
    if b.xact_age_s is not None:
        parts.append(_age(b.xact_age_s))
    return " ".join(parts)


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def blocked_by(blockers: Sequence[Blocker], *, full: bool = False) -> str:
    """``blocked by pid 4242 app=billing idle in transaction 14m`` (the first blocker;
    ``full``: each, with user, address and query), or ``""`` when none was seen."""
    if not blockers:
        return ""
    if full:
        return "blocked by " + "; ".join(b.describe() for b in blockers)
    more = f" (+{len(blockers) - 1} more)" if len(blockers) > 1 else ""
    return f"blocked by {_brief(blockers[0])}{more}"


def progress_line(event: StatementProgress, *, full: bool = False) -> str:
    """What a long statement is doing: its phase, a bar and units where a view says so,
    or its lock wait with the blockers."""
    if event.waiting_for_lock:
        who = blocked_by(event.blockers, full=full)
        return "waiting for a lock" + (f" — {who}" if who else "")
    parts = [event.phase or "running"]
    if event.percent is not None:  # on a terminal, the bar first: it must not be cut off
        if full:
            parts.append(f"{event.percent:.1f}%")
        else:
            parts.insert(0, bar(event.percent))
    if event.done is not None:
        parts.append(f"{event.done}/{event.units_total}" if event.units_total else f"{event.done}")
    return " ".join(parts)


def retry_line(event: LockRetry, *, full: bool = False) -> str:
    """``waiting for lock on public.orders (attempt 3/10) — blocked by pid 4242
    app=billing idle in transaction 14m``, then when the next attempt starts."""
    where = f"lock on {event.relation}" if event.relation else "a lock"
    head = f"{event.version} " if full else ""
    text = f"{head}waiting for {where} (attempt {event.attempt}/{event.attempts})"
    who = blocked_by(event.blockers, full=full)
    if who:
        text += f" — {who}"
    if full:
        text += (
            f"; not granted within {format_duration(event.lock_timeout_s)}, "
            f"trying again in {format_duration(event.sleep_s)}"
        )
    return text


def error_line(err: dict[str, Any]) -> str:
    text = str(err.get("server_message") or err.get("message") or "")
    where = ""
    if err.get("path"):
        where = f" at {err['path']}"
        if err.get("line"):
            where += f":{err['line']}"
    state = f" [SQLSTATE {err['sqlstate']}]" if err.get("sqlstate") else ""
    return f"{text}{state}{where}"


def error_lines(exc: BaseException, *, verbose: bool) -> list[str]:
    """Human-readable lines for an error: message, then the fields that help fix it."""
    if isinstance(exc, AsyncmigError):
        lines = [f"error: {exc}"]
    else:
        lines = [f"internal error: {type(exc).__name__}: {exc}"]
        if not verbose:
            lines.append("  (run with -v for the traceback)")
    if isinstance(exc, MigrationError):
        if exc.sqlstate:
            lines.append(f"  SQLSTATE {exc.sqlstate}")
        if exc.detail:
            lines.append(f"  detail: {exc.detail}")
        if exc.hint:
            lines.append(f"  hint: {exc.hint}")
        if exc.applied:
            lines.append(f"  applied before the failure: {', '.join(map(str, exc.applied))}")
    if isinstance(exc, LockTimeoutError) and exc.holder is not None:
        lines.append(f"  held by {exc.holder.describe()}")
        if exc.holder.statement:
            lines.append(f"  running: {exc.holder.statement}")
    if verbose:
        cause = exc.__cause__
        while cause is not None:
            lines.append(f"  caused by {type(cause).__name__}: {cause}")
            cause = cause.__cause__
        if not isinstance(exc, AsyncmigError):
            import traceback

            lines += traceback.format_exception(exc)
    return lines


def state_label(v: VersionStatus) -> str:
    label = v.state.replace("_", " ")
    if v.state in ("failed", "running") and v.statements_done is not None and v.statements_total:
        label += f" ({v.statements_done}/{v.statements_total})"
    return label


def notes(v: VersionStatus) -> list[str]:
    notes = []
    if v.modified:
        notes.append("modified")
    if v.missing_file:
        notes.append("missing file")
    if v.error_sqlstate:
        notes.append(f"SQLSTATE {v.error_sqlstate}")
    if not v.has_rollback and not v.missing_file:
        notes.append("no rollback")
    return notes


def applied_when(v: VersionStatus) -> str:
    if v.applied_at is None:
        return "-"
    return v.applied_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def where(path: str | None, line: int | None, column: int | None) -> str:
    if not path:
        return ""
    out = path
    if line:
        out += f":{line}"
        if column:
            out += f":{column}"
    return out + ": "


def status_footer(report: StatusReport) -> str:
    current = report.current_version
    pending = len(report.pending)
    parts = [
        f"schema {report.schema}",
        f"current version {current}" if current is not None else "nothing applied",
        f"{pending} pending",
    ]
    drift = sum(1 for v in report.versions if v.modified)
    missing = sum(1 for v in report.versions if v.missing_file)
    failed = sum(1 for v in report.versions if v.state == "failed")
    if drift:
        parts.append(f"{drift} modified")
    if missing:
        parts.append(f"{missing} missing file{'s' if missing != 1 else ''}")
    if failed:
        parts.append(f"{failed} failed")
    if report.invalid_indexes:
        names = ", ".join(i.qualified for i in report.invalid_indexes)
        parts.append(f"INVALID index{'es' if len(report.invalid_indexes) != 1 else ''}: {names}")
    return " · ".join(parts)


def validation_footer(report: ValidationReport) -> str:
    scope = "files and history" if report.online else "files only (offline)"
    errors, warnings = len(report.errors), len(report.warnings)
    if report.ok:
        extra = f" ({plural(warnings, 'warning')})" if warnings else ""
        return f"validation passed: {scope}{extra}"
    return f"validation failed: {plural(errors, 'error')}, {plural(warnings, 'warning')}; {scope}"
