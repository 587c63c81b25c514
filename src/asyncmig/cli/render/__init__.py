"""How the command line shows events and results: rich terminal, plain lines, JSON lines.

Three renderers share one interface (:class:`~asyncmig.cli.render.base.Renderer`):

* ``RichRenderer`` (:mod:`.live`) — stdout is a terminal: live progress (one bar per
  migration, advancing by statement, with the running statement's first line and how
  long it has been running), then a summary table; ``status`` as a table. Honours
  ``NO_COLOR``. Only this one imports rich.
* :class:`PlainRenderer` (:mod:`.plain`) — not a terminal (CI logs, ``kubectl logs``):
  one line per event, prefixed with its UTC time; errors on stderr.
* :class:`JsonRenderer` (:mod:`.jsonl`) — ``--json``: one JSON object per line on stdout,
  every event (``{"event": "statement_started", "ts": ..., ...}``), results of commands
  without events (``status``, ``validation``, ``created`` …) and errors
  (``{"event": "error", "exit_code": 1, "type": "MigrationError", "sqlstate": ...}``).

Every string written goes through a scrubber that removes the DSN's password, a second
line of defence behind never formatting a password in the first place.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from .base import Renderer, Scrub, ScrubbingWriter, identity
from .jsonl import JsonRenderer
from .plain import PlainRenderer
from .text import describe_event

__all__ = [
    "JsonRenderer",
    "PlainRenderer",
    "Renderer",
    "ScrubbingWriter",
    "describe_event",
    "make_renderer",
]


def make_renderer(
    *,
    json_lines: bool,
    verbose: bool = False,
    scrub: Scrub = identity,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> Renderer:
    """JSON if asked; rich when stdout is a terminal (and TERM is not dumb); else plain."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if json_lines:
        return JsonRenderer(out, scrub=scrub, verbose=verbose)
    if out.isatty() and os.environ.get("TERM") != "dumb":
        from rich.console import Console

        from .live import RichRenderer

        console = Console(file=ScrubbingWriter(out, scrub), highlight=False)  # type: ignore[arg-type]
        err_console = Console(file=ScrubbingWriter(err, scrub), stderr=True, highlight=False)  # type: ignore[arg-type]
        return RichRenderer(console, err_console, verbose=verbose)
    return PlainRenderer(out, err, scrub=scrub, verbose=verbose)
