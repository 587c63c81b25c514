"""The planner's rules as table tests: pure values in, a plan or a typed refusal out."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asyncmig.errors import (
    ChecksumMismatchError,
    ConfigError,
    MissingFileError,
    OutOfOrderError,
    ResumeRequiredError,
    RollbackUnavailableError,
)
from asyncmig.loader import Directives, Migration, MigrationSet, SqlFile
from asyncmig.models import HistoryRow
from asyncmig.planner import check, plan_migrate, plan_rollback
from asyncmig.status import build_status, history_issues


def sql(name: str, checksum: str = "c", transactional: bool = True) -> SqlFile:
    return SqlFile(
        path=Path("sql") / name,
        text="",
        checksum=checksum,
        directives=Directives(transactional=transactional),
        statements=(),
        dropped_outer_transaction=False,
    )


def mig(version: int, checksum: str = "c", rollback: bool = True, tx: bool = True) -> Migration:
    name = f"m{version}"
    return Migration(
        version=version,
        name=name,
        forward=sql(f"{version:03d}_{name}.sql", checksum, tx),
        rollback=sql(f"{version:03d}_{name}_rollback.sql", "r") if rollback else None,
    )


def row(
    version: int,
    status: str = "completed",
    checksum: str = "c",
    *,
    transactional: bool = True,
    done: int = 0,
    total: int = 3,
    rollback_sql: str | None = None,
) -> HistoryRow:
    return HistoryRow(
        version=version, filename=f"{version:03d}_m{version}.sql", checksum=checksum,
        status=status, executed_at=datetime.now(UTC), executed_by="me", execution_time_ms=1,
        statements_total=total, statements_done=done, transactional=transactional,
        error_message=None, error_sqlstate=None, rollback_sql=rollback_sql,
        rollback_checksum=None,
    )  # fmt: skip


def mset(*migs: Migration) -> MigrationSet:
    return MigrationSet(migrations=tuple(sorted(migs, key=lambda m: m.version)))


def versions(plan: object) -> list[int]:
    return [s.migration.version for s in plan.steps]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("disk", "rows", "kwargs", "expected"),
    [
        ([1, 2, 3], [], {}, [1, 2, 3]),
        ([1, 2, 3], [1], {}, [2, 3]),
        ([1, 2, 3], [1, 2, 3], {}, []),
        ([1, 2, 3], [], {"steps": 2}, [1, 2]),
        ([1, 2, 3], [], {"target": 2}, [1, 2]),
        ([9, 10, 20261126153000], [9], {}, [10, 20261126153000]),  # integer order
        ([1, 2, 3], [1, 2], {"target": 1}, []),
    ],
)
def test_pending_selection(
    disk: list[int], rows: list[int], kwargs: dict[str, int], expected: list[int]
) -> None:
    plan = plan_migrate(mset(*(mig(v) for v in disk)), {v: row(v) for v in rows}, **kwargs)
    assert versions(plan) == expected


def test_failed_transactional_migration_is_simply_pending() -> None:
    plan = plan_migrate(mset(mig(1), mig(2)), {1: row(1), 2: row(2, "failed")})
    assert versions(plan) == [2]


def test_rolled_back_is_pending_again() -> None:
    plan = plan_migrate(mset(mig(1)), {1: row(1, "rolled_back")})
    assert versions(plan) == [1]


def test_checksum_drift_refused_or_forced() -> None:
    ms, rows = mset(mig(1, "new")), {1: row(1, checksum="old")}
    with pytest.raises(ChecksumMismatchError) as info:
        plan_migrate(ms, rows)
    assert info.value.expected == "old" and info.value.actual == "new"
    assert plan_migrate(ms, rows, force=True).warnings


def test_missing_file_refused_or_forced() -> None:
    with pytest.raises(MissingFileError):
        plan_migrate(mset(mig(2)), {1: row(1)})
    assert versions(plan_migrate(mset(mig(2)), {1: row(1)}, force=True)) == [2]


def test_out_of_order_refused_or_allowed() -> None:
    ms, rows = mset(mig(1), mig(2)), {2: row(2)}
    with pytest.raises(OutOfOrderError) as info:
        plan_migrate(ms, rows)
    assert info.value.version == 1
    assert versions(plan_migrate(ms, rows, allow_out_of_order=True)) == [1]


def test_half_done_no_transaction_needs_resume() -> None:
    ms = mset(mig(1, tx=False))
    rows = {1: row(1, "failed", transactional=False, done=2, total=5)}
    with pytest.raises(ResumeRequiredError) as info:
        plan_migrate(ms, rows)
    assert info.value.statements_done == 2 and "statement 3" in str(info.value)
    plan = plan_migrate(ms, rows, resume=True)
    assert plan.steps[0].resume_from == 2
    # a killed run leaves "running": same rule
    rows = {1: row(1, "running", transactional=False, done=1, total=5)}
    assert plan_migrate(mset(mig(1, tx=False)), rows, resume=True).steps[0].resume_from == 1


def test_resume_refused_when_file_changed() -> None:
    rows = {1: row(1, "failed", checksum="old", transactional=False, done=2)}
    with pytest.raises(ChecksumMismatchError):
        plan_migrate(mset(mig(1, "new", tx=False)), rows, resume=True)


def test_no_transaction_failure_before_any_statement_is_plain_pending() -> None:
    rows = {1: row(1, "failed", transactional=False, done=0)}
    assert versions(plan_migrate(mset(mig(1, tx=False)), rows)) == [1]


def _parse(text: str, label: str) -> SqlFile:
    return sql(label, "stored")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, [3]),
        ({"steps": 2}, [3, 2]),
        ({"to": 1}, [3, 2]),
        ({"to": 0}, [3, 2, 1]),
        ({"all": True}, [3, 2, 1]),
        ({"to": 3}, []),
    ],
)
def test_rollback_selection(kwargs: dict[str, int], expected: list[int]) -> None:
    ms = mset(mig(1), mig(2), mig(3))
    plan = plan_rollback(ms, {v: row(v) for v in (1, 2, 3)}, _parse, **kwargs)
    assert [s.version for s in plan.steps] == expected


def test_rollback_falls_back_to_stored_sql_then_fails_clearly() -> None:
    ms = mset(mig(1, rollback=False), mig(2, rollback=False))
    rows = {1: row(1), 2: row(2, rollback_sql="DROP TABLE t;")}
    plan = plan_rollback(ms, rows, _parse)
    assert plan.steps[0].source == "history" and plan.warnings
    with pytest.raises(RollbackUnavailableError) as info:
        plan_rollback(ms, rows, _parse, all=True)
    assert info.value.version == 1


def test_importing_the_planner_imports_no_driver() -> None:
    """`import asyncmig.planner` (and the values it uses) does not import asyncpg."""
    code = "import asyncmig.planner, sys; assert 'asyncpg' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_old_homes_of_the_values_still_work() -> None:
    """HistoryRow and LockHolder import from history/errors as before (same classes)."""
    from asyncmig import errors, history, models

    assert history.HistoryRow is models.HistoryRow and errors.LockHolder is models.LockHolder


@pytest.mark.parametrize(
    ("disk", "rows", "codes"),
    [
        ([mig(1), mig(2)], [row(1), row(2)], []),
        ([mig(2)], [row(1)], [(1, "missing_file")]),
        ([mig(1, "new")], [row(1, checksum="old")], [(1, "checksum_mismatch")]),
        ([mig(1), mig(2)], [row(2)], [(1, "out_of_order")]),
        ([mig(1, tx=False)], [row(1, "failed", transactional=False, done=2)],
         [(1, "resume_required")]),
        ([mig(1, tx=False)], [row(1, "running", transactional=False, done=1)],
         [(1, "resume_required")]),
        ([mig(1, "new", tx=False)], [row(1, "failed", "old", transactional=False, done=2)],
         [(1, "resume_required"), (1, "resume_changed")]),
        ([mig(1)], [row(1, "failed")], []),  # a failed transactional one: plain pending
        ([mig(1, tx=False)], [row(1, "failed", transactional=False, done=0)], []),
        # applied-version issues first, then pending ones, in version order
        ([mig(1), mig(3, "new")], [row(2), row(3, checksum="old")],
         [(2, "missing_file"), (3, "checksum_mismatch"), (1, "out_of_order")]),
    ],
)  # fmt: skip
def test_check_lists_every_issue_in_refusal_order(
    disk: list[Migration], rows: list[HistoryRow], codes: list[tuple[int, str]]
) -> None:
    """check() reports each disagreement of disk and history once, with its code."""
    issues = check(mset(*disk), {r.version: r for r in rows})
    assert [(i.version, i.code) for i in issues] == codes


def test_plan_refuses_the_first_issue_check_lists() -> None:
    """plan_migrate raises the error of check()'s first blocking issue."""
    ms = mset(mig(1), mig(3, "new"))
    rows = {2: row(2), 3: row(3, checksum="old")}
    assert check(ms, rows)[0].code == "missing_file"
    with pytest.raises(MissingFileError):
        plan_migrate(ms, rows)


