"""Decide what to apply or undo from "versions on disk" and "versions in history".

Pure functions over values (no I/O), so every rule is a table test:

* an applied version whose file changed → :class:`ChecksumMismatchError` (``force``
  turns it into a warning);
* an applied version with no file → :class:`MissingFileError` (``force`` too);
* a no-transaction migration that stopped after *k* statements →
  :class:`ResumeRequiredError`, or with ``resume`` a step starting at statement *k+1*
  (refused if the file changed since);
* a pending version older than the newest applied one → :class:`OutOfOrderError`
  unless ``allow_out_of_order``;
* a transactional migration that failed is simply pending again: its statements were
  rolled back with it, so there is no "dirty" state to repair.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import (
    ChecksumMismatchError,
    MissingFileError,
    OutOfOrderError,
    ResumeRequiredError,
    RollbackUnavailableError,
)
from .history import HistoryRow
from .loader import Migration, MigrationSet, SqlFile

__all__ = ["MigrateStep", "RollbackStep", "plan_migrate", "plan_rollback"]


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
    steps: tuple[MigrateStep, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    steps: tuple[RollbackStep, ...]
    warnings: tuple[str, ...] = ()


def applied_versions(rows: Mapping[int, HistoryRow]) -> list[int]:
    return sorted(v for v, r in rows.items() if r.status == "completed")


def plan_migrate(
    migrations: MigrationSet,
    rows: Mapping[int, HistoryRow],
    *,
    steps: int | None = None,
    target: int | None = None,
    force: bool = False,
    allow_out_of_order: bool = False,
    resume: bool = False,
) -> MigratePlan:
    warnings: list[str] = []
    applied = applied_versions(rows)
    for version in applied:
        row = rows[version]
        mig = migrations.get(version)
        if mig is None:
            msg = (
                f"version {version} ({row.filename}) is applied but its file is missing "
                f"from the migrations directory"
            )
            if not force:
                raise MissingFileError(
                    msg + "; restore the file, or pass --force to run anyway", version=version
                )
            warnings.append(msg)
            continue
        if mig.forward.checksum != row.checksum:
            msg = (
                f"{mig.forward.path} changed after it was applied (checksum "
                f"{row.checksum[:12]}… in history, {mig.forward.checksum[:12]}… on disk)"
            )
            if not force:
                raise ChecksumMismatchError(
                    msg + "; revert the edit and put the change in a new migration, or pass "
                    "--force to run anyway",
                    version=version,
                    expected=row.checksum,
                    actual=mig.forward.checksum,
                    path=mig.forward.path,
                )
            warnings.append(msg)

    newest_applied = applied[-1] if applied else None
    plan: list[MigrateStep] = []
    for mig in migrations.migrations:
        prev = rows.get(mig.version)
        if prev is not None and prev.status == "completed":
            continue
        if target is not None and mig.version > target:
            break
        resume_from = 0
        if prev is not None and _stopped_half_way(prev):
            if not resume:
                raise ResumeRequiredError(
                    f"migration {mig.version} ({prev.filename}) runs without a transaction and "
                    f"stopped after {prev.statements_done} of {prev.statements_total} statements"
                    + (f" ({prev.error_message})" if prev.error_message else "")
                    + f". Fix the cause, then run `asyncmig migrate --resume` to continue at "
                    f"statement {prev.statements_done + 1}; or undo the applied statements by "
                    f"hand and remove its history prev.",
                    version=mig.version,
                    statements_done=prev.statements_done,
                )
            if mig.forward.checksum != prev.checksum:
                raise ChecksumMismatchError(
                    f"{mig.forward.path} changed since its interrupted run; resuming would "
                    f"skip statements of a different file. Restore the file as it was, or undo "
                    f"the applied statements by hand and remove its history prev.",
                    version=mig.version,
                    expected=prev.checksum,
                    actual=mig.forward.checksum,
                    path=mig.forward.path,
                )
            resume_from = prev.statements_done
        if newest_applied is not None and mig.version < newest_applied:
            msg = (
                f"migration {mig.version} ({mig.forward.path.name}) is pending but older than "
                f"the newest applied version {newest_applied}"
            )
            if not allow_out_of_order:
                raise OutOfOrderError(
                    msg + "; renumber it after the applied ones, or pass --allow-out-of-order",
                    version=mig.version,
                )
            warnings.append(msg)
        plan.append(MigrateStep(mig, resume_from))
        if steps is not None and len(plan) >= steps:
            break
    return MigratePlan(tuple(plan), tuple(warnings))


def _stopped_half_way(row: HistoryRow) -> bool:
    return not row.transactional and row.status in ("failed", "running") and row.statements_done > 0


def plan_rollback(
    migrations: MigrationSet,
    rows: Mapping[int, HistoryRow],
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
            plan.append(
                RollbackStep(version, name, row.filename, parse_stored(row.rollback_sql, label),
                             "history")
            )  # fmt: skip
        else:
            raise RollbackUnavailableError(
                f"version {version} ({row.filename}) has no rollback file in the rollback "
                f"directory and no rollback SQL stored in history; write "
                f"rollback/{version}_<name>_rollback.sql",
                version=version,
            )
    return RollbackPlan(tuple(plan), tuple(warnings))
