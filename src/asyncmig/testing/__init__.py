"""Testing with asyncmig: a migrated database per test in milliseconds, and proof that
every rollback undoes its migration.

* The pytest plugin (:mod:`asyncmig.testing.plugin`, registered through the ``pytest11``
  entry point; ``pip install 'asyncmig[testing]'``): ``asyncmig_dsn`` & co.
* Without pytest::

      async with asyncmig.testing.database(server_dsn) as dsn:
          ...  # a fresh database at the latest migration, dropped afterwards

* :func:`check_rollbacks` (``asyncmig verify-rollbacks``): apply, roll back, compare
  the catalog, apply again, for every migration in a throwaway database.

Databases come from templates named by a hash of the migration files
(:mod:`asyncmig.testing.templates`): built once per file set, under asyncmig's lock.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .server import ENV_DSN

# Imported on first use, so the pytest plugin (a module of this package, loaded by every
# pytest run once asyncmig is installed) costs nothing until a test asks for a database.
_EXPORTS = {
    "DatabaseFactory": "databases",
    "load_config": "databases",
    "RollbackCheck": "rollbacks",
    "RollbackFinding": "rollbacks",
    "check_rollbacks": "rollbacks",
    "Template": "templates",
    "ensure_template": "templates",
    "template_name": "templates",
}

__all__ = ["ENV_DSN", "database", *_EXPORTS]

if TYPE_CHECKING:
    from ..config import Config
    from .databases import DatabaseFactory, load_config  # noqa: F401
    from .rollbacks import RollbackCheck, RollbackFinding, check_rollbacks  # noqa: F401
    from .templates import Template, ensure_template, template_name  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncmig.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


@asynccontextmanager
async def database(
    server_dsn: str | None = None,
    config: Config | None = None,
    *,
    version: int | None = None,
    **overrides: Any,
) -> AsyncIterator[str]:
    """A fresh database at ``version`` (default: the latest migration, seeds applied),
    cloned from the template of the project's files; dropped on exit, also on error.

    ``server_dsn``: a ``postgresql://`` URL of a server where the role may create
    databases; default ``ASYNCMIG_TESTING_DSN``, else an embedded server started for
    the duration (slow: seconds; pass a server when calling this often). ``config``:
    default read like the CLI does, from ``asyncmig.toml`` / ``[tool.asyncmig]`` in the
    current directory; keyword ``overrides`` change its fields (``sql_dir="db/sql"``).
    """
    import anyio

    from .databases import load_config
    from .templates import (
        clone_database,
        database_dsn,
        drop_database,
        ensure_template,
        per_test_prefix,
    )

    config = (config or load_config(Path.cwd())).with_(**overrides)
    server_dsn = server_dsn or os.environ.get(ENV_DSN)
    embedded = None
    if not server_dsn:
        from .server import start_private

        embedded = await anyio.to_thread.run_sync(start_private)
        server_dsn = embedded.dsn()
    try:
        import asyncpg

        template = await ensure_template(server_dsn, config, target=version)
        admin = await asyncpg.connect(server_dsn)
        try:
            name = await clone_database(admin, template.name, prefix=per_test_prefix(config))
            try:
                yield database_dsn(server_dsn, name)
            finally:
                with anyio.CancelScope(shield=True):
                    await drop_database(admin, name)
        finally:
            with anyio.CancelScope(shield=True):
                await admin.close()
    finally:
        if embedded is not None:
            await anyio.to_thread.run_sync(embedded.stop)
