"""``asyncmig verify-rollbacks``: the one library call behind the command."""

from __future__ import annotations

import anyio

from ..cli.invoke import run_cancellable
from ..config import Config
from .rollbacks import RollbackCheck, check_rollbacks

__all__ = ["verify"]


def verify(config: Config) -> RollbackCheck:
    """:func:`check_rollbacks` on the configured server, or on an embedded one started
    for the check when no database URL is configured."""

    async def go() -> RollbackCheck:
        dsn = config.resolved_dsn()
        if dsn:
            return await check_rollbacks(dsn, config)
        from .server import start_private

        server = await anyio.to_thread.run_sync(start_private)
        try:
            return await check_rollbacks(server.dsn(), config)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)

    return run_cancellable(go)
