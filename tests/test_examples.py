"""The example apps migrate in their lifespan; three instances at once apply exactly once."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from examples.aiohttp_app import create_app as create_aiohttp_app
from examples.fastapi_app import create_app as create_fastapi_app

from .migtree import applied_once, samples

pytestmark = pytest.mark.anyio


async def test_three_fastapi_instances_apply_exactly_once(dsn: str, tmp_path: Path) -> None:
    root = samples(tmp_path)
    bodies: list[dict[str, object]] = []

    async def instance() -> None:
        app = create_fastapi_app(dsn, root)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                resp = await client.get("/health")
                assert resp.status_code == 200
                bodies.append(resp.json())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(instance)
    versions = await applied_once(dsn)
    newest = max(versions)
    assert all(b["schema_version"] == newest for b in bodies)
    applied = sorted(v for b in bodies for v in b["applied_at_startup"])  # type: ignore[attr-defined]
    assert applied == versions  # each version applied by exactly one instance


async def test_three_aiohttp_instances_apply_exactly_once(dsn: str, tmp_path: Path) -> None:
    root = samples(tmp_path)
    bodies: list[dict[str, object]] = []

    async def instance() -> None:
        async with TestClient(TestServer(create_aiohttp_app(dsn, root))) as client:
            resp = await client.get("/health")
            assert resp.status == 200
            bodies.append(await resp.json())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(instance)
    versions = await applied_once(dsn)
    assert all(b["schema_version"] == max(versions) for b in bodies)
    applied = sorted(v for b in bodies for v in b["applied_at_startup"])  # type: ignore[attr-defined]
    assert applied == versions
