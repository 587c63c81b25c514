"""An aiohttp service that migrates its database on startup, before serving.

DATABASE_URL=postgresql://app@localhost/app python -m examples.aiohttp_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from aiohttp import web

import asyncmig

HERE = Path(__file__).resolve().parent.parent
POOL = web.AppKey("pool", asyncpg.Pool)
APPLIED = web.AppKey("applied", tuple)


def create_app(dsn: str | None = None, migrations: Path = HERE) -> web.Application:
    dsn = dsn or os.environ["DATABASE_URL"]
    app = web.Application()

    async def database(app: web.Application) -> AsyncIterator[None]:
        report = await asyncmig.migrate(
            dsn,
            sql_dir=migrations / "sql",
            rollback_dir=migrations / "rollback",
            lock_timeout=120,
        )
        app[APPLIED] = report.versions
        app[POOL] = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        yield
        await app[POOL].close()

    async def health(request: web.Request) -> web.Response:
        async with request.app[POOL].acquire() as conn:
            version = await conn.fetchval(
                "SELECT max(version) FROM _migrations WHERE status = 'completed'"
            )
        return web.json_response(
            {
                "status": "ok",
                "schema_version": int(version) if version is not None else None,
                "applied_at_startup": list(request.app[APPLIED]),
            }
        )

    app.cleanup_ctx.append(database)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), port=int(os.environ.get("PORT", "8080")))
