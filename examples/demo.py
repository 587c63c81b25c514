"""``make demo``: the sample migrations applied to a throwaway PostgreSQL, end to end.

1. start a throwaway server (the one the tests use), unless ``DATABASE_URL`` is set;
2. ``asyncmig migrate`` with live progress, then ``asyncmig status``;
3. row level security at work: two users, each seeing only their own row and audit
   trail, and an admin; each session tries to make itself admin and to verify its own
   e-mail, which sample migration 003 refuses to anyone but an admin;
4. stop the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import asyncpg
from rich.console import Console
from rich.table import Table

from asyncmig._pgserver import PgServer
from asyncmig.dsn import redact

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def asyncmig(dsn: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "asyncmig", "--database-url", dsn, *args]
    console.rule(f"[bold]$ asyncmig {' '.join(args)}")
    subprocess.run(cmd, cwd=ROOT, check=True)


# The escalation each session tries on every row it can see (rolled back afterwards).
ESCALATION = "UPDATE users SET role = 'admin', email_verified = true"


async def attempt(conn: asyncpg.Connection, sql: str) -> str:
    """Run ``sql`` in a savepoint; say what happened (the caller rolls everything back)."""
    try:
        async with conn.transaction():
            status: str = await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        return f"[red]refused[/red] {exc.sqlstate}"
    return f"[green]{status}[/green]"


async def show_rls(dsn: str) -> None:
    console.rule("[bold]Row level security with two users")
    conn = await asyncpg.connect(dsn)
    try:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        await conn.execute("DROP ROLE IF EXISTS demo_app")
        await conn.execute("CREATE ROLE demo_app NOLOGIN")
        await conn.execute("GRANT USAGE ON SCHEMA auth TO demo_app")
        await conn.execute("GRANT SELECT, UPDATE ON users TO demo_app")
        await conn.execute("GRANT SELECT ON users_audit TO demo_app")
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, name, role) VALUES "
            "($1, 'alice@example.com', 'x', 'Alice', 'customer'), "
            "($2, 'bob@example.com', 'x', 'Bob', 'customer')",
            alice,
            bob,
        )
        table = Table(
            "session", "app.user_id", "app.role", "users", "audit rows", "escalation",
            caption=f"escalation: {ESCALATION} (rolled back); migration 003 refuses it "
            "unless app.role is admin",
        )  # fmt: skip
        for label, uid, role in (
            ("alice", alice, "customer"),
            ("bob", bob, "customer"),
            ("admin", None, "admin"),
            ("anonymous", None, ""),
        ):
            session = conn.transaction()
            await session.start()
            try:
                await conn.execute("SET LOCAL ROLE demo_app")
                await conn.execute("SELECT set_config('app.user_id', $1, true)",
                                   str(uid) if uid else "")  # fmt: skip
                await conn.execute("SELECT set_config('app.role', $1, true)", role)
                rows = await conn.fetch("SELECT name FROM users ORDER BY name")
                names = ", ".join(r["name"] for r in rows) or "(none)"
                audit = await conn.fetchval("SELECT count(*) FROM users_audit")
                outcome = await attempt(conn, ESCALATION)
            finally:
                await session.rollback()
            table.add_row(label, str(uid)[:8] + "…" if uid else "-", role or "-",
                          names, str(audit), outcome)  # fmt: skip
        console.print(table)
        await conn.execute("DELETE FROM users WHERE id = ANY($1::uuid[])", [alice, bob])
        await conn.execute("REVOKE ALL ON users, users_audit FROM demo_app")
        await conn.execute("REVOKE ALL ON SCHEMA auth FROM demo_app")
        await conn.execute("DROP ROLE demo_app")
    finally:
        await conn.close()


def main() -> int:
    dsn = os.environ.get("DATABASE_URL")
    server: PgServer | None = None
    if not dsn:
        console.print("[bold]Starting a throwaway PostgreSQL…")
        server = PgServer().start()
        dsn = server.dsn()
        console.print(f"  {server.version()} at {redact(dsn)}")
    try:
        asyncmig(dsn, "migrate")
        asyncmig(dsn, "status")
        anyio.run(show_rls, dsn)
    finally:
        if server is not None:
            server.stop()
            console.print("[bold]Stopped the throwaway server.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
