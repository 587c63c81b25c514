"""asyncmig: async PostgreSQL schema migrations.

The public API is listed in ``__all__``; names are imported lazily so that
``asyncmig --help`` does not pay for asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # library
    "Migrator": "migrator",
    "migrate": "migrator",
    "Config": "config",
    "split_statements": "splitter",
    "Statement": "splitter",
    "load_migrations": "loader",
    "Migration": "loader",
    "MigrationSet": "loader",
    "SqlFile": "loader",
    "MigrateReport": "reports",
    "RollbackReport": "reports",
    "StatusReport": "reports",
    "VersionStatus": "reports",
    "ValidationReport": "reports",
    "ValidationIssue": "reports",
    "AppliedMigration": "reports",
    # events
    "Event": "events",
    "PlanItem": "events",
    "RunStarted": "events",
    "LockWaiting": "events",
    "LockAcquired": "events",
    "LockReclaimed": "events",
    "LockReleased": "events",
    "MigrationStarted": "events",
    "StatementStarted": "events",
    "StatementFinished": "events",
    "StatementPlanned": "events",
    "StatementProgress": "events",
    "LockRetry": "events",
    "ServerNotice": "events",
    "Message": "events",
    "MigrationFinished": "events",
    "MigrationFailed": "events",
    "RunFinished": "events",
    # errors
    "AsyncmigError": "errors",
    "ConfigError": "errors",
    "MigrationFileError": "errors",
    "FileNameError": "errors",
    "DuplicateVersionError": "errors",
    "AmbiguousRollbackError": "errors",
    "EncodingError": "errors",
    "DirectiveError": "errors",
    "SplitError": "errors",
    "TransactionControlError": "errors",
    "MissingDirectiveError": "errors",
    "ValidationError": "errors",
    "ChecksumMismatchError": "errors",
    "OutOfOrderError": "errors",
    "MissingFileError": "errors",
    "ResumeRequiredError": "errors",
    "LockError": "errors",
    "PendingTimeoutError": "errors",
    "LockTimeoutError": "errors",
    "LockLostError": "errors",
    "LockTerminateDeniedError": "errors",
    "LockHolder": "models",
    "DatabaseUnreachableError": "errors",
    "ConnectionPoolingError": "errors",
    "MigrationError": "errors",
    "MigrationTimeoutError": "errors",
    "InvalidIndexError": "errors",
    "CommitUncertainError": "errors",
    "LockNotGrantedError": "errors",
    "RollbackFailedError": "errors",
    "RollbackUnavailableError": "errors",
    "ToolFailedError": "errors",
    "VersionMismatchError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .config import Config
    from .errors import (
        AmbiguousRollbackError,
        AsyncmigError,
        ChecksumMismatchError,
        CommitUncertainError,
        ConfigError,
        ConnectionPoolingError,
        DatabaseUnreachableError,
        DirectiveError,
        DuplicateVersionError,
        EncodingError,
        FileNameError,
        InvalidIndexError,
        LockError,
        LockLostError,
        LockNotGrantedError,
        LockTerminateDeniedError,
        LockTimeoutError,
        MigrationError,
        MigrationFileError,
        MigrationTimeoutError,
        MissingDirectiveError,
        MissingFileError,
        OutOfOrderError,
        PendingTimeoutError,
        ResumeRequiredError,
        RollbackFailedError,
        RollbackUnavailableError,
        SplitError,
        ToolFailedError,
        TransactionControlError,
        ValidationError,
        VersionMismatchError,
    )
    from .events import (
        Event,
        LockAcquired,
        LockReclaimed,
        LockReleased,
        LockRetry,
        LockWaiting,
        Message,
        MigrationFailed,
        MigrationFinished,
        MigrationStarted,
        PlanItem,
        RunFinished,
        RunStarted,
        ServerNotice,
        StatementFinished,
        StatementPlanned,
        StatementProgress,
        StatementStarted,
    )
    from .loader import Migration, MigrationSet, SqlFile, load_migrations
    from .migrator import Migrator, migrate
    from .models import LockHolder
    from .reports import (
        AppliedMigration,
        MigrateReport,
        RollbackReport,
        StatusReport,
        ValidationIssue,
        ValidationReport,
        VersionStatus,
    )
    from .splitter import Statement, split_statements


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncmig' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
