"""Start-up without the parser: what every invocation runs after parsing, and the fast
path for what replicas run every time.

Importing cyclopts and building its argument model costs about 0.1 s, a third of a
``migrate`` that finds nothing to do. So :func:`fast_run` answers two invocations before
cyclopts is imported:

* ``asyncmig --help`` / ``-h``: the help text pre-rendered into :mod:`._helptext` at 80
  columns (what cyclopts prints on a pipe); ``tests/test_cli_startup.py`` checks that it
  equals cyclopts' own rendering, and ``python -m asyncmig.cli.app`` rewrites it.
* ``asyncmig [global options] migrate``, ``rollback [--all]`` and ``status``, with no
  other options of their own (what replicas, deploy scripts and CI run): the global
  options are read here, by the same rules as cyclopts (flag over environment variable,
  the first listed environment variable wins, booleans spelled ``1/0 yes/no y/n
  true/false t/f``). Anything else (another command or option, an unknown token, a value
  cyclopts might read differently such as ``none`` or an empty variable) returns
  ``None`` and the full parser handles it, so the fast path can only agree with cyclopts
  or step aside; the tests compare the two on a table of command lines, and the
  commands below do what :mod:`.commands` does with those options.

:func:`launch` is the part both paths share: renderer, settings, the command, and the
mapping of errors to exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .invoke import Context
    from .settings import Settings

__all__ = [
    "GLOBAL_BOOLS",
    "GLOBAL_TRISTATE",
    "GLOBAL_VALUES",
    "fast_run",
    "launch",
    "parse_simple",
    "resolve_options",
]

# Global options taking a value: field name -> (flag, environment variables, first wins).
GLOBAL_VALUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "database_url": ("--database-url", ("ASYNCMIG_DATABASE_URL", "DATABASE_URL")),
    "env": ("--env", ("ASYNCMIG_ENV",)),
    "config": ("--config", ("ASYNCMIG_CONFIG",)),
    "sql_dir": ("--sql-dir", ("ASYNCMIG_SQL_DIR",)),
    "rollback_dir": ("--rollback-dir", ("ASYNCMIG_ROLLBACK_DIR",)),
    "seeds_dir": ("--seeds-dir", ("ASYNCMIG_SEEDS_DIR",)),
    "schema": ("--schema", ("ASYNCMIG_SCHEMA",)),
    "lock_timeout": ("--lock-timeout", ("ASYNCMIG_LOCK_TIMEOUT",)),
    "stale_after": ("--stale-after", ("ASYNCMIG_STALE_AFTER",)),
    "migration_timeout": ("--migration-timeout", ("ASYNCMIG_MIGRATION_TIMEOUT",)),
    "wait_for_db": ("--wait-for-db", ("ASYNCMIG_WAIT_FOR_DB",)),
    "ddl_lock_timeout": ("--ddl-lock-timeout", ("ASYNCMIG_DDL_LOCK_TIMEOUT",)),
    "lock_retries": ("--lock-retries", ("ASYNCMIG_LOCK_RETRIES",)),
    "lock_retry_sleep": ("--lock-retry-sleep", ("ASYNCMIG_LOCK_RETRY_SLEEP",)),
    "lock_retry_deadline": ("--lock-retry-deadline", ("ASYNCMIG_LOCK_RETRY_DEADLINE",)),
}
# Global flags: field name -> (flags, environment variable).
GLOBAL_BOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "json": (("--json",), "ASYNCMIG_JSON"),
    "verbose": (("--verbose", "-v"), "ASYNCMIG_VERBOSE"),
}
# Tri-state global flags (None: not given; --name / --no-name): whenever one is given,
# by flag or environment, the command line goes to cyclopts.
GLOBAL_TRISTATE: dict[str, tuple[str, str]] = {
    "lock_retry_wait_last": ("--lock-retry-wait-last", "ASYNCMIG_LOCK_RETRY_WAIT_LAST"),
    "batch": ("--batch", "ASYNCMIG_BATCH"),
}
_TRUE = frozenset({"yes", "y", "1", "true", "t"})
_FALSE = frozenset({"no", "n", "0", "false", "f"})
# Commands the fast path runs -> the options of their own it accepts (flags only).
_FAST_COMMANDS: dict[str, frozenset[str]] = {
    "migrate": frozenset(),
    "rollback": frozenset({"--all"}),
    "status": frozenset(),
}


def resolve_options(values: Mapping[str, Any]) -> Settings:
    """Settings from the global options' values (flags/environment over the config file;
    see :mod:`asyncmig.cli.settings`)."""
    from .settings import resolve

    overrides = {
        "dsn": values.get("database_url"),
        **{
            k: values.get(k)
            for k in (
                "sql_dir",
                "rollback_dir",
                "seeds_dir",
                "schema",
                "lock_timeout",
                "stale_after",
                "migration_timeout",
                "wait_for_db",
                "ddl_lock_timeout",
                "lock_retries",
                "lock_retry_sleep",
                "lock_retry_deadline",
                "batch",
                "lock_retry_wait_last",
            )
        },
    }
    return resolve(overrides, environment=values.get("env"), config_file=values.get("config"))


def launch(values: Mapping[str, Any], command: Callable[[Context], object]) -> int:
    """Run ``command`` with a renderer and settings for these global options; render
    errors and interruptions and return the exit code."""
    from ..errors import AsyncmigError
    from .invoke import Context, Interrupted, Scrubber
    from .render import make_renderer

    scrubber = Scrubber(values.get("database_url"))
    json_lines, verbose = bool(values.get("json")), bool(values.get("verbose"))
    renderer = make_renderer(json_lines=json_lines, verbose=verbose, scrub=scrubber)
    try:
        settings = resolve_options(values)
        scrubber.add(settings.config.dsn)
        result = command(Context(settings, renderer))
        return result if isinstance(result, int) else 0
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


def parse_simple(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[dict[str, Any], str, frozenset[str]] | None:
    """``(global option values, command, its flags)`` for a command line made only of
    global options and one command of :data:`_FAST_COMMANDS` with flags it accepts;
    ``None`` for anything else."""
    flags = {flag: name for name, (flag, _) in GLOBAL_VALUES.items()}
    switches = {flag: name for name, (names, _) in GLOBAL_BOOLS.items() for flag in names}
    values: dict[str, Any] = {}
    command: str | None = None
    own: set[str] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if command is not None and token in _FAST_COMMANDS[command]:
            if token in own:
                return None
            own.add(token)
            continue
        if token in switches:
            if switches[token] in values:
                return None
            values[switches[token]] = True
            continue
        name, eq, value = token.partition("=")
        if name in flags:
            if not eq:
                if i >= len(argv):
                    return None
                value = argv[i]
                i += 1
            if flags[name] in values or not _plain_value(value):
                return None
            values[flags[name]] = value
            continue
        if token in _FAST_COMMANDS and command is None:
            command = token
            continue
        return None
    if command is None:
        return None
    for name, (_, var) in GLOBAL_TRISTATE.items():
        if var in environ:
            return None
        values[name] = None
    for name, (_, variables) in GLOBAL_VALUES.items():
        if name in values:
            continue
        for var in variables:
            if var in environ:
                if not _plain_value(environ[var]):
                    return None
                values[name] = environ[var]
                break
        else:
            values[name] = None
    for name, (_, var) in GLOBAL_BOOLS.items():
        if name in values:
            continue
        raw = environ.get(var)
        if raw is None:
            values[name] = False
        elif raw.lower() in _TRUE or raw.lower() in _FALSE:
            values[name] = raw.lower() in _TRUE
        else:
            return None
    return values, command, frozenset(own)


def _plain_value(value: str) -> bool:
    """A value every parser reads the same way (cyclopts reads ``none``/``null`` as None
    for optional options, and a leading ``-`` as another option)."""
    return bool(value) and not value.startswith("-") and value.lower() not in ("none", "null")


def fast_run(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """The exit code if this command line took the fast path, else ``None``."""
    if list(argv) in (["--help"], ["-h"]):
        from ._helptext import TEXT

        sys.stdout.write(TEXT)
        sys.stdout.flush()
        return 0
    parsed = parse_simple(argv, os.environ if environ is None else environ)
    if parsed is None:
        return None
    values, command, own = parsed
    if command == "migrate":
        return launch(values, _migrate)
    if command == "rollback":
        return launch(values, lambda ctx: _rollback(ctx, all_="--all" in own))
    return launch(values, _status)


def _migrate(ctx: Context) -> int:
    """``asyncmig migrate`` with its defaults (as :func:`.commands.migrate`)."""
    ctx.call(lambda m: m.migrate())
    return 0


def _rollback(ctx: Context, *, all_: bool) -> int:
    """``asyncmig rollback [--all]`` (as :func:`.commands.rollback`)."""
    ctx.refuse_if_protected(False, "rollback")
    ctx.call(lambda m: m.rollback(all=all_))
    return 0


def _status(ctx: Context) -> int:
    """``asyncmig status`` (as :func:`.commands.status`)."""
    report = ctx.call(lambda m: m.status(), live=False)
    ctx.renderer.status(report)
    return 0
