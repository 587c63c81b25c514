"""A FastAPI service that migrates its database in its lifespan, before serving.

    DATABASE_URL=postgresql://app@localhost/app uvicorn examples.fastapi_app:app

Every replica runs the same code: one applies pending migrations while the others wait
for asyncmig's lock, then find nothing to do. ``/health`` reports the schema version.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI

import asyncmig

HERE = Path(__file__).resolve().parent.parent


def create_app(dsn: str | None = None, migrations: Path = HERE) -> FastAPI:
    dsn = dsn or os.environ["DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        report = await asyncmig.migrate(
            dsn,
            sql_dir=migrations / "sql",
            rollback_dir=migrations / "rollback",
            lock_timeout=120,
        )
        app.state.applied = report.versions
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        async with app.state.pool.acquire() as conn:
            version = await conn.fetchval(
                "SELECT max(version) FROM _migrations WHERE status = 'completed'"
            )
        return {
            "status": "ok",
            "schema_version": int(version) if version is not None else None,
            "applied_at_startup": list(app.state.applied),
        }

    return app


if os.environ.get("DATABASE_URL"):
    app = create_app()
