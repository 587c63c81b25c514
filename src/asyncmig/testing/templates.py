"""Template databases named by the migration set, and databases cloned from them.

A template's name says what it holds::

    asyncmig_tpl_<project>_<set>_<target>

* ``project``: 8 hex of the resolved ``sql_dir`` and the history schema, so projects (and
  checkouts) sharing one server never touch each other's templates;
* ``set``: 12 hex of SHA-256 over the asyncmig version, the schema, and every file of
  ``sql/``, ``rollback/`` and the seeds directory (name and checksum), so any change to
  any of them names a new template;
* ``target``: ``latest``, or the version the template stops at (data-migration tests).

Building (:func:`ensure_template`) happens under asyncmig's own lock (the polled,
non-blocking advisory lock of :mod:`asyncmig.lock`, keyed by the template's name and
taken on the maintenance database), so concurrent sessions and pytest-xdist workers
build a template once and the others wait for it. Inside, the migrations run through
:class:`~asyncmig.Migrator` like any deploy, then the seeds; only then is the database
marked ``IS_TEMPLATE`` (and closed to connections, so a stray session cannot block
cloning). A template that exists but is not marked is a crashed build: it is dropped and
built again. A later session finds the marked template and runs nothing. After a build,
the project's templates with another ``set`` (stale files) are dropped.

Each test's database (``asyncmig_t_<project>_<random>``) is ``CREATE DATABASE … TEMPLATE``
of it: a file copy, no migration. The statements are :mod:`asyncmig.session`'s, which
quotes identifiers; nothing from input is formatted into SQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg

from .. import __version__, session
from ..config import Config
from ..dsn import with_database
from ..errors import ConfigError
from ..events import Event
from ..history import History
from ..loader import checksum_text, read_sql_text
from ..lock import LockPolicy, acquire, lock_key
from ..migrator import Migrator

__all__ = [
    "Template",
    "clone_database",
    "database_dsn",
    "drop_database",
    "ensure_template",
    "per_test_prefix",
    "project_key",
    "set_hash",
    "template_name",
]

TEMPLATE_PREFIX = "asyncmig_tpl_"
TEST_PREFIX = "asyncmig_t_"
BUILD_TIMEOUT = 1800.0  # a waiter gives up after this (a build of thousands of migrations)
# The lock's holder information lives in history tables; the maintenance database has
# none under this schema name, so waiting reads nothing from it.
_NO_HISTORY = History("asyncmig_testing_no_history")


@dataclass(frozen=True, slots=True)
class Template:
    """A ready template database: its name, and whether this call built it."""

    name: str
    built: bool = False
    applied: tuple[int, ...] = ()
    dropped_stale: tuple[str, ...] = ()


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` (a ``postgresql://`` URL) pointing at ``database``."""
    if "://" not in server_dsn:
        raise ConfigError(
            "asyncmig.testing needs the server as a postgresql:// URL "
            "(e.g. postgresql://user:password@127.0.0.1:5432/postgres)"
        )
    return with_database(server_dsn, database)


def project_key(config: Config) -> str:
    """8 hex naming one project's templates (its sql directory and history schema)."""
    ident = f"{Path(config.sql_dir).resolve()}\0{config.schema}"
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def set_hash(config: Config) -> str:
    """12 hex of the asyncmig version, the schema and every file's name and checksum."""
    digest = hashlib.sha256(f"asyncmig {__version__}\0schema {config.schema}\0".encode())
    dirs = (("sql", config.sql_dir), ("rollback", config.rollback_dir), ("seeds", config.seeds_dir))
    for label, directory in dirs:
        base = Path(directory)
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.sql")):
            rel = path.relative_to(base).as_posix()
            digest.update(f"{label}/{rel}\0{checksum_text(read_sql_text(path))}\0".encode())
    return digest.hexdigest()[:12]


def template_name(config: Config, target: int | None = None) -> str:
    tail = "latest" if target is None else str(int(target))
    return f"{TEMPLATE_PREFIX}{project_key(config)}_{set_hash(config)}_{tail}"


