"""asyncmig: async PostgreSQL schema migrations.

The public API is listed in ``__all__``; names are imported lazily so that
``asyncmig --help`` does not pay for asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
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
    "LockTimeoutError": "errors",
    "LockLostError": "errors",
    "LockHolder": "errors",
    "DatabaseUnreachableError": "errors",
    "ConnectionPoolingError": "errors",
    "MigrationError": "errors",
    "MigrationTimeoutError": "errors",
    "RollbackFailedError": "errors",
    "RollbackUnavailableError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .errors import (
        AmbiguousRollbackError,
        AsyncmigError,
        ChecksumMismatchError,
        ConfigError,
        ConnectionPoolingError,
        DatabaseUnreachableError,
        DirectiveError,
        DuplicateVersionError,
        EncodingError,
        FileNameError,
        LockError,
        LockHolder,
        LockLostError,
        LockTimeoutError,
        MigrationError,
        MigrationFileError,
        MigrationTimeoutError,
        MissingDirectiveError,
        MissingFileError,
        OutOfOrderError,
        ResumeRequiredError,
        RollbackFailedError,
        RollbackUnavailableError,
        SplitError,
        TransactionControlError,
        ValidationError,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncmig' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
