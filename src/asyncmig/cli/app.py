"""The ``asyncmig`` application: global options, the launcher, ``run(argv) -> exit code``.

Exit codes (DESIGN §9)::

    0    success, also "nothing to do"
    1    a migration or rollback failed (rolled back and recorded)
    2    usage or configuration error
    3    validation failed (checksum drift, out of order, bad files)
    4    lock not acquired in time / lock lost
    5    database unreachable
    6    pending migrations (status --exit-code, wait timing out)
    130  interrupted by SIGINT, after a clean rollback and lock release
    143  interrupted by SIGTERM, likewise
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

from cyclopts import App, CycloptsError, Parameter

from .. import __version__
from .commands import register
from .options import GlobalOptions

__all__ = ["app", "run"]

app = App(
    name="asyncmig",
    help="Async PostgreSQL schema migrations.",
    version=__version__,
    default_parameter=Parameter(negative=()),
    help_format="plaintext",
    help_epilogue=(
        "Exit codes: 0 ok, 1 migration failed, 2 usage/config, 3 validation, 4 lock, "
        "5 database unreachable, 6 pending, 130/143 interrupted."
    ),
)
register(app)


@app.meta.default
def _launch(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    options: GlobalOptions | None = None,
) -> int:
    from ..errors import AsyncmigError
    from ..render import make_renderer
    from .invoke import Context, Interrupted

    options = options or GlobalOptions()
    scrubber = _Scrubber(options.database_url)
    renderer = make_renderer(json_lines=options.json, verbose=options.verbose, scrub=scrubber)
    if not tokens:
        app.help_print([])
        return 2
    command, bound, ignored = app.parse_args(
        tokens, print_error=not options.json, exit_on_error=False
    )
    try:
        settings = options.resolve()
        scrubber.add(settings.config.dsn)
        ctx = Context(settings, renderer)
        result = command(*bound.args, **bound.kwargs, **dict.fromkeys(ignored, ctx))
        return int(result or 0)
    except Interrupted as exc:
        renderer.interrupted(str(exc), exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        renderer.interrupted("SIGINT", 130)
        return 130
    except AsyncmigError as exc:
        renderer.error(exc, exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # a bug: say so, and show where with -v
        renderer.error(exc, 1)
        return 1


def run(argv: list[str]) -> int:
    """Run the command line and return its exit code (never calls ``sys.exit``)."""
    json_mode = "--json" in argv or _truthy(os.environ.get("ASYNCMIG_JSON"))
    try:
        result = app.meta(
            argv,
            result_action="return_value",
            exit_on_error=False,
            print_error=not json_mode,
        )
    except CycloptsError as exc:
        if json_mode:
            _json_usage_error(exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # --help / --version paths
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return result if isinstance(result, int) else 0


class _Scrubber:
    """Removes the password of every DSN the invocation knows of from output text."""

    def __init__(self, *dsns: str | None) -> None:
        self._dsns: list[str] = []
        for dsn in (*dsns, os.environ.get("ASYNCMIG_DATABASE_URL"), os.environ.get("DATABASE_URL")):
            self.add(dsn)

    def add(self, dsn: str | None) -> None:
        if dsn and dsn not in self._dsns:
            self._dsns.append(dsn)

    def __call__(self, text: str) -> str:
        from ..settings import scrub

        for dsn in self._dsns:
            text = scrub(text, dsn)
        return text


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "y", "t")


def _json_usage_error(exc: CycloptsError) -> None:
    import json
    from datetime import UTC, datetime

    message = str(exc).strip() or type(exc).__name__
    scrub = _Scrubber()
    line = {
        "event": "error",
        "ts": datetime.now(UTC).isoformat(),
        "exit_code": 2,
        "type": "UsageError",
        "message": scrub(message),
    }
    sys.stdout.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()
