"""Configuration for the command line: flags > environment variables > config file
(environment table > top level) > defaults; protected environments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from asyncmig.cli import run
from asyncmig.cli.app import app
from asyncmig.cli.options import GlobalOptions
from asyncmig.cli.settings import Settings, resolve
from asyncmig.errors import ConfigError

from .cli_helpers import clean_environment

FILE = """
database_url = "postgresql://top@db/top"
sql_dir = "migrations/sql"
lock_timeout = "2min"

[environments.dev]
database_url = "postgresql://dev@db/dev"

[environments.staging]
database_url = "postgresql://staging@db/staging"
lock_timeout = 30
schema = "app"

[environments.production]
database_url = "${PROD_URL}"
protected = true
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def settings_for(argv: list[str]) -> Settings:
    """What the launcher would resolve for ``argv`` (flags and env vars via cyclopts)."""
    _, bound, _ = app.meta.parse_args(argv, exit_on_error=False, print_error=False)
    options = bound.kwargs.get("options") or GlobalOptions()
    return options.resolve()


def test_defaults_without_file() -> None:
    s = settings_for(["status"])
    assert s.config_file is None
    assert s.config.dsn is None
    assert s.config.sql_dir == Path("sql")
    assert s.config.lock_timeout == 300
    assert not s.protected


def test_file_top_level_then_environment_table(tmp_path: Path) -> None:
    write(tmp_path / "asyncmig.toml", FILE)
    top = settings_for(["status"])
    assert top.config.dsn == "postgresql://top@db/top"
    assert top.config.lock_timeout == 120
    assert top.config.sql_dir == tmp_path / "migrations/sql"

    staging = settings_for(["--env", "staging", "status"])
    assert staging.config.dsn == "postgresql://staging@db/staging"
    assert staging.config.lock_timeout == 30  # environment table beats top level
    assert staging.config.schema == "app"
    assert staging.config.sql_dir == tmp_path / "migrations/sql"  # inherited
    assert staging.environment == "staging"
    assert staging.config.environment == "staging"
    assert not staging.protected


def test_environment_variables_beat_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "asyncmig.toml", FILE)
    monkeypatch.setenv("ASYNCMIG_ENV", "dev")
    assert settings_for(["status"]).config.dsn == "postgresql://dev@db/dev"
    monkeypatch.setenv("DATABASE_URL", "postgresql://generic@db/x")
    assert settings_for(["status"]).config.dsn == "postgresql://generic@db/x"
    monkeypatch.setenv("ASYNCMIG_DATABASE_URL", "postgresql://specific@db/x")
    assert settings_for(["status"]).config.dsn == "postgresql://specific@db/x"
    monkeypatch.setenv("ASYNCMIG_LOCK_TIMEOUT", "45s")
    monkeypatch.setenv("ASYNCMIG_SQL_DIR", "elsewhere")
    s = settings_for(["status"])
    assert s.config.lock_timeout == 45
    assert s.config.sql_dir == Path("elsewhere")  # relative to the current directory


def test_flags_beat_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "asyncmig.toml", FILE)
    monkeypatch.setenv("ASYNCMIG_ENV", "dev")
    monkeypatch.setenv("ASYNCMIG_DATABASE_URL", "postgresql://env@db/x")
    monkeypatch.setenv("ASYNCMIG_LOCK_TIMEOUT", "45s")
    s = settings_for(
        [
            "--env",
            "staging",
            "--database-url",
            "postgresql://flag@db/x",
            "status",
            "--lock-timeout",
            "500ms",
            "--schema",
            "s2",
        ]
    )
    assert s.environment == "staging"
    assert s.config.dsn == "postgresql://flag@db/x"
    assert s.config.lock_timeout == 0.5
    assert s.config.schema == "s2"


def test_global_options_before_or_after_the_command() -> None:
    before = settings_for(["--migration-timeout", "1h", "--wait-for-db", "10s", "migrate"])
    after = settings_for(["migrate", "--migration-timeout", "1h", "--wait-for-db", "10s"])
    assert before.config == after.config
    assert before.config.migration_timeout == 3600
    assert before.config.wait_for_db == 10


def test_pyproject_table_and_asyncmig_toml_preference(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        """
        [project]
        name = "app"
        [tool.asyncmig]
        schema = "from_pyproject"
    """,
    )
    assert settings_for(["status"]).config.schema == "from_pyproject"
    write(tmp_path / "asyncmig.toml", 'schema = "from_asyncmig_toml"\n')
    assert settings_for(["status"]).config.schema == "from_asyncmig_toml"


