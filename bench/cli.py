"""Command-line benchmarks: ``asyncmig --help`` and ``asyncmig status`` with 1,000 applied
migrations, wall time of the installed entry point from process start to exit.

Targets (issue 4): ``--help`` under 0.3 s; ``status`` (1,000 applied) under 0.5 s.
``status`` is measured three ways: plain (a pipe), ``--json``, and on a pseudo-terminal
(the rich table a person sees).
"""

from __future__ import annotations

import os
import pty
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from asyncmig._pgserver import PgServer

Row = tuple[str, str, str, bool]

DATA = Path(__file__).resolve().parent / ".data"
ASYNCMIG = Path(sys.executable).parent / "asyncmig"


def make_tree(n: int = 1000) -> Path:
    root = DATA / f"cli{n}"
    if (root / "sql" / f"{n:04d}_step_{n}.sql").exists():
        return root
    (root / "sql").mkdir(parents=True, exist_ok=True)
    (root / "rollback").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (root / "sql" / f"{i:04d}_step_{i}.sql").write_text(
            f"-- Migration: step {i}\nCREATE TABLE step_{i} (id int PRIMARY KEY, note text);\n"
        )
        (root / "rollback" / f"{i:04d}_step_{i}_rollback.sql").write_text(f"DROP TABLE step_{i};\n")
    return root


def _env(dsn: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCMIG_")}
    env.pop("DATABASE_URL", None)
    if dsn:
        env["DATABASE_URL"] = dsn
    return env


def _wall(argv: list[str], cwd: Path, env: dict[str, str], *, tty: bool = False) -> float:
    t0 = time.perf_counter()
    if tty:
        primary, secondary = pty.openpty()
        try:
            proc = subprocess.Popen([str(ASYNCMIG), *argv], cwd=cwd, env={**env, "COLUMNS": "120"},
                                    stdout=secondary, stderr=subprocess.DEVNULL)  # fmt: skip
            os.close(secondary)
            while True:  # drain the terminal so the child never blocks on a full buffer
                try:
                    if not os.read(primary, 65536):
                        break
                except OSError:
                    break
            code = proc.wait()
        finally:
            os.close(primary)
    else:
        quiet = subprocess.DEVNULL
        code = subprocess.run([str(ASYNCMIG), *argv], cwd=cwd, env=env, stdout=quiet,
                              stderr=quiet).returncode  # fmt: skip
    elapsed = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"asyncmig {' '.join(argv)} exited with {code}")
    return elapsed


def _median(argv: list[str], cwd: Path, env: dict[str, str], *, tty: bool = False) -> float:
    _wall(argv, cwd, env, tty=tty)  # warm caches
    return statistics.median(_wall(argv, cwd, env, tty=tty) for _ in range(5))


def section() -> list[Row]:
    rows: list[Row] = []
    root = make_tree()
    help_s = _median(["--help"], root, _env())
    rows.append(("asyncmig --help", f"{help_s * 1000:.0f} ms", "< 300 ms", help_s < 0.3))
    server = PgServer().start()
    try:
        name = f"b_{uuid.uuid4().hex[:10]}"
        subprocess.run([str(server.psql), "-X", "-q", "-c", f'CREATE DATABASE "{name}"',
                        "-d", server.dsn()], check=True)  # fmt: skip
        env = _env(server.dsn(name))
        subprocess.run([str(ASYNCMIG), "migrate"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        for label, argv, tty in (
            ("asyncmig status, 1,000 applied (pipe)", ["status"], False),
            ("asyncmig --json status, 1,000 applied", ["--json", "status"], False),
            ("asyncmig status, 1,000 applied (terminal)", ["status"], True),
        ):
            wall = _median(argv, root, env, tty=tty)
            rows.append((label, f"{wall * 1000:.0f} ms", "< 500 ms", wall < 0.5))
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    for row in section():
        print(row)
