"""Start-up: ``--help``, and ``migrate``, ``rollback [--all]`` and ``status`` with global
options only, answer without importing the parser (cyclopts), and exactly as the parser
would. Speed itself is measured
by ``make bench`` (bench/cli.py), not here."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from cyclopts import Parameter

from asyncmig.cli._helptext import TEXT
from asyncmig.cli.app import app, render_help
from asyncmig.cli.launch import GLOBAL_BOOLS, GLOBAL_TRISTATE, GLOBAL_VALUES, parse_simple
from asyncmig.cli.options import GlobalOptions

from .cli_helpers import SIMPLE, SIMPLE_ROLLBACK, clean_environment, tree


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


def test_pre_rendered_help_is_what_cyclopts_renders() -> None:
    """The fast path's help text equals cyclopts' own (regenerate with
    ``python -m asyncmig.cli.app`` after changing a command or a global option)."""
    assert render_help() == TEXT


def test_global_option_tables_match_global_options() -> None:
    """The fast path's tables name every global option, with its flags and environment
    variables as declared for cyclopts."""
    hints = typing.get_type_hints(GlobalOptions, include_extras=True)
    declared: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for f in fields(GlobalOptions):
        (param,) = [m for m in typing.get_args(hints[f.name])[1:] if isinstance(m, Parameter)]
        names = tuple(param.name) if param.name else ("--" + f.name.replace("_", "-"),)
        env = param.env_var
        declared[f.name] = (names, (env,) if isinstance(env, str) else tuple(env or ()))
    mine = {name: ((flag,), env) for name, (flag, env) in GLOBAL_VALUES.items()}
    mine |= {name: (flags, (env,)) for name, (flags, env) in GLOBAL_BOOLS.items()}
    mine |= {name: ((flag,), (env,)) for name, (flag, env) in GLOBAL_TRISTATE.items()}
    assert mine == declared


SAME_AS_CYCLOPTS: list[tuple[list[str], dict[str, str]]] = [
    (["migrate"], {}),
    (["--database-url", "postgresql://u:pw@h/db", "migrate"], {}),
    (["--database-url=postgresql://u@h/db", "migrate"], {}),
    (["migrate", "--database-url", "postgresql://u@h/db", "--json"], {}),
    (["-v", "--schema", "app", "migrate", "--lock-timeout", "30s"], {}),
    (["migrate"], {"DATABASE_URL": "postgresql://env@h/db"}),
    (["migrate"], {"DATABASE_URL": "postgresql://b@h/db", "ASYNCMIG_DATABASE_URL": "postgresql://a@h/db"}),
    (["--database-url", "postgresql://flag@h/db", "migrate"], {"DATABASE_URL": "postgresql://env@h/db"}),
    (["migrate"], {"ASYNCMIG_JSON": "1", "ASYNCMIG_VERBOSE": "false", "ASYNCMIG_ENV": "staging"}),
    (["migrate"], {"ASYNCMIG_JSON": "Yes", "ASYNCMIG_MIGRATION_TIMEOUT": "10min"}),
    (["--env", "prod", "--config", "x.toml", "--sql-dir", "s", "--rollback-dir", "r",
      "--seeds-dir", "d", "--stale-after", "1min", "--migration-timeout", "0",
      "--wait-for-db", "5s", "migrate"], {}),
    (["rollback"], {}),
    (["--database-url", "postgresql://u@h/db", "rollback", "--all"], {}),
    (["rollback", "--all", "--json"], {"ASYNCMIG_ENV": "ci"}),
    (["--json", "status"], {"DATABASE_URL": "postgresql://env@h/db"}),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "environ"), SAME_AS_CYCLOPTS)
def test_fast_path_reads_global_options_as_cyclopts_does(
    argv: list[str], environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    fast = parse_simple(argv, environ)
    assert fast is not None
    values, command, own = fast
    _, bound, _ = app.meta.parse_args(argv, exit_on_error=False, print_error=False)
    options = bound.kwargs.get("options") or GlobalOptions()
    assert values == asdict(options)
    function, inner, ignored = app.parse_args(bound.args, exit_on_error=False, print_error=False)
    assert function.__name__ == command
    assert {k: v for k, v in inner.kwargs.items() if k not in ignored} == (
        {"all_": True} if "--all" in own else {}
    )


STEPS_ASIDE: list[tuple[list[str], dict[str, str]]] = [
    ([], {}),
    (["status", "--exit-code"], {}),
    (["rollback", "--steps", "1"], {}),
    (["rollback", "--all", "--all"], {}),
    (["--all", "rollback"], {}),
    (["migrate", "--all"], {}),
    (["rollback", "--yes"], {}),
    (["validate"], {}),
    (["migrate", "--steps", "1"], {}),
    (["migrate", "--dry-run"], {}),
    (["migrate", "migrate"], {}),
    (["migrate", "--help"], {}),
    (["--json", "--json", "migrate"], {}),
    (["--schema", "a", "--schema", "b", "migrate"], {}),
    (["--schema", "migrate"], {}),
    (["--schema", "none", "migrate"], {}),
    (["--schema=", "migrate"], {}),
    (["migrate", "--database-url"], {}),
    (["--frobnicate", "migrate"], {}),
    (["migrate"], {"ASYNCMIG_JSON": "on"}),
    (["migrate"], {"ASYNCMIG_VERBOSE": "maybe"}),
    (["migrate"], {"DATABASE_URL": ""}),
    (["migrate"], {"ASYNCMIG_SCHEMA": "null"}),
    (["--no-batch", "migrate"], {}),
    (["migrate"], {"ASYNCMIG_BATCH": "0"}),
]


@pytest.mark.parametrize(("argv", "environ"), STEPS_ASIDE)
def test_fast_path_leaves_everything_else_to_cyclopts(
    argv: list[str], environ: dict[str, str]
) -> None:
    """Other commands, command options, repeats, missing values and values a parser
    could read differently go to cyclopts (``None``)."""
    assert parse_simple(argv, environ) is None


def _run_python(code: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    return out.stdout


def test_help_through_the_entry_point_imports_no_parser(tmp_path: Path) -> None:
    """``asyncmig --help`` prints the help, exits 0, and never imports cyclopts or rich."""
    code = (
        "import io, sys, contextlib\n"
        "sys.argv = ['asyncmig', '--help']\n"
        "from asyncmig.__main__ import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        "heavy = sorted(m for m in ('cyclopts', 'rich', 'asyncpg') if m in sys.modules)\n"
        "print(code, heavy, 'Usage: asyncmig COMMAND' in buf.getvalue())\n"
    )
    assert _run_python(code, tmp_path).split("\n")[0] == "0 [] True"


def test_migrate_with_nothing_pending_runs_without_the_parser(tmp_path: Path, dsn: str) -> None:
    """``asyncmig --database-url URL migrate`` applies, then finds nothing to do, both
    times exiting 0 without importing cyclopts."""
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)
    code = (
        "import sys\n"
        f"sys.argv = ['asyncmig', '--database-url', {dsn!r}, 'migrate']\n"
        "from asyncmig.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'cyclopts' in sys.modules)\n"
    )
    first = _run_python(code, tmp_path).splitlines()
    assert first[-1] == "exit 0 False"
    assert first[-2].endswith(
        "migrate: applied 2 migrations, 1–2 in " + first[-2].rsplit(" ", 1)[-1]
    )
    again = _run_python(code, tmp_path).splitlines()
    assert again[-1] == "exit 0 False"
    assert [line.split(" ", 1)[1] for line in again[:-1]] == ["migrate: nothing to do"]


def test_status_and_rollback_all_run_without_the_parser(tmp_path: Path, dsn: str) -> None:
    """``status`` and ``rollback --all`` with global options only exit 0 without importing
    cyclopts, and do what the full parser's commands do: status lists both applied
    versions, rollback undoes both, and status then shows both pending."""
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)

    def run(*args: str) -> list[str]:
        code = (
            "import sys\n"
            f"sys.argv = ['asyncmig', '--database-url', {dsn!r}, *{list(args)!r}]\n"
            "from asyncmig.__main__ import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    print('exit', exc.code, 'cyclopts' in sys.modules)\n"
        )
        return _run_python(code, tmp_path).splitlines()

    assert run("migrate")[-1] == "exit 0 False"
    before = run("status")
    assert before[-1] == "exit 0 False"
    back = run("rollback", "--all")
    assert back[-1] == "exit 0 False"
    after = run("status")
    assert after[-1] == "exit 0 False"
    states = {line.split()[0]: line.split()[2] for line in before[1:3]}
    assert states == {"1": "applied", "2": "applied"}
    assert back[-2].split(" ", 1)[1].startswith("rollback: rolled back 2 migrations")
    assert [line.split()[2:4] for line in after[1:3]] == [["rolled", "back"]] * 2
    assert after[-2].endswith("nothing applied · 2 pending")