def test_pyproject_without_table_is_not_a_config(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert settings_for(["status"]).config_file is None


def test_explicit_config_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "deploy" / "db.toml", 'sql_dir = "sql"\nrollback_dir = "/abs/rollback"\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    s = settings_for(["--config", "../deploy/db.toml", "status"])
    assert s.config.sql_dir == tmp_path / "deploy" / "sql"
    assert s.config.rollback_dir == Path("/abs/rollback")
    monkeypatch.setenv("ASYNCMIG_CONFIG", str(tmp_path / "deploy" / "db.toml"))
    assert settings_for(["status"]).config.sql_dir == tmp_path / "deploy" / "sql"


def test_database_url_reads_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "asyncmig.toml", FILE)
    with pytest.raises(ConfigError, match=r"\$\{PROD_URL\}"):
        settings_for(["--env", "production", "status"])
    monkeypatch.setenv("PROD_URL", "postgresql://prod@db/prod")
    s = settings_for(["--env", "production", "status"])
    assert s.config.dsn == "postgresql://prod@db/prod"
    assert s.protected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lock_timout = "5s"\n', "unknown key 'lock_timout'"),
        ('lock_timeout = "soon"\n', "lock_timeout"),
        ("lock_timeout = -1\n", "negative"),
        ("schema = 5\n", "must be a string"),
        ("[environments.dev]\nprotected = 'yes'\n", "true or false"),
        ("[environments.dev]\ncolour = 1\n", "[environments.dev] unknown key"),
        ("this is not toml", "invalid TOML"),
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "asyncmig.toml", text)
    with pytest.raises(ConfigError) as info:
        resolve({}, cwd=tmp_path)
    assert message in str(info.value)


def test_unknown_environment_names_the_defined_ones(tmp_path: Path) -> None:
    write(tmp_path / "asyncmig.toml", FILE)
    with pytest.raises(ConfigError, match=r"no environment 'prod' .*dev, production, staging"):
        settings_for(["--env", "prod", "status"])


def test_environment_without_tables_only_selects_seeds(tmp_path: Path) -> None:
    write(tmp_path / "asyncmig.toml", 'schema = "x"\n')
    s = settings_for(["--env", "anything", "status"])
    assert s.environment == "anything"
    assert s.config.environment == "anything"


def test_bad_duration_flag_and_missing_config_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["status", "--lock-timeout", "soon"]) == 2
    assert "--lock-timeout" in capsys.readouterr().err
    assert run(["--config", "nope.toml", "status"]) == 2
    assert "config file not found" in capsys.readouterr().err


# -- protected environments ----------------------------------------------------------------


PROTECTED = """
database_url = "postgresql://nobody@127.0.0.1:9/none"
[environments.production]
protected = true
[environments.dev]
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "production", "rollback"],
        ["--env", "production", "rollback", "--all"],
        ["--env", "production", "reset", "--force"],
        ["--env", "production", "restore", "backup.sql"],
    ],
)
def test_protected_environment_refuses_without_yes(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "asyncmig.toml", PROTECTED)
    (tmp_path / "backup.sql").write_text("SELECT 1;\n")
    assert run(argv) == 2  # refused before any connection is attempted
    err = capsys.readouterr().err
    assert "production is protected" in err
    assert "--yes" in err


def test_reset_always_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "asyncmig.toml", PROTECTED)
    assert run(["--env", "dev", "reset"]) == 2
    assert "--force" in capsys.readouterr().err


def test_protected_with_yes_goes_on_to_connect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "asyncmig.toml", PROTECTED)
    (tmp_path / "sql").mkdir()
    (tmp_path / "rollback").mkdir()
    # Port 9 (discard) has no PostgreSQL: getting to "unreachable" proves the guard passed.
    assert run(["--env", "production", "rollback", "--yes", "--json"]) == 5


def test_busy_database_settings_from_flags_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DDL lock timeout and its retry schedule, and batching, come from the file,
    the environment and flags like every setting; the DDL lock timeout is its own
    setting, never the migration lock's wait."""
    default = settings_for(["migrate"]).config
    assert (default.ddl_lock_timeout, default.lock_retries, default.batch) == (2.0, 10, True)
    assert default.lock_timeout == 300  # the wait for the migration lock is untouched
    write(
        tmp_path / "asyncmig.toml",
        'ddl_lock_timeout = "750ms"\nlock_retries = 4\nlock_retry_deadline = "2min"\n'
        "lock_retry_wait_last = true\nbatch = false\n",
    )
    from_file = settings_for(["migrate"]).config
    assert (from_file.ddl_lock_timeout, from_file.lock_retries) == (0.75, 4)
    assert (from_file.lock_retry_deadline, from_file.lock_retry_wait_last) == (120.0, True)
    assert from_file.batch is False
    monkeypatch.setenv("ASYNCMIG_DDL_LOCK_TIMEOUT", "0")
    monkeypatch.setenv("ASYNCMIG_LOCK_RETRIES", "6")
    from_env = settings_for(["migrate"]).config
    assert (from_env.ddl_lock_timeout, from_env.lock_retries) == (0.0, 6)
    flags = settings_for(
        ["--ddl-lock-timeout", "3s", "--lock-retry-sleep", "250ms", "--batch", "migrate"]
    ).config
    assert (flags.ddl_lock_timeout, flags.lock_retry_sleep, flags.batch) == (3.0, 0.25, True)
    assert flags.lock_timeout == 300
    with pytest.raises(ConfigError, match="--lock-retries: expected a whole number"):
        settings_for(["--lock-retries", "0", "migrate"])
