"""The pytest plugin (entry point ``pytest11``, loaded when asyncmig is installed).

Fixtures (all prefixed ``asyncmig_``; nothing starts until a test asks for one):

``asyncmig_dsn`` (function)
    The DSN of the test's own database at the latest migration (seeds applied), cloned
    from the template; dropped after the test, also when it fails.
``asyncmig_database`` (function)
    ``asyncmig_database(version=None) -> dsn``: more databases, or one at a given
    version (a data-migration test migrates it on with ``asyncmig_migrator(dsn)``).
``asyncmig_migrator`` (session)
    ``asyncmig_migrator(dsn) -> asyncmig.Migrator`` for the project's files.
``asyncmig_connection``, ``asyncmig_pool`` (function, async)
    An asyncpg connection / pool on ``asyncmig_dsn`` (with the anyio plugin or
    pytest-asyncio).
``asyncmig_config`` (session)
    The :class:`~asyncmig.Config` read from ``asyncmig.toml`` / ``[tool.asyncmig]`` of
    the rootdir (or ``--asyncmig-config``), like the CLI; its ``database_url`` is not
    used: tests never touch the application's database.
``asyncmig_server`` (session)
    The server's DSN: ``--asyncmig-dsn``, ``ASYNCMIG_TESTING_DSN``, or the embedded
    server (:mod:`asyncmig.testing.server`).
``asyncmig_factory`` (session)
    The :class:`~asyncmig.testing.DatabaseFactory` behind them.

The ready rollback test: one line in any test module::

    from asyncmig.testing.plugin import test_every_rollback_restores_the_catalog  # noqa: F401
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .server import ENV_DSN, shared_server_dir, start_private, start_shared, stop_shared

if TYPE_CHECKING:  # the engine is imported when a fixture first runs, not at pytest start
    from ..config import Config
    from ..migrator import Migrator
    from .databases import DatabaseFactory

_CONTROLLER_PID = "asyncmig_controller_pid"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asyncmig", "asyncmig test databases")
    group.addoption(
        "--asyncmig-dsn",
        default=None,
        metavar="URL",
        help=f"PostgreSQL server for test databases (role with CREATEDB); "
        f"default ${ENV_DSN}, else an embedded server",
    )
    group.addoption(
        "--asyncmig-config",
        default=None,
        metavar="FILE",
        help="asyncmig config file (default: asyncmig.toml, else "
        "[tool.asyncmig] of pyproject.toml, in the rootdir)",
    )
    group.addoption(
        "--asyncmig-env",
        default=None,
        metavar="NAME",
        help="environment of the config file (selects seeds/<NAME>/)",
    )
    group.addoption(
        "--asyncmig-spares",
        default=2,
        type=int,
        metavar="N",
        help="databases cloned ahead of the tests that will take them [2]",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(), _XDIST_PLUGIN)


_XDIST_PLUGIN = "asyncmig-xdist-controller"


class _XdistController:
    """On the xdist controller: tell the workers its pid (the shared server's watcher
    follows it) and stop the shared server, if a worker started one, at the end."""

    def __init__(self) -> None:
        self.run_ids: set[str] = set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_CONTROLLER_PID] = os.getpid()
        self.run_ids.add(str(node.workerinput["testrunuid"]))


def pytest_unconfigure(config: pytest.Config) -> None:
    controller = config.pluginmanager.get_plugin(_XDIST_PLUGIN)
    if isinstance(controller, _XdistController) and not hasattr(config, "workerinput"):
        for run_id in controller.run_ids:
            stop_shared(shared_server_dir(run_id))


# -- session fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def asyncmig_config(pytestconfig: pytest.Config) -> Config:
    from .databases import load_config

    return load_config(
        Path(pytestconfig.rootpath),
        config_file=pytestconfig.getoption("asyncmig_config"),
        environment=pytestconfig.getoption("asyncmig_env"),
    )


@pytest.fixture(scope="session")
def asyncmig_server(pytestconfig: pytest.Config) -> Iterator[str]:
    given = pytestconfig.getoption("asyncmig_dsn") or os.environ.get(ENV_DSN)
    if given:
        yield given
        return
    workerinput = getattr(pytestconfig, "workerinput", None)
    if workerinput is not None and _CONTROLLER_PID in workerinput:
        directory = shared_server_dir(str(workerinput["testrunuid"]))
        yield start_shared(directory, int(workerinput[_CONTROLLER_PID]))
        return
    server = start_private()
    try:
        yield server.dsn()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def asyncmig_factory(
    asyncmig_server: str, asyncmig_config: Config, pytestconfig: pytest.Config
) -> Iterator[DatabaseFactory]:
    from .databases import DatabaseFactory

    factory = DatabaseFactory(
        asyncmig_server, asyncmig_config, spares=pytestconfig.getoption("asyncmig_spares")
    )
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def asyncmig_migrator(asyncmig_config: Config) -> Callable[[str], Migrator]:
    from ..migrator import Migrator

    def make(dsn: str) -> Migrator:
        return Migrator(asyncmig_config.with_(dsn=dsn))

    return make


# -- per-test fixtures ------------------------------------------------------------------


@pytest.fixture
def asyncmig_dsn(asyncmig_factory: DatabaseFactory) -> Iterator[str]:
    dsn = asyncmig_factory.create()
    try:
        yield dsn
    finally:
        asyncmig_factory.drop(dsn)


@pytest.fixture
def asyncmig_database(asyncmig_factory: DatabaseFactory) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(version: int | None = None) -> str:
        dsn = asyncmig_factory.create(version)
        made.append(dsn)
        return dsn

    try:
        yield make
    finally:
        for dsn in made:
            asyncmig_factory.drop(dsn)


@pytest.fixture
async def asyncmig_connection(asyncmig_dsn: str) -> AsyncIterator[Any]:
    import asyncpg

    conn = await asyncpg.connect(asyncmig_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def asyncmig_pool(asyncmig_dsn: str) -> AsyncIterator[Any]:
    import asyncpg

    async with asyncpg.create_pool(asyncmig_dsn, min_size=1, max_size=5) as pool:
        yield pool


# -- the ready rollback test -------------------------------------------------------------


def test_every_rollback_restores_the_catalog(asyncmig_server: str, asyncmig_config: Config) -> None:
    """Each migration, applied and rolled back in a throwaway database, leaves the catalog
    as it found it, and applies again (asyncmig.testing.check_rollbacks)."""
    from .rollbacks import check_rollbacks

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        report = pool.submit(
            asyncio.run, check_rollbacks(asyncmig_server, asyncmig_config)
        ).result()
    assert report.ok, report.summary()
