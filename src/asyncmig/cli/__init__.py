"""The ``asyncmig`` command line: a thin layer over :class:`asyncmig.Migrator`.

``run(argv)`` parses, calls one library method, renders its events and result, and
returns the exit code (see :mod:`asyncmig.cli.app` for the table).
"""

from __future__ import annotations

from .app import app, run

__all__ = ["app", "run"]
