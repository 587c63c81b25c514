"""Seed data: ``seeds/*.sql``, then ``seeds/<environment>/*.sql``, in one transaction.

Every seed file runs through the :class:`~asyncmig.runner.Runner`, like a migration's
statements: from a clean session, with its directives (``statement-timeout``,
``lock-timeout``) as ``SET LOCAL``, ``COPY … FROM stdin`` with its inline data, and the
server's notices forwarded as events. A failing statement rolls back every seed file
and raises :class:`MigrationError` with the file, line, column and SQLSTATE. Seeds are
not recorded in history: running ``seed`` twice runs them twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import asyncpg

from . import session
from .connection import Conn
from .errors import AsyncmigError, DirectiveError, MigrationError
from .events import Emitter, Event, Message, ServerNotice
from .history import History
from .progress import Progress
from .runner import Runner
from .sqlfile import SqlFile, load_sql_file

__all__ = ["load_seeds", "run_seeds"]

_CLEANUP_TIMEOUT = 5.0


def load_seeds(seeds_dir: Path, environment: str | None) -> list[SqlFile]:
    """Read, split and check every seed file (before any database is touched)."""
    base = Path(seeds_dir)
    paths = sorted(base.glob("*.sql"))
    if environment and (base / environment).is_dir():
        paths += sorted((base / environment).glob("*.sql"))
    files = [load_sql_file(p) for p in paths]
    for f in files:
        if not f.directives.transactional:
            raise DirectiveError(
                "seeds run in one transaction; a seed file cannot be marked "
                "no-transaction (put that statement in a migration)",
                path=f.path,
            )
    return files


async def run_seeds(conn: Conn, history: History, files: Sequence[SqlFile], emit: Emitter) -> None:
    """Run ``files`` in one transaction on ``conn``: all of them, or none."""

    async def notices(event: Event) -> None:  # statement events of seeds have no version
        if isinstance(event, ServerNotice):
            await emit(event)

    async with Runner(conn, history, Emitter(notices), Progress(), migration_timeout=0) as runner:
        await conn.execute(session.BEGIN)
        try:
            for f in files:
                try:
                    await runner.run_file(f)
                except AsyncmigError as exc:
                    raise _seed_error(exc, f) from exc.__cause__
                await emit(Message(level="info", text=f"seeded {f.path}"))
            await conn.execute(session.COMMIT)
        except BaseException:
            await _roll_back(conn)
            raise


def _seed_error(exc: AsyncmigError, f: SqlFile) -> MigrationError:
    """The runner's error, told as a seed's (no version, nothing recorded)."""
    if not isinstance(exc, MigrationError):
        return MigrationError(
            f"seed {f.path.name} failed: {exc.message}; no seed file was kept", path=f.path
        )
    where = f" (statement {exc.statement_index})" if exc.statement_index else ""
    return MigrationError(
        f"seed {f.path.name} failed{where}: {exc.server_message or exc.message}; "
        f"every seed file was rolled back",
        path=exc.path,
        line=exc.line,
        column=exc.column,
        statement_index=exc.statement_index,
        sqlstate=exc.sqlstate,
        detail=exc.detail,
        hint=exc.hint,
        server_message=exc.server_message,
    )


async def _roll_back(conn: Conn) -> None:
    """ROLLBACK, shielded from cancellation and bounded; a session that cannot is ended
    (the server then rolls back)."""
    if conn.is_closed():
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT) as scope:
        try:
            await conn.execute(session.ROLLBACK)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()
