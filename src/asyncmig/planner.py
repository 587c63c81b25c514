"""Decide what to apply or undo from "versions on disk" and "versions in history".

Pure functions over values (no I/O, no driver import), so every rule is a table test.
One rule set, :func:`check`, lists every way disk and history disagree; every view
derives from it: :func:`plan_migrate` refuses the first blocking issue unless an option
allows it, ``validate`` reports them all, ``status`` marks versions with them.

* an applied version whose file changed → ``checksum_mismatch`` (``force`` turns it
  into a warning);
* an applied version with no file → ``missing_file`` (``force`` too);
* a no-transaction migration that stopped after *k* statements → ``resume_required``
  (with ``resume``, a step starting at statement *k+1*), and ``resume_changed`` if its
  file changed since (never allowed). Its row may belong to a runner that is still
  alive: only a plan made under the lock judges it (``locked``); a plan made without
  the lock keeps the version pending, so the run takes the lock and looks again;
* a pending version older than the newest applied one → ``out_of_order`` unless
  ``allow_out_of_order``;
* a transactional migration that failed is simply pending again: its statements were
  rolled back with it, so there is no "dirty" state to repair;
* ``atomic``: every planned file must run in a transaction (checked on each plan, so
  also on the one made under the lock, which may differ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .errors import (
    AsyncmigError,
    ChecksumMismatchError,
    ConfigError,
    MissingFileError,
    OutOfOrderError,
    ResumeRequiredError,
    RollbackUnavailableError,
)
from .loader import Migration, MigrationSet, SqlFile
from .models import (
    HistoryRow,
    Issue,
    MigratePlan,
    MigrateStep,
    RollbackPlan,
    RollbackStep,
)

__all__ = [
    "MigratePlan",
    "MigrateStep",
    "RollbackPlan",
    "RollbackStep",
    "applied_versions",
    "check",
    "issue_error",
    "plan_migrate",
    "plan_rollback",
]

Rows = Mapping[int, HistoryRow]


def applied_versions(rows: Rows) -> list[int]:
    return sorted(v for v, r in rows.items() if r.status == "completed")


def check(migrations: MigrationSet, history: Rows) -> list[Issue]:
    """Every disagreement between disk and history: applied versions first, then
    pending ones, each in version order (the order :func:`plan_migrate` refuses them)."""
    applied = applied_versions(history)
    issues = [
        issue
        for version in applied
        if (issue := _applied_issue(history[version], migrations.get(version))) is not None
    ]
    newest = applied[-1] if applied else None
    for mig in migrations.migrations:
        prev = history.get(mig.version)
        if prev is None or prev.status != "completed":
            issues += _pending_issues(mig, prev, newest)
    return issues


def _applied_issue(row: HistoryRow, mig: Migration | None) -> Issue | None:
    """An applied version whose file is gone or changed."""
    v = row.version
    if mig is None:
        text = f"version {v} ({row.filename}) is applied but its file is missing from the "
        return Issue("missing_file", v, text + "migrations directory", None, row)
    disk = mig.forward
    if disk.checksum == row.checksum:
        return None
    text = f"{disk.path} changed after it was applied (checksum {row.checksum[:12]}… in "
    text += f"history, {disk.checksum[:12]}… on disk)"
    return Issue("checksum_mismatch", v, text, disk.path, row, disk.checksum)


def _pending_issues(mig: Migration, prev: HistoryRow | None, newest: int | None) -> list[Issue]:
    """A pending version that stopped half-way (and changed since), or is out of order."""
    v, path, checksum = mig.version, mig.forward.path, mig.forward.checksum
    issues: list[Issue] = []
    if prev is not None and prev.interrupted:
        text = f"migration {v} ({prev.filename}) runs without a transaction and stopped "
        text += f"after statement {prev.statements_done} of {prev.statements_total}"
        if prev.error_message:
            text += f" ({prev.error_message})"
        if prev.status == "running":
            text += "; or it is still running (`asyncmig unlock` shows the lock's holder)"
        issues.append(Issue("resume_required", v, text, path, prev, checksum))
        if checksum != prev.checksum:
            text = f"{path} changed since its interrupted run (statements 1–"
            text += f"{prev.statements_done} of the old file stay committed)"
            issues.append(Issue("resume_changed", v, text, path, prev, checksum))
    if newest is not None and v < newest:
        text = f"migration {v} ({path.name}) is pending but older than the newest applied "
        issues.append(Issue("out_of_order", v, text + f"version {newest}", path, prev))
    return issues


def issue_error(issue: Issue, history_table: str = "_migrations") -> AsyncmigError:
    """The typed error for ``issue``, saying what to do about it. ``history_table``
    (``schema._migrations``) names where a row to delete lives."""
    v, row = issue.version, issue.row
    if issue.code == "missing_file":
        return MissingFileError(
            issue.message + "; restore the file, or pass --force to run anyway", version=v
        )
    if issue.code == "checksum_mismatch":
        assert row is not None and issue.disk_checksum is not None
        return ChecksumMismatchError(
            issue.message + "; revert the edit and put the change in a new migration, or "
            "pass --force to run anyway",
            version=v,
            expected=row.checksum,
            actual=issue.disk_checksum,
            path=issue.path,
        )
    if issue.code == "out_of_order":
        return OutOfOrderError(
            issue.message + "; renumber it after the applied ones, or pass --allow-out-of-order",
            version=v,
        )
    assert row is not None
    done = row.statements_done
    start_over = (
        f"undo by hand what statements 1–{done} of {issue.path} did (they were committed "
        f"one by one; drop what they created), then delete its row (version {v}) from "
        f"{history_table} and run migrate again to start it over"
    )
    if issue.code == "resume_changed":
        assert issue.disk_checksum is not None
        return ChecksumMismatchError(
            issue.message + "; resuming would skip statements of a different file. Restore "
            f"the file as it was (checksum {row.checksum[:12]}…) and run `asyncmig migrate "
            f"--resume`, or {start_over}.",
            version=v,
            expected=row.checksum,
            actual=issue.disk_checksum,
            path=issue.path,
        )
    stopped = (
        f"migration {v} ({row.filename}) runs without a transaction and its last run "
        f"stopped after statement {done} of {row.statements_total}"
        + (f" ({row.error_message})" if row.error_message else "")
    )
    return ResumeRequiredError(
        stopped + f". That run is over (this run holds the migration lock). Fix the "
        f"cause, then run `asyncmig migrate --resume` to continue at statement {done + 1}; "
        f"or {start_over}.",
        version=v,
        statements_done=done,
    )


def plan_migrate(
    migrations: MigrationSet,
    rows: Rows,
    *,
    steps: int | None = None,
    target: int | None = None,
    force: bool = False,
    allow_out_of_order: bool = False,
    resume: bool = False,
    atomic: bool = False,
    locked: bool = True,
    history_table: str = "_migrations",
) -> MigratePlan:
    """The steps to apply, or the typed error of the first blocking issue.

    ``locked``: the caller holds the migration lock, so an interrupted no-transaction
    run is a dead runner's resume point. Without it, such a version stays pending and
    is listed in ``unsettled`` (never an error: its runner may be working on it).
    """
    issues = check(migrations, rows)
    warnings: list[str] = []
    for issue in issues:
        if issue.code in ("missing_file", "checksum_mismatch"):
            if not force:
                raise issue_error(issue, history_table)
            warnings.append(issue.message)
    by_version: dict[int, list[Issue]] = {}
    for issue in issues:
        by_version.setdefault(issue.version, []).append(issue)
    plan: list[MigrateStep] = []
    unsettled: list[Issue] = []
    for mig in migrations.migrations:
        prev = rows.get(mig.version)
        if prev is not None and prev.status == "completed":
            continue
        if target is not None and mig.version > target:
            break
        resume_from = 0
        for issue in by_version.get(mig.version, ()):
            if issue.needs_lock and not locked:
                unsettled.append(issue)
                if resume and prev is not None:
                    resume_from = prev.statements_done
            elif issue.code == "resume_required" and resume and prev is not None:
                resume_from = prev.statements_done
            elif issue.code == "out_of_order" and allow_out_of_order:
                warnings.append(issue.message)
            elif issue.code != "missing_file" and issue.code != "checksum_mismatch":
                raise issue_error(issue, history_table)
        plan.append(MigrateStep(mig, resume_from))
        if steps is not None and len(plan) >= steps:
            break
    if atomic:
        _check_atomic(plan, {i.version for i in unsettled})
    return MigratePlan(tuple(plan), tuple(warnings), tuple(unsettled))


def _check_atomic(plan: list[MigrateStep], unsettled: set[int]) -> None:
    """Every file of an atomic run joins its one transaction. A version still unsettled
    (a live runner may finish it) is judged again under the lock."""
    for step in plan:
        mig = step.migration
        if not mig.forward.directives.transactional and mig.version not in unsettled:
            raise ConfigError(
                f"--atomic cannot include {mig.filename}: it is marked no-transaction; "
                f"apply it on its own first (--target)"
            )


def plan_rollback(
    migrations: MigrationSet,
    rows: Rows,
    parse_stored: Callable[[str, str], SqlFile],
    *,
    steps: int | None = None,
    to: int | None = None,
    all: bool = False,
) -> RollbackPlan:
    """Newest first. ``parse_stored(text, label)`` turns stored rollback SQL into a file."""
    applied = list(reversed(applied_versions(rows)))
    if all:
        chosen = applied
    elif to is not None:
        chosen = [v for v in applied if v > to]
    else:
        chosen = applied[: steps if steps is not None else 1]
    warnings: list[str] = []
    plan: list[RollbackStep] = []
    for version in chosen:
        row = rows[version]
        mig = migrations.get(version)
        name = mig.name if mig else row.filename.removesuffix(".sql").partition("_")[2]
        if mig is not None and mig.rollback is not None:
            if row.rollback_checksum and row.rollback_checksum != mig.rollback.checksum:
                warnings.append(
                    f"{mig.rollback.path} differs from the rollback SQL stored when version "
                    f"{version} was applied; using the file"
                )
            plan.append(RollbackStep(version, name, row.filename, mig.rollback, "file"))
        elif row.rollback_sql:
            label = f"<stored rollback of {row.filename}>"
            warnings.append(
                f"no rollback file for version {version}; using the rollback SQL stored in "
                f"history when it was applied"
            )
            stored = parse_stored(row.rollback_sql, label)
            plan.append(RollbackStep(version, name, row.filename, stored, "history"))
        else:
            raise RollbackUnavailableError(
                f"version {version} ({row.filename}) has no rollback file in the rollback "
                f"directory and no rollback SQL stored in history; write "
                f"rollback/{version}_<name>_rollback.sql",
                version=version,
            )
    return RollbackPlan(tuple(plan), tuple(warnings))
