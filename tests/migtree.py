"""Helpers for engine tests: build migration trees on disk, inspect a database, wait.

One place for what several test files need: :func:`migrator` (alias ``m``), the shipped
samples copied into a test's directory (:func:`samples`), the audit log's "each version
applied exactly once" check (:func:`applied_once`), the catalog snapshot used for
before/after equality (:func:`catalog_snapshot`), and :func:`wait_until` for polling a
condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import re
import shutil
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from asyncmig.migrator import Migrator

REPO = Path(__file__).resolve().parent.parent


def write_tree(
    root: Path,
    forward: Mapping[str, str],
    rollback: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``sql/`` and ``rollback/`` under ``root``; returns both directories."""
    sql = root / "sql"
    rb = root / "rollback"
    sql.mkdir(parents=True, exist_ok=True)
    rb.mkdir(parents=True, exist_ok=True)
    for name, text in forward.items():
        (sql / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    for name, text in (rollback or {}).items():
        (rb / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return sql, rb


def migrator(dsn: str, root: Path, **kw: Any) -> Migrator:
    """A Migrator on ``root/sql`` and ``root/rollback``; ``kw`` are Config fields."""
    return Migrator(dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", **kw)


m = migrator  # the short name several test files use


def samples(root: Path) -> Path:
    """Copy the shipped ``sql/`` and ``rollback/`` into ``root``; returns ``root``."""
    shutil.copytree(REPO / "sql", root / "sql")
    shutil.copytree(REPO / "rollback", root / "rollback")
    return root


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def fetchval(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def table_exists(dsn: str, name: str) -> bool:
    return bool(await fetchval(dsn, "SELECT to_regclass($1) IS NOT NULL", name))


async def applied_once(dsn: str) -> list[int]:
    """The versions the audit log shows applied; fails if any was applied more than once."""
    rows = await fetch(
        dsn, "SELECT version, count(*) AS n FROM _migrations_log WHERE action = 'apply' "
        "GROUP BY version ORDER BY version"
    )  # fmt: skip
    counts = {int(r["version"]): int(r["n"]) for r in rows}
    assert counts == dict.fromkeys(counts, 1), f"applied more than once: {counts}"
    return list(counts)


async def wait_until(
    condition: Callable[[], Awaitable[object]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        await anyio.sleep(0.02)


async def running_here(dsn: str, statement: str) -> int:
    """Backends of this test's database (not the whole server) running ``statement``
    (alone, or within a message of several, as a batched migration sends it)."""
    return int(
        await fetchval(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
            statement,
        )
    )


async def advisory_locks_here(dsn: str) -> int:
    """Advisory locks held in this test's database (other databases on the server ignored)."""
    return int(
        await fetchval(
            dsn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    )


# asyncmig's own history tables (`_migrations`, `_migrations_log`, `_migration_locks`,
# their indexes, sequences, row types and trigger) stay after a rollback, by design.
_BOOKKEEPING = re.compile(r"(?:^|[.\s])_{1,2}(?:migration|asyncmig_)")
_SYSTEM = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_SNAPSHOT_QUERIES = {
    "schemas": f"SELECT n.nspname || ' ' || coalesce(n.nspacl::text, '') FROM pg_namespace n "
    f"WHERE {_SYSTEM}",
    "relations": f"SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text FROM pg_class c "
    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_SYSTEM}",
    "types": f"SELECT n.nspname || '.' || t.typname FROM pg_type t "
    f"JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_SYSTEM}",
    "functions": "SELECT n.nspname || '.' || p.proname || '(' "
    "|| pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p "
    f"JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_SYSTEM}",
    "indexes": "SELECT indexdef FROM pg_indexes n "
    "WHERE n.schemaname !~ '^pg_' AND n.schemaname <> 'information_schema'",
    "policies": "SELECT p.polrelid::regclass::text || ' ' || p.polname FROM pg_policy p",
    "policy_definitions": "SELECT tablename || ' ' || policyname || ' ' || permissive || ' ' "
    "|| roles::text || ' ' || cmd || ' ' || coalesce(qual, '-') || ' ' "
    "|| coalesce(with_check, '-') FROM pg_policies",
    "row_security": "SELECT n.nspname || '.' || c.relname || ' enable=' || c.relrowsecurity "
    "|| ' force=' || c.relforcerowsecurity || ' acl=' || coalesce(c.relacl::text, '-') "
    f"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_SYSTEM} "
    "AND c.relkind IN ('r', 'p')",
    "function_definitions": "SELECT n.nspname || '.' || p.proname || ' definer=' "
    "|| p.prosecdef || ' config=' || coalesce(p.proconfig::text, '-') || ' owner=' "
    "|| p.proowner::regrole::text || ' ' || md5(p.prosrc) FROM pg_proc p "
    f"JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_SYSTEM}",
    "triggers": "SELECT t.tgrelid::regclass::text || ' ' || t.tgname FROM pg_trigger t "
    "WHERE NOT t.tgisinternal",
    "extensions": "SELECT extname FROM pg_extension",
    "event_triggers": "SELECT evtname FROM pg_event_trigger",
}


async def catalog_snapshot(dsn: str, exclude_history: bool = True) -> dict[str, list[str]]:
    """Everything a migration can leave behind, as sorted text, for before/after equality.

    Schemas with their privileges, relations with their kind, types, functions with
    their arguments and definitions (security definer, settings, owner, body hash),
    index definitions, policies with their expressions, row level security and table
    privileges, triggers, extensions and event triggers. asyncmig's own history objects
    are left out unless ``exclude_history`` is false.
    """
    conn = await asyncpg.connect(dsn)
    try:
        return {
            kind: sorted(
                r[0]
                for r in await conn.fetch(query)
                if not (exclude_history and _BOOKKEEPING.search(r[0]))
            )
            for kind, query in _SNAPSHOT_QUERIES.items()
        }
    finally:
        await conn.close()
