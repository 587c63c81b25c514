"""``dump`` and ``restore``: thin wrappers over PostgreSQL's own pg_dump and psql.

* The tools are looked up in ``$ASYNCMIG_PG_BINDIR`` first, then on ``PATH``; when
  missing, a :class:`ConfigError` (exit 2) says how to install or point at them.
* The password never reaches argv (visible in ``ps``): the DSN is passed without it and
  the password travels in ``PGPASSWORD``. ``--no-password`` makes the tools fail instead
  of prompting, so CI never hangs.
* ``dump`` writes plain SQL (``backup_YYYYmmdd_HHMMSS.sql`` by default) to a temporary
  name first and renames it when pg_dump succeeded, so a failed dump leaves no
  half-written backup; an existing file is never overwritten.
* ``restore`` runs ``psql --single-transaction -v ON_ERROR_STOP=1``: a file that fails
  half-way changes nothing.
* A tool that cannot connect is :class:`DatabaseUnreachableError` (exit 5); any other
  failure is :class:`ToolFailedError` (exit 1) carrying the tool's own message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .errors import AsyncmigError, ConfigError, DatabaseUnreachableError

__all__ = [
    "ToolFailedError",
    "ToolRun",
    "default_dump_name",
    "dump_command",
    "execute",
    "find_tool",
    "finish",
    "restore_command",
    "split_password",
]

_UNREACHABLE_MARKERS = (
    "connection to server",
    "could not connect",
    "could not translate host name",
    "does not exist",  # database "x" does not exist
    "password authentication failed",
    "no password supplied",
)


class ToolFailedError(AsyncmigError):
    """pg_dump or psql ran and failed; ``stderr`` holds its (password-free) message."""

    exit_code = 1

    def __init__(self, message: str, *, tool: str, returncode: int, stderr: str) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool invocation: argv (no secrets) and the environment to add (may have some)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    output: Path | None = None  # dump: the final file name


def find_tool(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """``pg_dump``/``psql`` from ``$ASYNCMIG_PG_BINDIR`` or ``PATH``."""
    environ = os.environ if environ is None else environ
    bindir = environ.get("ASYNCMIG_PG_BINDIR")
    if bindir:
        candidate = Path(bindir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise ConfigError(f"{name} not found in ASYNCMIG_PG_BINDIR ({bindir})")
    found = shutil.which(name, path=environ.get("PATH"))
    if found is None:
        raise ConfigError(
            f"{name} not found on PATH: install the PostgreSQL client tools "
            f"(e.g. apt-get install postgresql-client) or set ASYNCMIG_PG_BINDIR to "
            f"the directory that holds {name}"
        )
    return Path(found)


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password, and the password (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        password = unquote(parts.password) if parts.password else None
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hostinfo}" if user else hostinfo
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() == "password":
                password = value
            else:
                query.append((key, value))
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))), password
    kept: list[str] = []
    password = None
    for token in dsn.split():
        key, _, value = token.partition("=")
        if key.lower() == "password":
            password = value.strip("'")
        else:
            kept.append(token)
    return " ".join(kept), password


def default_dump_name(now: datetime | None = None) -> str:
    return f"backup_{(now or datetime.now()).strftime('%Y%m%d_%H%M%S')}.sql"


def dump_command(
    dsn: str,
    output: Path,
    *,
    schema_only: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ToolRun:
    """pg_dump into ``output`` (via ``output.partial``); refuses an existing file."""
    if output.exists():
        raise ConfigError(f"{output} already exists; not overwriting it")
    tool = find_tool("pg_dump", environ)
    conninfo, password = split_password(dsn)
    argv = [str(tool), "--no-password", "--format=plain", f"--file={_partial(output)}"]
    if schema_only:
        argv.append("--schema-only")
    argv.append(f"--dbname={conninfo}")
    return ToolRun(tuple(argv), _env(password), output)


def restore_command(dsn: str, file: Path, *, environ: Mapping[str, str] | None = None) -> ToolRun:
    """psql running ``file`` in one transaction, stopping at the first error."""
    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    tool = find_tool("psql", environ)
    conninfo, password = split_password(dsn)
    argv = [
        str(tool), "--no-password", "--no-psqlrc", "--quiet", "--single-transaction",
        "--set=ON_ERROR_STOP=1", f"--file={file}", f"--dbname={conninfo}",
    ]  # fmt: skip
    return ToolRun(tuple(argv), _env(password))


async def execute(run: ToolRun) -> None:
    """Run the tool (cancellable: a cancelled run kills it) and check its result."""
    import anyio

    env = {**os.environ, **run.env}
    result = await anyio.run_process(list(run.argv), env=env, check=False)
    finish(run, result.returncode, result.stderr.decode("utf-8", "replace"))


def finish(run: ToolRun, returncode: int, stderr: str) -> None:
    """Raise the right error for a failed run; on success move the dump into place."""
    tool = Path(run.argv[0]).name
    if returncode != 0:
        if run.output is not None:
            _partial(run.output).unlink(missing_ok=True)
        text = stderr.strip()
        first = text.splitlines()[0] if text else f"{tool} exited with status {returncode}"
        if any(marker in text for marker in _UNREACHABLE_MARKERS) and "ERROR:" not in text:
            raise DatabaseUnreachableError(f"{tool} could not connect: {first}")
        raise ToolFailedError(f"{tool} failed: {first}", tool=tool, returncode=returncode,
                              stderr=text)  # fmt: skip
    if run.output is not None:
        _partial(run.output).replace(run.output)


def _partial(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _env(password: str | None) -> dict[str, str]:
    env = {"PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "10")}
    if password is not None:
        env["PGPASSWORD"] = password
    return env
