"""Helpers for engine tests: build migration trees on disk, inspect a database."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

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


async def catalog_snapshot(dsn: str, exclude_history: bool = True) -> dict[str, list[str]]:
    """Every user-visible object (schemas, relations, functions, policies, triggers)."""
    skip = ("_migrations", "_migrations_log", "_migration_locks") if exclude_history else ()
    conn = await asyncpg.connect(dsn)
    try:
        snap: dict[str, list[str]] = {}
        snap["schemas"] = sorted(
            r[0]
            for r in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'"
            )
        )
        rels = await conn.fetch(
            "SELECT n.nspname || '.' || c.relname AS name, c.relkind::text AS kind "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
        )
        snap["relations"] = sorted(
            f"{r['kind']}:{r['name']}"
            for r in rels
            if not any(r["name"].split(".", 1)[1].startswith(s) for s in skip)
        )
        snap["functions"] = sorted(
            r[0]
            for r in await conn.fetch(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' "
                "AND p.proname <> '_migrations_log_append_only'"
            )
        )
        snap["policies"] = sorted(
            r[0] for r in await conn.fetch("SELECT tablename || '.' || policyname FROM pg_policies")
        )
        snap["triggers"] = sorted(
            r[0]
            for r in await conn.fetch(
                "SELECT tgrelid::regclass::text || '.' || tgname FROM pg_trigger "
                "WHERE NOT tgisinternal AND tgname <> '_migrations_log_append_only'"
            )
        )
        return snap
    finally:
        await conn.close()
