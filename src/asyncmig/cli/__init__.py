"""The ``asyncmig`` command line: a thin layer over :class:`asyncmig.Migrator`.

``run(argv)`` parses, calls one library method, renders its events and result, and
returns the exit code (see :mod:`asyncmig.cli.app` for the table). ``app`` and ``run``
are imported on first use, so that :mod:`asyncmig.cli.launch`'s fast path can answer
``--help`` and ``migrate`` without importing the parser.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import app, run

__all__ = ["app", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(".app", __name__)  # not `from . import app`:
        return getattr(module, name)  # that would look the name up here again
    raise AttributeError(f"module 'asyncmig.cli' has no attribute {name!r}")
