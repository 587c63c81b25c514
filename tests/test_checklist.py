"""The seed specification's checklist (検証項目), on the shipped sample migrations, via the engine.

Indexes and row level security are checked in test_samples.py; rollback of everything in
test_engine.py and test_samples.py; environments in the CLI tests. Here: concurrent runs
are prevented, migrations run in a transaction, tampering is detected, execution times
are accurate, and recovery after an error needs no repair.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

import asyncmig

from .migtree import applied_once, fetch, fetchval, m, samples, table_exists

pytestmark = pytest.mark.anyio


def after_samples(root: Path) -> int:
    """A version newer than every shipped sample (the samples grow over time)."""
    return max(int(p.name.split("_")[0]) for p in (root / "sql").glob("*.sql")) + 1


async def test_concurrent_runs_are_prevented(dsn: str, tmp_path: Path) -> None:
    """並行実行が防止されること: five runners at once, every migration applied once."""
    root = samples(tmp_path)
    reports: list[asyncmig.MigrateReport] = []

    async def run() -> None:
        reports.append(await m(dsn, root, lock_timeout=60).migrate())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(run)
    applied = sorted(v for r in reports for v in r.versions)
    on_disk = sorted(int(p.name.split("_")[0]) for p in (root / "sql").glob("*.sql"))
    assert applied == on_disk
    assert await applied_once(dsn) == on_disk
    assert sum(1 for r in reports if r.took_lock and r.versions) == 1


async def test_a_migration_runs_in_one_transaction(dsn: str, tmp_path: Path) -> None:
    """トランザクション内で実行されること: a failure at its end leaves nothing of 001."""
    root = samples(tmp_path)
    path = root / "sql" / "001_create_users_table.sql"
    path.write_text(path.read_text().replace("COMMIT;", "SELECT 1/0;\nCOMMIT;"))
    with pytest.raises(asyncmig.MigrationError) as info:
        await m(dsn, root).migrate()
    assert info.value.version == 1 and info.value.sqlstate == "22012"
    assert info.value.applied == [0]  # 000 was applied before and stays
    assert not await table_exists(dsn, "users") and not await table_exists(dsn, "users_audit")
    assert await fetchval(dsn, "SELECT count(*) FROM pg_proc WHERE proname = "
                               "'update_updated_at_column'") == 0  # fmt: skip
    assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 1") == "failed"


async def test_tampering_is_detected_by_validate_and_refused_by_migrate(
    dsn: str, tmp_path: Path
) -> None:
    """チェックサムによる改ざん検出が機能すること."""
    root = samples(tmp_path)
    await m(dsn, root).migrate()
    path = root / "sql" / "001_create_users_table.sql"
    path.write_text(path.read_text().replace("VARCHAR(255) NOT NULL,", "TEXT NOT NULL,", 1))
    report = await m(dsn, root).validate()
    assert not report.ok
    [issue] = report.errors
    assert issue.code == "checksum_mismatch" and issue.version == 1
    more = root / "sql" / f"{after_samples(root):03d}_more.sql"
    more.write_text("CREATE TABLE more_things (id int);\n")
    with pytest.raises(asyncmig.ChecksumMismatchError) as info:
        await m(dsn, root).migrate()
    assert info.value.version == 1 and "001_create_users_table.sql" in str(info.value)
    assert not await table_exists(dsn, "more_things")


async def test_recorded_execution_times_are_accurate(dsn: str, tmp_path: Path) -> None:
    """実行時間の記録が正確であること: within the measured wall time, and not rounded away."""
    root = samples(tmp_path)
    slow = after_samples(root)
    (root / "sql" / f"{slow:03d}_slow.sql").write_text("SELECT pg_sleep(0.4);\n")
    t0 = time.perf_counter()
    report = await m(dsn, root).migrate()
    wall_ms = (time.perf_counter() - t0) * 1000
    rows = await fetch(dsn, "SELECT version, execution_time_ms FROM _migrations ORDER BY 1")
    recorded = {int(r["version"]): r["execution_time_ms"] for r in rows}
    assert sum(recorded.values()) <= wall_ms
    assert 400 <= recorded[slow] <= 400 + 1000
    for applied in report.applied:
        assert abs(applied.duration_ms - recorded[applied.version]) <= 50


async def test_recovery_after_an_error_needs_no_repair(dsn: str, tmp_path: Path) -> None:
    """エラー時のリカバリーが適切に行われること: fix the file, run again."""
    root = samples(tmp_path)
    shipped = sorted(int(p.name.split("_")[0]) for p in (root / "sql").glob("*.sql"))
    new = after_samples(root)
    bad = root / "sql" / f"{new:03d}_orders.sql"
    broken = "CREATE TABLE orders (id int, total numeric DEFAULT no_such_fn());\n"
    bad.write_text(broken)
    with pytest.raises(asyncmig.MigrationError) as info:
        await m(dsn, root).migrate()
    assert info.value.version == new and info.value.applied == shipped
    assert (info.value.line, info.value.column) == (1, broken.index("no_such_fn") + 1)
    bad.write_text(broken.replace("no_such_fn()", "0"))
    assert (await m(dsn, root).migrate()).versions == (new,)
    log = await fetch(dsn, "SELECT action FROM _migrations_log WHERE version = $1 ORDER BY id", new)
    actions = [r["action"] for r in log]
    assert actions == ["fail", "apply"]
