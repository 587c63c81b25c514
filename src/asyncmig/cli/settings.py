"""Where the command line's configuration comes from: flags, environment, config file.

Precedence, highest first::

    command-line flag            --database-url, --lock-timeout 2min, ...
    environment variable         ASYNCMIG_DATABASE_URL, DATABASE_URL, ASYNCMIG_LOCK_TIMEOUT, ...
    config file, environment     [environments.production] (selected by --env / ASYNCMIG_ENV)
    config file, top level       database_url = ..., sql_dir = ...
    built-in default             Config()

Flags and environment variables are merged by the argument parser (each option declares
its variable); this module receives their result as ``overrides`` (``None`` = not given)
and adds the file. Decisions:

* The file is ``--config FILE`` (or ``ASYNCMIG_CONFIG``); otherwise ``asyncmig.toml`` in
  the current directory, else ``[tool.asyncmig]`` of ``pyproject.toml`` there. A file
  named ``pyproject.toml`` is always read through its ``[tool.asyncmig]`` table.
* Relative paths in the file are relative to the file's directory, so the command works
  from any directory; paths given by flag or variable are relative to the current one.
* ``database_url`` in a file may read ``${NAME}`` from the environment, so a committed
  file never has to hold a password.
* Unknown keys are errors (a typo such as ``lock_timout`` must not be silently ignored).
* ``--env NAME`` must name a table under ``environments`` when the file defines any;
  with no such tables it only selects the seeds subfolder.
* ``protected = true`` (in an environment table, or at top level for every environment)
  makes ``rollback``, ``reset`` and ``restore`` refuse to run without ``--yes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..dsn import redact
from ..durations import parse_duration
from ..errors import ConfigError

__all__ = [
    "DURATION_KEYS",
    "PATH_KEYS",
    "Settings",
    "find_config_file",
    "parse_cli_duration",
    "resolve",
]

PATH_KEYS = ("sql_dir", "rollback_dir", "seeds_dir")
DURATION_KEYS = (
    "lock_timeout",
    "stale_after",
    "heartbeat_interval",
    "migration_timeout",
    "connect_timeout",
    "wait_for_db",
    "ddl_lock_timeout",
    "lock_retry_sleep",
    "lock_retry_deadline",
)
_STRING_KEYS = ("database_url", "schema", "application_name")
_INT_KEYS = ("lock_retries",)
_BOOL_KEYS = ("batch", "lock_retry_wait_last")
_FILE_KEYS = frozenset(
    (*PATH_KEYS, *DURATION_KEYS, *_STRING_KEYS, *_INT_KEYS, *_BOOL_KEYS, "protected")
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one CLI invocation runs with."""

    config: Config
    environment: str | None = None
    protected: bool = False
    config_file: Path | None = None
    # Where each Config field's value came from ("flag/env", "file", "default"): for -v.
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def safe_dsn(self) -> str:
        return redact(self.config.dsn) if self.config.dsn else "(none)"


def find_config_file(explicit: str | Path | None, cwd: Path) -> Path | None:
    """The config file to read, or None when there is none."""
    if explicit is not None:
        path = Path(explicit)
        path = (path if path.is_absolute() else cwd / path).resolve()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = cwd / "asyncmig.toml"
    if candidate.is_file():
        return candidate
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and _read_table(pyproject) is not None:
        return pyproject
    return None