def per_test_prefix(config: Config) -> str:
    return f"{TEST_PREFIX}{project_key(config)}_"


async def _ignore(event: Event) -> None:
    return None


async def _is_ready(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval(session.IS_TEMPLATE, name))


async def ensure_template(
    server_dsn: str,
    config: Config,
    *,
    target: int | None = None,
    seeds: bool = True,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
) -> Template:
    """The ready template for ``config``'s files (at ``target``, default the latest),
    built if it does not exist yet. ``config.dsn`` is ignored: the template lives on the
    server of ``server_dsn``, which needs the CREATEDB privilege."""
    name = template_name(config, target)
    conn = await asyncpg.connect(server_dsn)
    try:
        if await _is_ready(conn, name):
            return Template(name)
        policy = LockPolicy(wait_timeout=BUILD_TIMEOUT, stale_after=0)
        await acquire(conn, lock_key(f"asyncmig.testing:{name}"), _NO_HISTORY, policy, _ignore)
        try:
            if await _is_ready(conn, name):
                return Template(name)
            await conn.execute(session.drop_database(name))  # a crashed build
            await conn.execute(session.create_database(name))
            try:
                applied = await _build(
                    database_dsn(server_dsn, name), config, target, seeds, on_event
                )
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await conn.execute(session.drop_database(name))
                raise
            note = (
                f"asyncmig {__version__} test template of {config.sql_dir} ({target or 'latest'})"
            )
            await conn.execute(await conn.fetchval(session.COMMENT_ON_DATABASE, name, note))
            await conn.execute(session.set_template(name, True))
            dropped = await _drop_stale(conn, config, name)
            return Template(name, built=True, applied=applied, dropped_stale=dropped)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await conn.execute(session.UNLOCK_ALL)
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


async def _build(
    dsn: str,
    config: Config,
    target: int | None,
    seeds: bool,
    on_event: Callable[[Event], Awaitable[None]] | None,
) -> tuple[int, ...]:
    migrator = Migrator(config.with_(dsn=dsn, lock_timeout=BUILD_TIMEOUT), on_event=on_event)
    report = await migrator.migrate(target=target)
    if seeds and target is None and await anyio.Path(config.seeds_dir).is_dir():
        await migrator.seed(environment=config.environment)
    return tuple(a.version for a in report.applied)


async def _drop_stale(conn: asyncpg.Connection, config: Config, keep: str) -> tuple[str, ...]:
    """Drop this project's templates built from other files (any target)."""
    current = keep.rsplit("_", 1)[0] + "_"
    prefix = f"{TEMPLATE_PREFIX}{project_key(config)}_"
    names = [r[0] for r in await conn.fetch(session.STALE_DATABASES, prefix, current)]
    dropped = []
    for stale in names:
        with contextlib.suppress(asyncpg.PostgresError):
            await drop_database(conn, stale)
            dropped.append(stale)
    return tuple(dropped)


async def clone_database(
    conn: asyncpg.Connection, template: str, name: str | None = None, prefix: str = TEST_PREFIX
) -> str:
    """``CREATE DATABASE <name> TEMPLATE <template>``; returns the new database's name.

    Retried briefly while the template is busy (SQLSTATE 55006: another session is
    connected to it, or is creating a database from it on an old server)."""
    name = name or f"{prefix}{uuid.uuid4().hex[:12]}"
    delay = 0.02
    for attempt in range(50):
        try:
            await conn.execute(session.create_database(name, template))
            return name
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")


async def drop_database(conn: asyncpg.Connection, name: str, *, template: bool = True) -> None:
    """Drop a database, ending its sessions first (``template``: it may be a template,
    which must be unmarked before it can be dropped)."""
    if template:
        with contextlib.suppress(asyncpg.InvalidCatalogNameError):
            await conn.execute(session.set_template(name, False))
    await conn.execute(session.drop_database(name))
