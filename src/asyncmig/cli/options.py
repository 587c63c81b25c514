"""The global options, declared once: flattened into the launcher, valid before or after
the command (``asyncmig --json migrate`` = ``asyncmig migrate --json``), each with its
environment variable. ``None`` means "not given", so the config file can fill it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from cyclopts import Group, Parameter

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["GLOBAL", "GlobalOptions"]

GLOBAL = Group("Global options", sort_key=100)


def _env(name: str) -> Parameter:
    return Parameter(env_var=f"ASYNCMIG_{name}", group=GLOBAL)


@Parameter(name="*", group=GLOBAL)
@dataclass(frozen=True, kw_only=True)
class GlobalOptions:
    database_url: Annotated[
        str | None,
        Parameter(env_var=("ASYNCMIG_DATABASE_URL", "DATABASE_URL"), group=GLOBAL),
    ] = None
    """PostgreSQL URL (postgresql://user:password@host:5432/db). Never printed with its
    password."""

    env: Annotated[str | None, _env("ENV")] = None
    """Environment table of the config file to use (dev, staging, production…)."""

    config: Annotated[str | None, _env("CONFIG")] = None
    """Config file (default: ./asyncmig.toml, else [tool.asyncmig] of ./pyproject.toml)."""

    sql_dir: Annotated[str | None, _env("SQL_DIR")] = None
    """Directory of forward migrations [default: sql]."""

    rollback_dir: Annotated[str | None, _env("ROLLBACK_DIR")] = None
    """Directory of rollback files [default: rollback]."""

    seeds_dir: Annotated[str | None, _env("SEEDS_DIR")] = None
    """Directory of seed files [default: seeds]."""

    schema: Annotated[str | None, _env("SCHEMA")] = None
    """Schema of the history tables [default: public]."""

    lock_timeout: Annotated[str | None, _env("LOCK_TIMEOUT")] = None
    """How long to wait for the migration lock, e.g. 30s, 5min; 0 = try once
    [default: 5min]."""

    stale_after: Annotated[str | None, _env("STALE_AFTER")] = None
    """A lock holder without heartbeat for this long is presumed dead and its session
    ended [default: 30s]."""

    migration_timeout: Annotated[str | None, _env("MIGRATION_TIMEOUT")] = None
    """Deadline of each migration; 0 = none [default: none]."""

    ddl_lock_timeout: Annotated[str | None, _env("DDL_LOCK_TIMEOUT")] = None
    """How long a migration's statement may wait for a table lock before the migration
    rolls back and is retried (not the migration lock: see --lock-timeout); 0 = no
    limit, no retries [default: 2s]."""

    lock_retries: Annotated[str | None, _env("LOCK_RETRIES")] = None
    """Attempts of a migration whose lock was not granted in time [default: 10]."""

    lock_retry_sleep: Annotated[str | None, _env("LOCK_RETRY_SLEEP")] = None
    """Sleep before the second attempt; doubles each time, at most 30s, with jitter
    [default: 1s]."""

    lock_retry_deadline: Annotated[str | None, _env("LOCK_RETRY_DEADLINE")] = None
    """At most this long retrying one migration [default: 10min]."""

    lock_retry_wait_last: Annotated[
        bool | None, Parameter(env_var="ASYNCMIG_LOCK_RETRY_WAIT_LAST", group=GLOBAL)
    ] = None
    """Let the last attempt wait for its lock without a limit (a maintenance window)."""

    batch: Annotated[bool | None, Parameter(env_var="ASYNCMIG_BATCH", group=GLOBAL)] = None
    """Send each transactional migration as one message (--no-batch: a round trip per
    statement, with exact row counts in statement events) [default: batch]."""

    wait_for_db: Annotated[str | None, _env("WAIT_FOR_DB")] = None
    """Keep retrying to connect for this long (database still starting) [default: 0]."""

    json: Annotated[bool, Parameter(env_var="ASYNCMIG_JSON", group=GLOBAL)] = False
    """Print one JSON object per line (events, results, errors) on stdout."""

    verbose: Annotated[
        bool, Parameter(name=("--verbose", "-v"), env_var="ASYNCMIG_VERBOSE", group=GLOBAL)
    ] = False
    """Show every statement, lock events and error causes."""

    def resolve(self) -> Settings:
        """Flags/environment over the config file (see :mod:`asyncmig.cli.settings`)."""
        from dataclasses import asdict

        from .launch import resolve_options

        return resolve_options(asdict(self))