@pytest.mark.parametrize("status", ["running", "failed"])
def test_without_the_lock_an_interrupted_run_is_pending_not_an_error(status: str) -> None:
    """Before the lock, a half-done no-transaction row (its runner may be alive) keeps the
    version pending and is listed as unsettled; with the lock it needs --resume."""
    ms = mset(mig(1), mig(2, tx=False), mig(3))
    rows = {1: row(1), 2: row(2, status, transactional=False, done=1)}
    ahead = plan_migrate(ms, rows, locked=False)
    assert versions(ahead) == [2, 3] and [i.version for i in ahead.unsettled] == [2]
    assert ahead.steps[0].resume_from == 0
    assert plan_migrate(ms, rows, locked=False, resume=True).steps[0].resume_from == 1
    with pytest.raises(ResumeRequiredError):
        plan_migrate(ms, rows, locked=True)
    # a changed file is judged under the lock too
    changed = {1: row(1), 2: row(2, status, "old", transactional=False, done=1)}
    assert versions(plan_migrate(mset(mig(1), mig(2, "new", tx=False)), changed,
                                 locked=False, resume=True)) == [2]  # fmt: skip


def test_resume_required_message_says_what_to_do() -> None:
    """Under the lock the refusal names --resume with the next statement, and how to start
    over: undo statements 1..k of the file, delete the version's row from the table."""
    rows = {7: row(7, "running", transactional=False, done=2, total=5)}
    with pytest.raises(ResumeRequiredError) as info:
        plan_migrate(mset(mig(7, tx=False)), rows, history_table="app._migrations")
    text = str(info.value)
    assert "asyncmig migrate --resume` to continue at statement 3" in text
    assert "statements 1–2 of sql/007_m7.sql" in text
    assert "delete its row (version 7) from app._migrations" in text
    assert "prev." not in text and "still running" not in text


