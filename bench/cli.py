"""Command-line benchmarks: start-up as a replica pays it, wall time of the installed
entry point from process start to exit, as whole processes.

* ``asyncmig --help`` and ``asyncmig migrate`` with the 300-migration set applied and
  nothing pending (plain and ``--json``), medians of 10 (issue 11: at most 0.2 s and
  0.3 s), beside ``psql -c 'select 1'`` on the same server for scale. Run like the
  engine bench (:func:`bench.engine.measure`): stdout on a pipe, bytecode cached.
* ``asyncmig status`` with 1,000 applied migrations (issue 4: under 0.5 s), measured
  three ways: plain (a pipe), ``--json``, and on a pseudo-terminal (the rich table).
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
from bench.engine import child_env, compile_bytecode, guarded, make_300, measure

Row = tuple[str, str, str, bool | None]

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
    env = child_env()
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


def _row(label: str, argv: list[str], cwd: Path, target: float | None, n: int = 10) -> Row:
    """Median wall time of ``n`` runs (min, max), and the median CPU time beside it: on a
    busy machine the wall time grows while the CPU time stays about the same."""
    measure(argv, cwd, child_env())  # warm the page cache
    runs = [measure(argv, cwd, child_env()) for _ in range(n)]
    walls = [r["wall"] for r in runs]
    med, lo, hi = statistics.median(walls), min(walls), max(walls)
    cpu = statistics.median(r["cpu"] for r in runs)
    value = (f"{med * 1000:.0f} ms (min {lo * 1000:.0f}, max {hi * 1000:.0f}; n={n}; "
             f"CPU {cpu * 1000:.0f} ms)")  # fmt: skip
    if target is None:
        return (label, value, "-", None)
    return (label, value, f"<= {target * 1000:.0f} ms", med <= target)


def _create_db(server: PgServer) -> str:
    name = f"b_{uuid.uuid4().hex[:10]}"
    subprocess.run([str(server.psql), "-X", "-q", "-c", f'CREATE DATABASE "{name}"',
                    "-d", server.dsn()], check=True, env=child_env())  # fmt: skip
    return server.dsn(name)


def section() -> list[Row]:
    compile_bytecode()
    rows: list[Row] = []
    m300 = make_300()
    rows.append(_row("asyncmig --help", [str(ASYNCMIG), "--help"], m300, 0.2))
    server = PgServer().start()
    try:
        rows += guarded("nothing pending", _idle_rows, server, m300)
        rows += guarded("asyncmig status, 1,000 applied", _status_rows, server)
    finally:
        server.stop()
    return rows


def _idle_rows(server: PgServer, m300: Path) -> list[Row]:
    dsn = _create_db(server)
    subprocess.run([str(ASYNCMIG), "--database-url", dsn, "migrate"], cwd=m300,
                   env=child_env(), check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    idle = [str(ASYNCMIG), "--database-url", dsn, "migrate"]
    json_idle = [str(ASYNCMIG), "--database-url", dsn, "--json", "migrate"]
    psql = [str(server.psql), "-X", "-q", "-d", dsn, "-c", "select 1"]
    return [
        _row("asyncmig migrate, 300 applied, nothing pending", idle, m300, 0.3),
        _row("asyncmig --json migrate, nothing pending", json_idle, m300, 0.3),
        _row("psql -c 'select 1' (for scale)", psql, m300, None),
    ]


def _status_rows(server: PgServer) -> list[Row]:
    rows: list[Row] = []
    root = make_tree()
    env = _env(_create_db(server))
    subprocess.run([str(ASYNCMIG), "migrate"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    for label, argv, tty in (
        ("asyncmig status, 1,000 applied (pipe)", ["status"], False),
        ("asyncmig --json status, 1,000 applied", ["--json", "status"], False),
        ("asyncmig status, 1,000 applied (terminal)", ["status"], True),
    ):
        wall = _median(argv, root, env, tty=tty)
        rows.append((label, f"{wall * 1000:.0f} ms", "< 500 ms", wall < 0.5))
    return rows


if __name__ == "__main__":
    for row in section():
        print(row)
