"""Status and validation reports: files on disk and history rows, side by side.

Pure functions over values (the loader's :class:`MigrationSet`, the history's rows);
:class:`~asyncmig.Migrator` reads both and calls these.
"""

from __future__ import annotations

from typing import Any

from .errors import MigrationFileError
from .history import HistoryRow
from .loader import Migration, MigrationSet
from .reports import StatusReport, ValidationIssue, VersionStatus

__all__ = ["build_status", "file_issue", "history_issues"]


def build_status(
    migrations: MigrationSet, rows: dict[int, HistoryRow] | None, schema: str
) -> StatusReport:
    """Disk and history side by side, one entry per version."""
    rows = rows or {}
    versions = sorted({m.version for m in migrations.migrations} | set(rows))
    out: list[VersionStatus] = []
    for v in versions:
        mig = migrations.get(v)
        row = rows.get(v)
        state: Any = "pending"
        if row is not None:
            state = {"completed": "applied"}.get(row.status, row.status)
            if state == "pending":
                state = "pending"
        out.append(
            VersionStatus(
                version=v,
                name=mig.name if mig else (row.filename if row else ""),
                filename=mig.filename if mig else (row.filename if row else None),
                state=state,
                applied_at=row.executed_at if row and row.status == "completed" else None,
                applied_by=row.executed_by if row and row.status == "completed" else None,
                duration_ms=row.execution_time_ms if row else None,
                checksum=row.checksum if row else (mig.forward.checksum if mig else None),
                modified=bool(
                    mig
                    and row
                    and row.status == "completed"
                    and row.checksum != mig.forward.checksum
                ),
                missing_file=bool(row and not mig and row.status == "completed"),
                has_rollback=bool(mig and mig.rollback) or bool(row and row.rollback_sql),
                statements_done=row.statements_done if row else None,
                statements_total=row.statements_total if row else _count(mig),
                error_message=row.error_message if row else None,
                error_sqlstate=row.error_sqlstate if row else None,
            )
        )
    return StatusReport(tuple(out), schema=schema, history_exists=bool(rows))


def file_issue(err: MigrationFileError) -> ValidationIssue:
    code = {
        "FileNameError": "bad_filename",
        "DuplicateVersionError": "duplicate_version",
        "AmbiguousRollbackError": "ambiguous_rollback",
        "EncodingError": "encoding",
        "DirectiveError": "directive",
        "SplitError": "split_error",
        "TransactionControlError": "transaction_control",
        "MissingDirectiveError": "missing_directive",
    }.get(type(err).__name__, "file_error")
    return ValidationIssue(
        "error", code, str(err), None,
        str(err.path) if err.path else None, err.line, err.column,
    )  # fmt: skip


def history_issues(migrations: MigrationSet, rows: dict[int, HistoryRow]) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    applied = sorted(v for v, r in rows.items() if r.status == "completed")
    newest = applied[-1] if applied else None
    for v in applied:
        mig = migrations.get(v)
        row = rows[v]
        if mig is None:
            issues.append(ValidationIssue(
                "error", "missing_file",
                f"version {v} ({row.filename}) is applied but its file is missing", v,
            ))  # fmt: skip
        elif mig.forward.checksum != row.checksum:
            issues.append(ValidationIssue(
                "error", "checksum_mismatch",
                f"{mig.forward.path} changed after it was applied (history "
                f"{row.checksum[:12]}…, disk {mig.forward.checksum[:12]}…)", v,
                str(mig.forward.path),
            ))  # fmt: skip
    for mig in migrations.migrations:
        prev = rows.get(mig.version)
        if prev is not None and prev.status == "completed":
            continue
        if (
            prev is not None
            and not prev.transactional
            and prev.statements_done > 0
            and (prev.status in ("failed", "running"))
        ):
            issues.append(ValidationIssue(
                "error", "resume_required",
                f"version {mig.version} stopped after {prev.statements_done} of "
                f"{prev.statements_total} statements; run `asyncmig migrate --resume`",
                mig.version, str(mig.forward.path),
            ))  # fmt: skip
        if newest is not None and mig.version < newest:
            issues.append(ValidationIssue(
                "error", "out_of_order",
                f"{mig.forward.path} (version {mig.version}) is pending but older than the "
                f"newest applied version {newest}", mig.version, str(mig.forward.path),
            ))  # fmt: skip
    return issues


def _count(mig: Migration | None) -> int | None:
    """Statements of a pending file; None when it cannot be split (see ``validate``)."""
    if mig is None:
        return None
    try:
        return len(mig.forward.statements)
    except MigrationFileError:
        return None
