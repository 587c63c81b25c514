"""The command line without a database: help, usage errors, lazy imports, pg tool helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncmig.cli import run
from asyncmig.cli.pgtools import default_dump_name, dump_command, find_tool
from asyncmig.errors import ConfigError

from .cli_helpers import clean_environment, cli, json_lines

COMMANDS = (
    "migrate",
    "rollback",
    "status",
    "validate",
    "create",
    "reset",
    "seed",
    "dump",
    "restore",
    "unlock",
    "wait",
    "verify-rollbacks",
)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)


def test_help_lists_every_command_and_global_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f" {command} " in out
    for option in (
        "--database-url",
        "--env",
        "--config",
        "--sql-dir",
        "--rollback-dir",
        "--schema",
        "--json",
        "--verbose",
        "-v",
        "--lock-timeout",
        "--stale-after",
        "--migration-timeout",
        "--wait-for-db",
        "ASYNCMIG_DATABASE_URL",
        "DATABASE_URL",
        "ASYNCMIG_LOCK_TIMEOUT",
    ):
        assert option in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: asyncmig {command}" in out
    assert "--database-url" in out  # global options are valid after the command too


def test_command_specific_options_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "migrate": [
            "--steps",
            "--target",
            "--dry-run",
            "--atomic",
            "--force",
            "--allow-out-of-order",
            "--resume",
        ],
        "rollback": ["--steps", "--to", "--all", "--dry-run", "--yes"],
        "status": ["--exit-code"],
        "validate": ["--offline"],
        "reset": ["--force", "--yes"],
        "dump": ["--schema-only"],
        "restore": ["--yes"],
        "unlock": ["--force"],
        "wait": ["--timeout", "--interval"],
    }
    for command, options in expected.items():
        run([command, "--help"])
        out = capsys.readouterr().out
        for option in options:
            assert option in out, (command, option)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from asyncmig import __version__

    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["migrate", "--steps", "many"],
        ["migrate", "--no-such-option"],
        ["rollback", "--to"],
        ["create"],
        ["status", "--wait-for-db", "whenever"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run(argv) == 2


def test_usage_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--json", "migrate", "--steps", "many"]) == 2
    (line,) = json_lines(capsys.readouterr().out)
    assert line["event"] == "error"
    assert line["exit_code"] == 2
    assert "steps" in line["message"]


def test_config_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--json", "status", "--lock-timeout", "soon"]) == 2
    (line,) = json_lines(capsys.readouterr().out)
    assert (line["event"], line["type"], line["exit_code"]) == ("error", "ConfigError", 2)


def test_help_imports_neither_driver_nor_engine(tmp_path: Path) -> None:
    code = (
        "import sys, io, contextlib\n"
        "from asyncmig.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run(['--help']) == 0\n"
        "    assert run(['migrate', '--help']) == 0\n"
        "heavy = [m for m in ('asyncpg', 'asyncmig.migrator', 'asyncmig.cli.render', 'anyio',"
        " 'rich.progress') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_help_is_fast_through_the_entry_point(tmp_path: Path) -> None:
    cli("--help", cwd=tmp_path)  # warm the bytecode cache
    best = min(_timed(lambda: cli("--help", cwd=tmp_path)) for _ in range(3))
    print(f"asyncmig --help: {best * 1000:.0f} ms")
    assert best < 1.0  # target 0.3 s (printed by `make bench`); generous for loaded CI


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    result = fn()  # type: ignore[operator]
    assert result.returncode == 0
    return time.perf_counter() - t0


# -- pg tools ---------------------------------------------------------------------------


def test_dump_command_keeps_password_out_of_argv(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    tool = fake / "pg_dump"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    run_ = dump_command(
        "postgresql://u:Pw_MARKER@h/db",
        tmp_path / "out.sql",
        environ={"ASYNCMIG_PG_BINDIR": str(fake)},
    )
    assert all("Pw_MARKER" not in arg for arg in run_.argv)
    assert run_.env["PGPASSWORD"] == "Pw_MARKER"
    assert run_.argv[0] == str(tool)
    assert "--dbname=postgresql://u@h/db" in run_.argv


def test_missing_tools_are_a_clear_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no pg_dump/psql in ASYNCMIG_PG_BINDIR, on PATH or in the usual install
    directories, dump and restore stop with exit 2 and say where they looked, before
    connecting anywhere."""
    with pytest.raises(ConfigError, match=r"pg_dump not found \(looked in PATH and the usual"):
        find_tool("pg_dump", {"PATH": str(tmp_path)}, known=[])
    with pytest.raises(ConfigError, match="looked in ASYNCMIG_PG_BINDIR, PATH"):
        find_tool("psql", {"ASYNCMIG_PG_BINDIR": str(tmp_path)}, known=[])
    monkeypatch.setattr("asyncmig.cli.pgtools.known_bindirs", lambda: [])
    monkeypatch.setenv("PATH", str(tmp_path))
    url = "postgresql://u@127.0.0.1:9/db"
    assert run(["--database-url", url, "dump"]) == 2
    assert "pg_dump not found" in capsys.readouterr().err
    (tmp_path / "b.sql").write_text("SELECT 1;")
    assert run(["--database-url", url, "restore", "b.sql"]) == 2
    assert "psql not found" in capsys.readouterr().err
    assert not list(tmp_path.glob("backup_*"))


