"""A database per test, handed out in milliseconds: :class:`DatabaseFactory`.

The factory owns an event loop in a thread of its own, so it serves synchronous and
asynchronous tests alike (an async test's loop is never blocked by another loop's
connections). It keeps ``spares`` clones of the latest template ready: handing a test
its database takes one from the queue while the next clone is made in the background,
so the copy (hundreds of milliseconds for a large schema) overlaps the tests instead
of adding to each. Every database it creates is dropped by :meth:`drop` or, at the
latest, by :meth:`close` (unused spares too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from ..config import Config
from .templates import (
    Template,
    clone_database,
    database_dsn,
    drop_database,
    ensure_template,
    per_test_prefix,
)

__all__ = ["DatabaseFactory", "load_config"]

T = TypeVar("T")


class _Unused(Mapping[str, str]):
    """The environment seen by a config file's ``database_url = "${VAR}"`` in tests:
    every variable "set" and empty, since the application's URL is not used there."""

    def __getitem__(self, key: str) -> str:
        return ""

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def load_config(
    cwd: Path, *, config_file: str | Path | None = None, environment: str | None = None
) -> Config:
    """The directories, schema and seeds of the CLI's config file (``asyncmig.toml``, else
    ``[tool.asyncmig]`` of ``pyproject.toml``, in ``cwd``; or ``config_file``), with the
    ``ASYNCMIG_SQL_DIR`` & co. variables over it. Its database URL is dropped: tests and
    checks work in databases of their own, never in the application's."""
    import os

    from ..cli.settings import resolve

    overrides = {
        key: os.environ.get(f"ASYNCMIG_{key.upper()}")
        for key in ("sql_dir", "rollback_dir", "seeds_dir", "schema")
    }
    settings = resolve(
        overrides, environment=environment, config_file=config_file, cwd=cwd, environ=_Unused()
    )
    config = settings.config
    paths = {
        key: cwd / getattr(config, key)
        for key in ("sql_dir", "rollback_dir", "seeds_dir")
        if not Path(getattr(config, key)).is_absolute()
    }
    return dataclasses.replace(config, dsn=None, **paths)


class DatabaseFactory:
    """Template-backed databases on the server of ``server_dsn`` for ``config``'s files."""

    def __init__(
        self, server_dsn: str, config: Config, *, spares: int = 2, seeds: bool = True
    ) -> None:
        self.server_dsn = server_dsn
        self.config = config
        self.spares = max(0, spares)
        self.seeds = seeds
        self.prefix = per_test_prefix(config)
        self.templates: dict[int | None, Template] = {}
        self._live: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="asyncmig-testing"
        )
        self._thread.start()
        self._pool: asyncpg.Pool | None = None
        self._ready: asyncio.Queue[str | Exception] | None = None
        self._fillers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._dropping: set[concurrent.futures.Future[None]] = set()

    # -- sync API (any thread) -----------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def template(self, version: int | None = None) -> Template:
        """The template at ``version`` (None: the latest), built once."""
        return self._run(self._template(version))

    def create(self, version: int | None = None) -> str:
        """A new database at ``version`` (None: the latest migration); returns its DSN."""
        return database_dsn(self.server_dsn, self._run(self._create(version)))

    def drop(self, dsn_or_name: str, *, wait: bool = False) -> None:
        """Drop a database this factory created (its sessions are ended first). The drop
        runs in the background unless ``wait``; :meth:`close` waits for every one."""
        name = dsn_or_name.rsplit("/", 1)[-1].split("?", 1)[0]
        future = asyncio.run_coroutine_threadsafe(self._drop(name), self._loop)
        if wait:
            future.result()
        else:
            self._dropping.add(future)
            future.add_done_callback(self._dropping.discard)

    def close(self) -> None:
        """Drop every database still alive (spares included) and stop the loop."""
        if self._closed:
            return
        self._closed = True
        for future in list(self._dropping):
            with contextlib.suppress(Exception):
                future.result()  # a failed drop is retried by _close (the name stays live)
        try:
            self._run(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> DatabaseFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- on the factory's loop -------------------------------------------------------------

    async def _admin(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.server_dsn, min_size=1, max_size=self.spares + 2
            )
        return self._pool

    async def _template(self, version: int | None) -> Template:
        if version not in self.templates:
            self.templates[version] = await ensure_template(
                self.server_dsn, self.config, target=version, seeds=self.seeds
            )
        return self.templates[version]

    async def _clone(self, template: str) -> str:
        pool = await self._admin()
        async with pool.acquire() as conn:
            name = await clone_database(conn, template, prefix=self.prefix)  # type: ignore[arg-type]
        self._live.add(name)
        return name

    async def _create(self, version: int | None) -> str:
        template = (await self._template(version)).name
        if version is not None or self.spares == 0:
            return await self._clone(template)
        if self._ready is None:
            self._ready = asyncio.Queue()
            for _ in range(self.spares):
                self._refill(template)
        got = await self._ready.get()
        self._refill(template)
        if isinstance(got, Exception):
            raise got
        return got

    def _refill(self, template: str) -> None:
        async def fill() -> None:
            assert self._ready is not None
            try:
                got: str | Exception = await self._clone(template)
            except Exception as exc:  # handed to the test that takes this spare
                got = exc
            await self._ready.put(got)

        task = self._loop.create_task(fill())
        self._fillers.add(task)
        task.add_done_callback(self._fillers.discard)

    async def _drop(self, name: str) -> None:
        pool = await self._admin()
        async with pool.acquire() as conn:
            await drop_database(conn, name, template=False)  # type: ignore[arg-type]
        self._live.discard(name)

    async def _close(self) -> None:
        for task in list(self._fillers):
            with contextlib.suppress(BaseException):
                await task  # a clone in flight finishes, then is dropped below
        for name in sorted(self._live):
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await self._drop(name)
        if self._pool is not None:
            await self._pool.close()