def resolve(
    overrides: Mapping[str, Any],
    *,
    environment: str | None = None,
    config_file: str | Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags/environment ``overrides`` (None = unset) over the config file.

    ``overrides`` keys are :class:`Config` field names (``dsn`` for the URL); durations
    may be strings (``"2min"``) or seconds.
    """
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ
    path = find_config_file(config_file, cwd)
    top: dict[str, Any] = {}
    env_table: dict[str, Any] = {}
    if path is not None:
        table = _read_table(path)
        if table is None:
            raise ConfigError(f"{path}: no [tool.asyncmig] table")
        top, environments = _split_table(table, path)
        if environment is not None and environments:
            if environment not in environments:
                known = ", ".join(sorted(environments)) or "none"
                raise ConfigError(f"{path}: no environment {environment!r} (defined: {known})")
            env_table = environments[environment]

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, label in ((top, "file"), (env_table, f"file [environments.{environment}]")):
        for key, raw in layer.items():
            if key == "protected":
                continue
            name = "dsn" if key == "database_url" else key
            values[name] = _file_value(key, raw, path, environ)
            sources[name] = label
    for name, raw in overrides.items():
        if raw is None:
            continue
        values[name] = _cli_value(name, raw)
        sources[name] = "flag/env"

    protected = bool(env_table.get("protected", top.get("protected", False)))
    try:
        config = Config(environment=environment).with_(**values)
    except TypeError as exc:  # an override key that is not a Config field
        raise ConfigError(str(exc)) from None
    return Settings(
        config=config,
        environment=environment,
        protected=protected,
        config_file=path,
        sources=sources,
    )


# -- internals ---------------------------------------------------------------------------


def _read_table(path: Path) -> dict[str, Any] | None:
    import tomllib  # only with a config file: not on every replica's start-up

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        table = tool.get("asyncmig") if isinstance(tool, dict) else None
        return table if isinstance(table, dict) else None
    return data


def _split_table(
    table: dict[str, Any], path: Path
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    top = {k: v for k, v in table.items() if k != "environments"}
    _check_keys(top, path, "")
    environments = table.get("environments", {})
    if not isinstance(environments, dict):
        raise ConfigError(f"{path}: 'environments' must be a table of tables")
    for name, env in environments.items():
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: [environments.{name}] must be a table")
        _check_keys(env, path, f"[environments.{name}] ")
    return top, environments


def _check_keys(table: Mapping[str, Any], path: Path, where: str) -> None:
    for key in table:
        if key not in _FILE_KEYS:
            known = ", ".join(sorted(_FILE_KEYS))
            raise ConfigError(f"{path}: {where}unknown key {key!r} (known keys: {known})")
    if "protected" in table and not isinstance(table["protected"], bool):
        raise ConfigError(f"{path}: {where}protected must be true or false")


def _file_value(key: str, raw: Any, path: Path | None, environ: Mapping[str, str]) -> Any:
    where = f"{path}: {key}"
    if key in DURATION_KEYS:
        return parse_cli_duration(raw, where)
    if key == "protected":
        return raw
    if key in _INT_KEYS or key in _BOOL_KEYS:
        return _typed(key, raw, where)
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string")
    if key == "database_url":
        return _expand(raw, where, environ)
    if key in PATH_KEYS and path is not None:
        p = Path(raw)
        return p if p.is_absolute() else path.parent / p
    return raw


def _cli_value(name: str, raw: Any) -> Any:
    if name in DURATION_KEYS:
        return parse_cli_duration(raw, "--" + name.replace("_", "-"))
    if name in _INT_KEYS or name in _BOOL_KEYS:
        return _typed(name, raw, "--" + name.replace("_", "-"))
    return raw


def _typed(key: str, raw: Any, where: str) -> int | bool:
    """A count (at least 1) or a yes/no, from a file's value or a flag's string."""
    if key in _BOOL_KEYS:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    try:
        value = int(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or value < 1:
        raise ConfigError(f"{where}: expected a whole number, 1 or more, got {raw!r}")
    return value


def parse_cli_duration(raw: Any, where: str) -> float:
    """Seconds from a duration string (``"2min"``) or number; ConfigError naming ``where``."""
    if isinstance(raw, bool):
        raise ConfigError(f"{where}: expected a duration such as 5s or 2min, got {raw!r}")
    if isinstance(raw, int | float):
        if raw < 0:
            raise ConfigError(f"{where}: a duration cannot be negative")
        return float(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a duration such as 5s or 2min")
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _expand(value: str, where: str, environ: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"{where} refers to ${{{name}}}, which is not set")
        return environ[name]

    return _VAR.sub(sub, value)
