"""Helpers for the command-line tests: a clean environment, migration trees, subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ASYNCMIG = Path(sys.executable).parent / "asyncmig"

_VARIABLES = ("DATABASE_URL", "NO_COLOR", "FORCE_COLOR", "PGPASSWORD", "PGSERVICE")


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ASYNCMIG_* / DATABASE_URL from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("ASYNCMIG_") and name != "ASYNCMIG_TEST_DSN":
            monkeypatch.delenv(name)
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def tree(root: Path, forward: Mapping[str, str], rollback: Mapping[str, str] = {}) -> Path:
    """Write ``root/sql`` and ``root/rollback``; returns ``root``."""
    for sub, files in (("sql", forward), ("rollback", rollback)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / sub / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


SIMPLE = {
    "001_users.sql": """
        CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
        INSERT INTO users VALUES (1, 'ann'), (2, 'bob');
    """,
    "002_notice.sql": """
        DO $$ BEGIN RAISE NOTICE 'hello from 002'; END $$;
        CREATE INDEX users_name ON users (name);
    """,
}
SIMPLE_ROLLBACK = {
    "001_users_rollback.sql": "DROP TABLE users;\n",
    "002_notice_rollback.sql": "DROP INDEX users_name;\n",
}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``asyncmig`` entry point."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")}
    base.pop("DATABASE_URL", None)
    return subprocess.run(
        [str(ASYNCMIG), *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
