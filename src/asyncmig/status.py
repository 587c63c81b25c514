"""Status and validation reports: files on disk and history rows, side by side.

Pure functions over values (the loader's :class:`MigrationSet`, the history's rows);
:class:`~asyncmig.Migrator` reads both and calls these. Both views derive from the
planner's one rule set, :func:`asyncmig.planner.check`: a version the planner refuses
or would apply is marked so here, and ``validate`` reports the same issues.

Both also list the INVALID indexes of the database (a failed concurrent build leaves
one; :meth:`History.invalid_indexes <asyncmig.history.History.invalid_indexes>`): in
every schema but the system ones, not only those the migrations name, since a file's
statements may reach any schema (search_path, qualified names, functions). An index
that a build is creating right now is not listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import MigrationFileError
from .loader import Migration, MigrationSet
from .models import HistoryRow, InvalidIndex, Issue
from .planner import check
from .reports import State, StatusReport, ValidationIssue, VersionStatus

__all__ = ["build_status", "file_issue", "history_issues", "invalid_index_issues"]

_STATES: dict[str, State] = {
    "completed": "applied",
    "failed": "failed",
    "running": "running",
    "rolled_back": "rolled_back",
}


def build_status(
    migrations: MigrationSet,
    rows: Mapping[int, HistoryRow] | None,
    schema: str,
    invalid_indexes: Sequence[InvalidIndex] = (),
) -> StatusReport:
    """Disk and history side by side, one entry per version; the INVALID indexes."""
    rows = rows or {}
    codes: dict[int, list[str]] = {}
    for issue in check(migrations, rows):
        codes.setdefault(issue.version, []).append(issue.code)
    versions = sorted({m.version for m in migrations.migrations} | set(rows))
    out: list[VersionStatus] = []
    for v in versions:
        mig = migrations.get(v)
        row = rows.get(v)
        issues = tuple(codes.get(v, ()))
        applied = row is not None and row.status == "completed"
        out.append(
            VersionStatus(
                version=v,
                name=mig.name if mig else (row.filename if row else ""),
                filename=mig.filename if mig else (row.filename if row else None),
                state=_STATES.get(row.status, "pending") if row else "pending",
                applied_at=row.executed_at if row and applied else None,
                applied_by=row.executed_by if row and applied else None,
                duration_ms=row.execution_time_ms if row else None,
                checksum=row.checksum if row else (mig.forward.checksum if mig else None),
                modified="checksum_mismatch" in issues,
                missing_file="missing_file" in issues,
                has_rollback=bool(mig and mig.rollback) or bool(row and row.rollback_sql),
                statements_done=row.statements_done if row else None,
                statements_total=row.statements_total if row else _count(mig),
                error_message=row.error_message if row else None,
                error_sqlstate=row.error_sqlstate if row else None,
                on_disk=mig is not None,
                issues=issues,
            )
        )
    return StatusReport(
        tuple(out),
        schema=schema,
        history_exists=bool(rows),
        invalid_indexes=tuple(invalid_indexes),
    )


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
        "error",
        code,
        str(err),
        None,
        str(err.path) if err.path else None,
        err.line,
        err.column,
    )


def history_issues(
    migrations: MigrationSet, rows: Mapping[int, HistoryRow]
) -> list[ValidationIssue]:
    """Every issue of :func:`~asyncmig.planner.check`, as validation errors."""
    return [_validation_issue(i) for i in check(migrations, rows)]


def invalid_index_issues(invalid: Sequence[InvalidIndex]) -> list[ValidationIssue]:
    """One error per INVALID index: queries do not use it, writes still pay for it."""
    return [
        ValidationIssue(
            "error",
            "invalid_index",
            f"index {i.qualified} on {i.table} is INVALID (a concurrent build failed or was "
            f"cancelled; no build is running now); if a no-transaction migration builds it, "
            f"`asyncmig migrate --resume --rebuild-invalid` drops it concurrently and builds "
            f"it again; otherwise drop it (DROP INDEX CONCURRENTLY) and create it again: "
            f"{i.definition}",
        )
        for i in invalid
    ]


_REMEDY = {
    "missing_file": "restore the file",
    "checksum_mismatch": "revert the edit and put the change in a new migration",
    "resume_required": "run `asyncmig migrate --resume` once its cause is fixed",
    "resume_changed": "restore the file as it was before resuming",
    "out_of_order": "renumber it after the applied ones, or pass --allow-out-of-order",
}


def _validation_issue(issue: Issue) -> ValidationIssue:
    return ValidationIssue(
        "error",
        issue.code,
        f"{issue.message}; {_REMEDY[issue.code]}",
        issue.version,
        str(issue.path) if issue.path else None,
    )


def _count(mig: Migration | None) -> int | None:
    """Statements of a pending file; None when it cannot be split (see ``validate``)."""
    if mig is None:
        return None
    try:
        return len(mig.forward.statements)
    except MigrationFileError:
        return None
