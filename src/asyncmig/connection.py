"""Opening the run's dedicated connection: retries, keepalives, and a direct-connection check."""

from __future__ import annotations

import random
import time
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .config import Config, redact_dsn
from .errors import ConfigError, ConnectionPoolingError, DatabaseUnreachableError

__all__ = ["Conn", "check_direct", "open_connection", "scrub"]

# The run's connection: its own, or one taken from the caller's pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Server-side keepalives: the server notices a vanished client (killed pod, lost node)
# within about 25 s and ends its session, which frees the advisory lock.
_SERVER_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

# Errors worth retrying while waiting for a database that is still starting.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InvalidCatalogNameError,
)


def _password(dsn: str) -> str | None:
    if "://" in dsn:
        pw = urlsplit(dsn).password
        return unquote(pw) if pw else None
    for token in dsn.split():
        key, _, value = token.partition("=")
        if key.lower() == "password":
            return value.strip("'")
    return None


def scrub(text: str, dsn: str | None) -> str:
    """Remove the DSN's password (raw and URL-encoded) from any text."""
    if not dsn:
        return text
    text = text.replace(dsn, redact_dsn(dsn))
    pw = _password(dsn)
    if pw:
        text = text.replace(pw, "***")
        raw = urlsplit(dsn).password if "://" in dsn else None
        if raw:
            text = text.replace(raw, "***")
    return text


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
    settings: dict[str, str] = {"application_name": app, **_SERVER_SETTINGS}
    deadline = time.monotonic() + max(config.wait_for_db, 0.0)
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.connect(
                dsn, server_settings=settings, timeout=config.connect_timeout
            )
        except _TRANSIENT as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after {attempt} attempts" if attempt > 1 else ""
                raise DatabaseUnreachableError(
                    f"cannot connect to {redact_dsn(dsn)}{waited}: "
                    f"{scrub(str(exc) or type(exc).__name__, dsn)}"
                    + ("" if config.wait_for_db else " (use --wait-for-db to keep retrying)")
                ) from None
            await anyio.sleep(min(remaining, delay * random.uniform(0.7, 1.3)))
            delay = min(delay * 2, 5.0)
        except asyncpg.PostgresError as exc:
            if "unsupported startup parameter" in str(exc):
                raise ConnectionPoolingError(
                    f"{redact_dsn(dsn)} looks like a connection pooler (it refused the "
                    f"session setting: {scrub(str(exc), dsn)}). asyncmig holds a session-level "
                    f"advisory lock and needs a direct connection to PostgreSQL (or a "
                    f"session-pooled port); PgBouncer in transaction pooling cannot work."
                ) from None
            raise DatabaseUnreachableError(
                f"cannot connect to {redact_dsn(dsn)}: {scrub(str(exc), dsn)}"
            ) from None
        except ValueError as exc:  # malformed DSN
            raise ConfigError(
                f"invalid database URL {redact_dsn(dsn)}: {scrub(str(exc), dsn)}"
            ) from None


async def check_direct(conn: Conn) -> int:
    """The backend pid, after checking this is a direct session (not pooled).

    A transaction-pooling proxy (PgBouncer) hands each statement to any server session:
    a session advisory lock would be taken on one and the migration run on another.
    The proxy's key data then differs from the real backend's pid.
    """
    pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
    announced = conn.get_server_pid()
    if announced and announced != pid:
        raise ConnectionPoolingError(
            f"the connection is not a direct session (server announced pid {announced}, "
            f"statements run on backend {pid}): asyncmig needs a session-level advisory "
            f"lock, which transaction pooling (e.g. PgBouncer pool_mode=transaction) breaks. "
            f"Connect to PostgreSQL directly, or through a session-pooled port."
        )
    return pid