def test_dump_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.sql").write_text("precious")
    assert run(["--database-url", "postgresql://u@127.0.0.1:9/db", "dump", "keep.sql"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "keep.sql").read_text() == "precious"
    assert run(["--database-url", "postgresql://u@127.0.0.1:9/db", "restore", "nope.sql"]) == 2


def test_dump_needs_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["dump"]) == 2
    assert "no database given" in capsys.readouterr().err


def test_default_dump_name() -> None:
    from datetime import datetime

    assert default_dump_name(datetime(2026, 1, 2, 3, 4, 5)) == "backup_20260102_030405.sql"


def test_json_env_var_switches_usage_errors_to_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ASYNCMIG_JSON", "1")
    assert run(["migrate", "--bogus"]) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2
    assert os.environ["ASYNCMIG_JSON"] == "1"


INTERRUPT_SCRIPT = """
import signal, sys, time
import anyio
from asyncmig.cli.invoke import Interrupted, run_cancellable

async def work():
    # ready once run_cancellable's watcher has its handler in place (asyncio's
    # add_signal_handler installs _sighandler_noop; before it, SIG_DFL or the Runner's)
    with anyio.fail_after(5):
        while getattr(signal.getsignal(signal.{sig}), "__name__", "") != "_sighandler_noop":
            await anyio.sleep(0)
    print("working", flush=True)
    try:
        await anyio.sleep(30)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.2)  # shielded clean-up still runs to the end
            print("cleaned up", flush=True)

t0 = time.monotonic()
try:
    run_cancellable(work)
except Interrupted as exc:
    print("interrupted", exc.exit_code, round(time.monotonic() - t0, 1), flush=True)
"""


def interrupt(script: str, sig: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``script``; once it prints "working", send it ``sig``. Returns the result and the
    seconds from the signal to its exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script.replace("{sig}", sig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "working\n", (first, proc.stderr.read() if proc.stderr else "")
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), elapsed


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_cancels_the_call_and_lets_shielded_cleanup_finish(sig: str, code: int) -> None:
    out, _elapsed = interrupt(INTERRUPT_SCRIPT, sig)
    assert out.returncode == 0, out.stderr
    cleaned, interrupted = out.stdout.splitlines()
    assert cleaned == "cleaned up"
    word, exit_code, seconds = interrupted.split()
    assert (word, int(exit_code)) == ("interrupted", code)
    assert float(seconds) < 2


def test_cleanup_that_hangs_is_cut_short(tmp_path: Path) -> None:
    script = INTERRUPT_SCRIPT.replace("await anyio.sleep(0.2)", "await anyio.sleep(60)")
    out, elapsed = interrupt(script, "SIGTERM")
    assert out.returncode == 143
    assert elapsed < 7
    assert "cleanup did not finish" in out.stderr
