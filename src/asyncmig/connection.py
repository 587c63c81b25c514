"""The run's connections: opening them (retries, keepalives, a direct-connection check),
and :class:`Connector`, which hands a :class:`~asyncmig.Migrator` its connections from
its own DSN or from a caller's pool, and gives them back."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from . import session
from .config import Config
from .dsn import redact, scrub
from .errors import ConfigError, ConnectionPoolingError, DatabaseUnreachableError

__all__ = ["Conn", "Connector", "check_direct", "client_keepalive", "open_connection"]

T = TypeVar("T")

# The run's connection: its own, or one taken from the caller's pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Keepalives on both ends of every TCP connection asyncmig opens: after 10 s of silence,
# a probe every 5 s, given up after 3 unanswered (about 25 s in all).
# Server side: the server notices a vanished client (killed pod, lost node) and ends its
# session, which frees the advisory lock. Client side: a statement waiting on a peer
# that vanished fails instead of waiting forever (TCP_USER_TIMEOUT does the same for
# data the peer never acknowledges).
_SERVER_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
# PostgreSQL 14+ (Linux, macOS, BSD): a backend busy with a long statement checks this
# often whether its client is still there, and if not, cancels the statement, rolls back
# and exits, so a run that stopped (or a vanished client) frees the lock within seconds
# instead of when the statement would have ended. Left out where the server refuses it.
_CHECK_CLIENT = "client_connection_check_interval"
_CHECK_CLIENT_EVERY = "2s"
_CLIENT_KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
_CLIENT_USER_TIMEOUT_MS = 25_000

# Errors worth retrying while waiting for a database that is still starting.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InvalidCatalogNameError,
)


async def open_connection(
    config: Config, *, purpose: str = ""
) -> asyncpg.Connection[asyncpg.Record]:
    """Connect, retrying with backoff for up to ``config.wait_for_db`` seconds."""
    dsn = config.resolved_dsn()
    if not dsn:
        raise ConfigError(
            "no database given: pass --database-url, set DATABASE_URL, or configure "
            "database_url in asyncmig.toml"
        )
    app = config.application_name + (f" {purpose}" if purpose else "")
    settings: dict[str, str] = {
        "application_name": app,
        **_SERVER_SETTINGS,
        _CHECK_CLIENT: _CHECK_CLIENT_EVERY,
    }
    deadline = time.monotonic() + max(config.wait_for_db, 0.0)
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = await asyncpg.connect(
                dsn, server_settings=settings, timeout=config.connect_timeout
            )
            client_keepalive(conn)
            return conn
        except _TRANSIENT as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after {attempt} attempts" if attempt > 1 else ""
                raise DatabaseUnreachableError(
                    f"cannot connect to {redact(dsn)}{waited}: "
                    f"{scrub(str(exc) or type(exc).__name__, dsn)}"
                    + ("" if config.wait_for_db else " (use --wait-for-db to keep retrying)")
                ) from None
            await anyio.sleep(min(remaining, delay * random.uniform(0.7, 1.3)))
            delay = min(delay * 2, 5.0)
        except asyncpg.PostgresError as exc:
            if _CHECK_CLIENT in str(exc) and _CHECK_CLIENT in settings:
                del settings[_CHECK_CLIENT]  # PostgreSQL 13, or a platform without it
                attempt -= 1
                continue
            if "unsupported startup parameter" in str(exc):
                raise ConnectionPoolingError(
                    f"{redact(dsn)} looks like a connection pooler (it refused the "
                    f"session setting: {scrub(str(exc), dsn)}). asyncmig holds a session-level "
                    f"advisory lock and needs a direct connection to PostgreSQL (or a "
                    f"session-pooled port); PgBouncer in transaction pooling cannot work."
                ) from None
            raise DatabaseUnreachableError(
                f"cannot connect to {redact(dsn)}: {scrub(str(exc), dsn)}"
            ) from None
        except ValueError as exc:  # malformed DSN
            raise ConfigError(
                f"invalid database URL {redact(dsn)}: {scrub(str(exc), dsn)}"
            ) from None


def client_keepalive(conn: Conn) -> bool:
    """Enable TCP keepalives (and a user timeout) on the client's socket; False when
    the connection is not TCP (a Unix socket needs none). asyncpg has no option for
    it, so the socket is taken from the connection's transport."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in _CLIENT_KEEPALIVE.items():
        if hasattr(socket, name):  # Linux, recent macOS
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _CLIENT_USER_TIMEOUT_MS))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError:  # a platform without one of them: the others still help
        return False
    return True


