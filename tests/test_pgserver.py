"""The self-starting test server works and gives each test its own database."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import TestPg

pytestmark = pytest.mark.anyio


async def test_fresh_database_is_empty_and_isolated(pg: TestPg, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        )
        assert n == 0
        await conn.execute("CREATE TABLE only_here (id int)")
        assert await conn.fetchval("SELECT current_database()") != "postgres"
    finally:
        await conn.close()
    other = pg.create_database()
    try:
        conn = await asyncpg.connect(other)
        try:
            assert await conn.fetchval("SELECT to_regclass('public.only_here')") is None
        finally:
            await conn.close()
    finally:
        pg.drop_database(other)


async def test_server_listens_on_loopback(pg: TestPg, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        addr = await conn.fetchval("SELECT inet_server_addr()::text")
    finally:
        await conn.close()
    assert addr is None or addr.startswith("127.")