def test_atomic_refuses_a_no_transaction_file_in_the_plan() -> None:
    """--atomic: a no-transaction file in the plan is a ConfigError naming it; a version
    left unsettled before the lock is judged under it instead."""
    ms = mset(mig(1), mig(2), mig(3, tx=False))
    assert versions(plan_migrate(ms, {}, steps=2, atomic=True)) == [1, 2]
    with pytest.raises(ConfigError, match=r"003_m3\.sql"):
        plan_migrate(ms, {1: row(1)}, steps=2, atomic=True)
    rows = {1: row(1), 2: row(2), 3: row(3, "running", transactional=False, done=1)}
    assert versions(plan_migrate(ms, rows, atomic=True, locked=False)) == [3]


def test_status_and_validate_derive_from_check() -> None:
    """status marks each version with check()'s codes (modified, missing file) and counts
    failed and running versions as pending; validate reports exactly check()'s issues."""
    ms = mset(mig(1), mig(2, "new"), mig(4, tx=False), mig(5))
    rows = {
        2: row(2, checksum="old"), 3: row(3),
        4: row(4, "running", transactional=False, done=1), 5: row(5, "failed"),
    }  # fmt: skip
    report = build_status(ms, rows, "public")
    by = {v.version: v for v in report.versions}
    assert by[2].modified and by[3].missing_file and not by[3].on_disk
    assert by[1].issues == ("out_of_order",) and by[4].issues == ("resume_required",)
    assert [(v.version, v.state) for v in report.pending] == [
        (1, "pending"), (4, "running"), (5, "failed"),
    ]  # fmt: skip
    assert [(i.version, i.code) for i in history_issues(ms, rows)] == [
        (i.version, i.code) for i in check(ms, rows)
    ]
