"""The lock holder's row in ``_migration_locks``: who holds the advisory lock, since when,
its heartbeat and what it runs now. The lock itself is taken in :mod:`asyncmig.lock`.
"""

from __future__ import annotations

import os

from ..connection import Conn
from ..errors import LockHolder
from .names import HOSTNAME, Names


class HolderRow(Names):
    """Publishes, beats and clears the holder row, and reads it for whoever waits."""

    async def holder(self, conn: Conn) -> LockHolder | None:
        if not await self._relation_exists(conn, self.t_locks):
            return None
        rec = await conn.fetchrow(
            f"SELECT backend_pid, host, pid, locked_by, locked_at, heartbeat_at, version, "
            f"statement FROM {self.t_locks} WHERE id = 1"
        )
        if rec is None or rec["backend_pid"] is None:
            return None
        return LockHolder(
            backend_pid=rec["backend_pid"],
            host=rec["host"],
            pid=rec["pid"],
            user=rec["locked_by"],
            since=rec["locked_at"].isoformat() if rec["locked_at"] else None,
            heartbeat_at=rec["heartbeat_at"].isoformat() if rec["heartbeat_at"] else None,
            version=int(rec["version"]) if rec["version"] is not None else None,
            statement=rec["statement"],
        )

    async def publish_holder(self, conn: Conn) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET locked_by = current_user, locked_at = now(), "
            f"lock_key = gen_random_uuid(), backend_pid = pg_backend_pid(), host = $1, "
            f"pid = $2, heartbeat_at = now(), version = NULL, statement = NULL WHERE id = 1",
            HOSTNAME,
            os.getpid(),
        )

    async def heartbeat(
        self, conn: Conn, backend_pid: int, version: int | None, statement: str | None
    ) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET heartbeat_at = now(), version = $2, statement = $3 "
            f"WHERE id = 1 AND backend_pid = $1",
            backend_pid,
            version,
            statement,
        )

    async def clear_holder(self, conn: Conn, backend_pid: int) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET locked_by = NULL, locked_at = NULL, lock_key = NULL, "
            f"backend_pid = NULL, host = NULL, pid = NULL, heartbeat_at = NULL, version = NULL, "
            f"statement = NULL WHERE id = 1 AND backend_pid = $1",
            backend_pid,
        )
