"""``asyncmig verify-rollbacks`` / ``asyncmig.testing.check_rollbacks``: apply, roll back,
compare the catalog, apply again — on the shipped samples (which pass) and on planted
faults, each reported precisely: the migration, the kind of finding, and the difference
in words.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asyncmig.snapshot import take_snapshot
from asyncmig.testing import check_rollbacks

from .cli_helpers import cli, json_lines
from .conftest import TestPg
from .migtree import REPO, catalog_snapshot, samples

pytestmark = pytest.mark.anyio


def planted(root: Path, forward: str, rollback: str) -> Path:
    """The shipped samples plus migration 004 with the given forward and rollback SQL."""
    samples(root)
    (root / "sql" / "004_planted.sql").write_text(forward)
    (root / "rollback" / "004_planted_rollback.sql").write_text(rollback)
    return root


async def test_the_shipped_samples_pass(pg: TestPg) -> None:
    """Every shipped rollback (sql/ and rollback/ of the repository) restores the catalog
    and its migration applies again: no finding, all four versions checked."""
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=REPO / "sql", rollback_dir=REPO / "rollback"
    )
    assert report.ok, report.summary()
    assert report.checked == (0, 1, 2, 3)


async def test_a_rollback_that_forgets_an_index_is_named(pg: TestPg, tmp_path: Path) -> None:
    """A rollback that leaves the migration's index behind: one not_restored finding for
    004 whose words name the index and its table, then a reapply failure (the index exists)."""
    root = planted(tmp_path, "CREATE INDEX users_name_idx ON users (name);\n", "SELECT 1;\n")
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=root / "sql", rollback_dir=root / "rollback"
    )
    assert [(f.version, f.kind) for f in report.findings] == [
        (4, "not_restored"),
        (4, "reapply_failed"),
    ]
    assert (
        report.findings[0].message == "rollback of 4 leaves index `users_name_idx` on public.users"
    )
    assert report.first_not_restored is report.findings[0]
    assert "already exists" in report.findings[1].message


async def test_a_rollback_that_forgets_a_policy_is_named(pg: TestPg, tmp_path: Path) -> None:
    """004 creates a policy and its rollback does nothing: the one difference reported
    is that policy, on its table."""
    root = planted(
        tmp_path,
        "CREATE POLICY users_delete_policy ON users FOR DELETE USING (auth.role() = 'admin');\n",
        "SELECT 1;\n",
    )
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=root / "sql", rollback_dir=root / "rollback"
    )
    first = report.first_not_restored
    assert first is not None and first.version == 4
    assert first.message == "rollback of 4 leaves policy `users_delete_policy` on public.users"
    assert [d.kind for d in first.differences] == ["left"]


async def test_a_rollback_that_drops_a_column_of_the_wrong_table_is_named(
    pg: TestPg, tmp_path: Path
) -> None:
    """004 adds users.nickname; its rollback drops users_audit.user_agent instead. Both
    sides are reported: the column left on users and the one removed from users_audit."""
    root = planted(
        tmp_path,
        "ALTER TABLE users ADD COLUMN nickname text;\n",
        "ALTER TABLE users_audit DROP COLUMN user_agent;\n",
    )
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=root / "sql", rollback_dir=root / "rollback"
    )
    first = report.first_not_restored
    assert first is not None and first.version == 4
    assert first.message == (
        "rollback of 4 leaves column `nickname` of public.users; removes column "
        "`user_agent` of public.users_audit, which was there before"
    )


async def test_a_rollback_that_fails_is_reported_with_its_error(pg: TestPg, tmp_path: Path) -> None:
    """A rollback whose SQL fails: one rollback_failed finding for 004 carrying the
    server's error; the catalog is not compared (nothing was undone)."""
    root = planted(tmp_path, "CREATE TABLE orders (id int);\n", "DROP TABLE order_lines;\n")
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=root / "sql", rollback_dir=root / "rollback"
    )
    assert [(f.version, f.kind) for f in report.findings] == [(4, "rollback_failed")]
    assert report.findings[0].message.startswith("rollback of 4 fails: ")
    assert 'table "order_lines" does not exist' in report.findings[0].message


async def test_a_changed_property_is_named_with_both_values(pg: TestPg, tmp_path: Path) -> None:
    """004 forces row security on users (001 enabled it); its rollback undoes FORCE and
    disables it too: users is reported with row security as it is now and as it was."""
    root = planted(
        tmp_path,
        "ALTER TABLE users FORCE ROW LEVEL SECURITY;\n",
        "ALTER TABLE users NO FORCE ROW LEVEL SECURITY;\n"
        "ALTER TABLE users DISABLE ROW LEVEL SECURITY;\n",
    )
    report = await check_rollbacks(
        pg.admin_dsn, sql_dir=root / "sql", rollback_dir=root / "rollback"
    )
    first = report.first_not_restored
    assert first is not None
    assert first.message == (
        "rollback of 4 leaves table public.users with row security disabled (was enabled)"
    )


async def test_the_snapshot_sees_everything_the_test_helper_sees(pg: TestPg) -> None:
    """On the migrated samples, every object kind of the project's test helper snapshot
    (tests/migtree.py) is non-empty in asyncmig.snapshot too, and the history tables are
    left out of both."""
    import asyncpg

    from asyncmig.migrator import Migrator

    dsn = pg.create_database()
    try:
        await Migrator(dsn, sql_dir=REPO / "sql", rollback_dir=REPO / "rollback").migrate()
        conn = await asyncpg.connect(dsn)
        try:
            snap = await take_snapshot(conn)
        finally:
            await conn.close()
        helper = await catalog_snapshot(dsn)
    finally:
        pg.drop_database(dsn)
    lines = snap.as_lines()
    for kind in ("schema", "table", "column", "constraint", "index", "function", "trigger",
                 "policy", "comment"):  # fmt: skip
        assert lines.get(kind), kind
    assert not any("_migration" in label for label in snap.objects)
    assert len(helper["indexes"]) == len(lines["index"])
    assert len(helper["policies"]) == len(lines["policy"])


def test_cli_json_exit_3_names_the_first_rollback_that_does_not_restore(
    pg: TestPg, tmp_path: Path
) -> None:
    """`asyncmig --json verify-rollbacks` on a planted forgotten index exits 3 with one
    JSON result whose first finding names 004 and the index; on the samples it exits 0."""
    root = planted(
        tmp_path / "bad", "CREATE INDEX users_name_idx ON users (name);\n", "SELECT 1;\n"
    )
    out = cli("--json", "--database-url", pg.admin_dsn, "verify-rollbacks", cwd=root)
    assert out.returncode == 3, out.stderr
    (result,) = [e for e in json_lines(out.stdout) if e["event"] == "rollbacks"]
    assert result["ok"] is False
    assert result["findings"][0]["version"] == 4
    assert result["findings"][0]["message"] == (
        "rollback of 4 leaves index `users_name_idx` on public.users"
    )
    good = tmp_path / "good"
    shutil.copytree(REPO / "sql", good / "sql")
    shutil.copytree(REPO / "rollback", good / "rollback")
    out = cli("--json", "--database-url", pg.admin_dsn, "verify-rollbacks", cwd=good)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["ok"] is True
