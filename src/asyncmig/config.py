"""Run configuration as one immutable value."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .dsn import redact
from .retries import RetryPolicy

__all__ = ["Config"]


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a :class:`~asyncmig.Migrator` needs to know.

    Durations are in seconds. ``lock_timeout=0`` tries the lock once;
    ``migration_timeout=0`` means no deadline.
    """

    dsn: str | None = None
    sql_dir: Path = Path("sql")
    rollback_dir: Path = Path("rollback")
    seeds_dir: Path = Path("seeds")
    schema: str = "public"
    lock_timeout: float = 300.0
    stale_after: float = 30.0
    heartbeat_interval: float = 5.0
    migration_timeout: float = 0.0
    connect_timeout: float = 10.0
    wait_for_db: float = 0.0
    application_name: str = "asyncmig"
    environment: str | None = None
    batch: bool = True  # a transactional migration as one message; False: a round trip each
    # On a busy database (asyncmig.retries): the DDL lock timeout of a transactional unit
    # (not the wait for the migration lock, which is lock_timeout), and its retries.
    ddl_lock_timeout: float = 2.0
    lock_retries: int = 10
    lock_retry_sleep: float = 1.0
    lock_retry_deadline: float = 600.0
    lock_retry_wait_last: bool = False

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed (paths accept str)."""
        for key in ("sql_dir", "rollback_dir", "seeds_dir"):
            if key in changes and changes[key] is not None:
                changes[key] = Path(changes[key])
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def safe_dsn(self) -> str:
        return redact(self.dsn) if self.dsn else "(pool)"

    def retry_policy(self) -> RetryPolicy:
        """The lock-retry schedule of a transactional unit (:mod:`asyncmig.retries`)."""
        return RetryPolicy(
            lock_timeout=self.ddl_lock_timeout,
            attempts=max(1, self.lock_retries),
            sleep=self.lock_retry_sleep,
            deadline=self.lock_retry_deadline,
            wait_last=self.lock_retry_wait_last,
        )

    def resolved_dsn(self) -> str | None:
        return self.dsn or os.environ.get("DATABASE_URL") or os.environ.get("ASYNCMIG_DATABASE_URL")
