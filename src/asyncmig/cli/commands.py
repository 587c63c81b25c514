"""The commands: parse, call one library method, render, return the exit code.

Each command receives a :class:`~asyncmig.cli.invoke.Context` (settings + renderer) from
the launcher; errors propagate to the launcher, which renders them and maps them to exit
codes. Heavy modules (asyncpg, rich, the engine) are imported inside the commands, so
``asyncmig --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from .invoke import Context

__all__ = ["register"]

EXIT_PENDING = 6

Ctx = Annotated[Context, Parameter(parse=False)]
Yes = Annotated[bool, Parameter(name=("--yes", "-y"))]


def register(app: App) -> None:
    for fn in (
        migrate,
        rollback,
        status,
        validate,
        create,
        reset,
        seed,
        dump,
        restore,
        unlock,
        wait,
        verify_rollbacks,
    ):
        app.command(fn)


def migrate(
    *,
    steps: int | None = None,
    target: int | None = None,
    dry_run: bool = False,
    atomic: bool = False,
    force: bool = False,
    allow_out_of_order: bool = False,
    resume: bool = False,
    rebuild_invalid: bool = False,
    ctx: Ctx,
) -> int:
    """Apply pending migrations (nothing pending: exit 0 at once, without the lock).

    Parameters
    ----------
    steps
        Apply at most N migrations.
    target
        Apply up to and including this version.
    dry_run
        Show what would run, statement by statement; change nothing, take no lock.
    atomic
        All selected migrations in one transaction: all or nothing.
    force
        Run even though applied files changed since (checksum drift).
    allow_out_of_order
        Apply pending versions older than the newest applied one.
    resume
        Continue a failed no-transaction migration after its last completed statement.
    rebuild_invalid
        Drop concurrently and build again an INVALID index a failed build left.
    """
    ctx.call(
        lambda m: m.migrate(
            steps=steps,
            target=target,
            dry_run=dry_run,
            atomic=atomic,
            force=force,
            allow_out_of_order=allow_out_of_order,
            resume=resume,
            rebuild_invalid=rebuild_invalid,
        )
    )
    return 0


def rollback(
    *,
    steps: int | None = None,
    to: int | None = None,
    all_: Annotated[bool, Parameter(name="--all")] = False,
    dry_run: bool = False,
    yes: Annotated[bool, Parameter(name=("--yes", "-y", "--force"))] = False,
    ctx: Ctx,
) -> int:
    """Undo applied migrations, newest first (default: the newest one).

    Parameters
    ----------
    steps
        Undo the N newest migrations.
    to
        Undo every migration newer than this version (it stays applied).
    all_
        Undo every applied migration.
    dry_run
        Show what would be undone; change nothing.
    yes
        Confirm a rollback in a protected environment.
    """
    if not dry_run:
        ctx.refuse_if_protected(yes, "rollback")
    ctx.call(lambda m: m.rollback(steps=steps, to=to, all=all_, dry_run=dry_run))
    return 0


def status(*, exit_code: bool = False, ctx: Ctx) -> int:
    """Every version on disk or in history: state, when, by whom, how long, drift.

    Parameters
    ----------
    exit_code
        Exit with 6 when any migration is pending (for scripts).
    """
    report = ctx.call(lambda m: m.status(), live=False)
    ctx.renderer.status(report)
    return EXIT_PENDING if exit_code and report.pending else 0


def validate(*, offline: bool = False, ctx: Ctx) -> int:
    """Check files (names, duplicates, splitting, directives, transaction control) and,
    with a database, history (checksum drift, missing files, out-of-order). Exit 3 on
    any error; warnings alone pass. Without a database URL the check is offline.

    Parameters
    ----------
    offline
        Check the files only, even when a database URL is configured.
    """
    online = not offline and ctx.settings.config.resolved_dsn() is not None
    report = ctx.call(lambda m: m.validate(online=online), live=False)
    ctx.renderer.validation(report)
    return 0 if report.ok else 3


def create(name: str, /, *, ctx: Ctx) -> int:
    """Create sql/<yyyymmddHHMMSS>_<name>.sql and its rollback file from templates.

    Parameters
    ----------
    name
        What the migration does, e.g. "add orders table" (lowercased; spaces and dashes
        become underscores; no paths).
    """
    from ..scaffold import create_migration

    config = ctx.settings.config
    created = create_migration(name, config.sql_dir, config.rollback_dir)
    ctx.renderer.result(
        "created", f"created {created.forward} and {created.rollback}", **created.to_dict()
    )
    return 0


def reset(
    *,
    force: bool = False,
    yes: Yes = False,
    ctx: Ctx,
) -> int:
    """Roll back every migration, then apply them all again (development databases).

    Parameters
    ----------
    force
        Required: confirms that all data in migrated tables may be lost.
    yes
        Also required in a protected environment.
    """
    from ..errors import ConfigError

    if not force:
        raise ConfigError("reset drops everything the migrations created: pass --force")
    ctx.refuse_if_protected(yes, "reset")
    ctx.call(lambda m: m.reset())
    return 0


def seed(*, ctx: Ctx) -> int:
    """Run seeds/*.sql, then seeds/<env>/*.sql, in one transaction."""
    env = ctx.settings.environment
    files = ctx.call(lambda m: m.seed(environment=env), live=False)
    text = (
        f"seeded {len(files)} file{'s' if len(files) != 1 else ''}"
        if files
        else (f"no seed files in {ctx.settings.config.seeds_dir}")
    )
    ctx.renderer.result("seeded", text, files=list(files))
    return 0


def dump(file: Path | None = None, /, *, schema_only: bool = False, ctx: Ctx) -> int:
    """Back the database up with pg_dump (plain SQL).

    Parameters
    ----------
    file
        Output file [default: backup_YYYYmmdd_HHMMSS.sql]; never overwritten.
    schema_only
        Dump the schema without data.
    """
    from .invoke import run_cancellable
    from .pgtools import default_dump_name, run_dump

    output = file or Path(default_dump_name())
    dsn = ctx.require_dsn()
    run_cancellable(lambda: run_dump(dsn, output, schema_only=schema_only))
    ctx.renderer.result("dumped", f"wrote {output}", file=str(output))
    return 0


def restore(file: Path, /, *, yes: Yes = False, ctx: Ctx) -> int:
    """Run a SQL file (e.g. from dump) with psql, in one transaction, stopping at the
    first error.

    Parameters
    ----------
    file
        The SQL file to run.
    yes
        Confirm a restore in a protected environment.
    """
    from .invoke import run_cancellable
    from .pgtools import run_restore

    ctx.refuse_if_protected(yes, "restore")
    dsn = ctx.require_dsn()
    run_cancellable(lambda: run_restore(dsn, file))
    ctx.renderer.result("restored", f"restored {file}", file=str(file))
    return 0


def unlock(*, force: bool = False, ctx: Ctx) -> int:
    """Show who holds the migration lock; with --force, end that session to free it.

    Parameters
    ----------
    force
        Terminate the holder's backend (its migration rolls back) and log it.
    """
    holder = ctx.call(lambda m: m.unlock(force=force), live=False)
    ctx.renderer.lock_holder(holder, forced=force)
    return 0


def wait(*, timeout: str = "5min", interval: str = "1s", ctx: Ctx) -> int:
    """Block until no migration is pending (replicas that must not migrate themselves).
    Exit 6 if some still are when the timeout passes.

    Parameters
    ----------
    timeout
        How long to wait, e.g. 30s, 10min.
    interval
        How often to look.
    """
    from .settings import parse_cli_duration

    limit = parse_cli_duration(timeout, "--timeout")
    every = parse_cli_duration(interval, "--interval")
    report = ctx.call(lambda m: m.wait(timeout=limit, poll_interval=every), live=False)
    current = report.current_version
    ctx.renderer.result(
        "ready",
        f"nothing pending; database at version {current}"
        if current is not None
        else "nothing pending",
        current_version=current,
    )
    return 0


def verify_rollbacks(*, ctx: Ctx) -> int:
    """For each migration in order, in a throwaway database: snapshot the catalog, apply,
    roll back, compare, apply again. Exit 3 naming the first rollback that does not
    restore the catalog (and any that fails, or after which the migration cannot be
    applied again). The database URL only names the server (the role needs CREATEDB);
    without one, an embedded server is started.
    """
    from ..testing.cli import verify

    report = verify(ctx.settings.config)
    ctx.renderer.result("rollbacks", report.summary(), **report.to_dict())
    return 0 if report.ok else 3
