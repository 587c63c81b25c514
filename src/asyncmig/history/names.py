"""Where one schema's history lives: its table and function names, and whether it is there.

Every part of :class:`~asyncmig.history.History` builds on :class:`Names`, which holds
quoted names only, never a connection. ``HOSTNAME`` is the host the rows record.
"""

from __future__ import annotations

import socket

from ..connection import Conn
from ..session import quote_ident

HOSTNAME = socket.gethostname()


class Names:
    """One schema's history tables and functions, quoted with :func:`quote_ident`."""

    def __init__(self, schema: str = "public") -> None:
        self.schema = schema
        s = quote_ident(schema)
        self.qualified_name = f"{schema}._migrations"
        self.t_migrations = f"{s}._migrations"
        self.t_log = f"{s}._migrations_log"
        self.t_locks = f"{s}._migration_locks"
        self.t_staged = f"{s}._migrations_staged"
        self.f_mark = f"{s}._asyncmig_mark"
        self.f_record = f"{s}._asyncmig_record"

    async def _relation_exists(self, conn: Conn, relation: str) -> bool:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", relation))

    async def exists(self, conn: Conn) -> bool:
        """Whether the history table exists (it does once :meth:`ensure` ran)."""
        return await self._relation_exists(conn, self.t_migrations)