async def check_direct(conn: Conn) -> int:
    """The backend pid, after checking this is a direct session (not pooled).

    A transaction-pooling proxy (PgBouncer) hands each statement to any server session:
    a session advisory lock would be taken on one and the migration run on another.
    The proxy's key data then differs from the real backend's pid.
    """
    pid = int(await conn.fetchval(session.BACKEND_PID))
    announced = conn.get_server_pid()
    if announced and announced != pid:
        raise ConnectionPoolingError(
            f"the connection is not a direct session (server announced pid {announced}, "
            f"statements run on backend {pid}): asyncmig needs a session-level advisory "
            f"lock, which transaction pooling (e.g. PgBouncer pool_mode=transaction) breaks. "
            f"Connect to PostgreSQL directly, or through a session-pooled port."
        )
    return pid


class Connector:
    """Where a Migrator's connections come from: its own DSN, or a caller's ``pool`` (which
    needs room for two: the run's dedicated connection and the heartbeat's)."""

    def __init__(self, config: Config, pool: asyncpg.Pool | None = None) -> None:
        self.config = config
        self.pool = pool

    @asynccontextmanager
    async def connection(self, purpose: str = "") -> AsyncIterator[Conn]:
        """The run's connection, closed (or given back to the pool) on every exit."""
        if self.pool is not None:
            if self.pool.get_max_size() < 2:
                raise ConfigError("the asyncpg pool needs max_size >= 2 (run + heartbeat)")
            pooled = await self.pool.acquire()
            try:
                yield pooled
            finally:
                with anyio.CancelScope(shield=True):
                    await self.pool.release(pooled)
            return
        conn = await open_connection(self.config, purpose=purpose)
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5) as scope:
                await conn.close()
            if scope.cancelled_caught:
                conn.terminate()

    @asynccontextmanager
    async def opened_while(self, work: Callable[[], T]) -> AsyncIterator[tuple[T, Conn]]:
        """Run ``work`` (reading and splitting files) in a worker thread while the
        connection opens: both take milliseconds that need not add up. An error of
        ``work`` wins: it is raised, the connection attempt cancelled."""
        box: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    try:
                        box["result"] = await anyio.to_thread.run_sync(work)
                    except Exception as exc:  # raised below, outside the task group
                        box["work_error"] = exc
                        tg.cancel_scope.cancel()

                tg.start_soon(run)
                try:
                    box["conn"] = await stack.enter_async_context(self.connection())
                except Exception as exc:
                    box["conn_error"] = exc
            for key in ("work_error", "conn_error"):
                if key in box:
                    raise box[key]
            yield box["result"], box["conn"]

    async def connect_side(self) -> Conn:
        """The heartbeat's connection (no waiting for the database: the run has one)."""
        if self.pool is not None:
            return await self.pool.acquire()
        return await open_connection(self.config.with_(wait_for_db=0.0), purpose="heartbeat")

    async def release_side(self, conn: Conn, broken: bool = False) -> None:
        """Give the heartbeat's connection back; a ``broken`` one (failed or hung) is
        ended at once, never reused or closed politely over a dead socket."""
        if broken:
            conn.terminate()
        if self.pool is not None and isinstance(conn, PoolConnectionProxy):
            await self.pool.release(conn)
            return
        try:
            await conn.close(timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()
