"""The shipped sample migrations, rollbacks and seeds do what the seed spec's checklist asks.

Checklist items covered here (検証項目), against a real server:

* パフォーマンスインデックスが適切に作成されること — every index of 001 exists with the
  right method, columns and partial predicate, is valid, and the planner uses the GIN one;
* Row Level Securityが正しく適用されること — a non-owner role sees and updates only its
  own row, an admin sees all, a session without ``app.user_id`` sees nothing;
* ロールバック機能が正常に動作すること — the rollbacks, newest first, return the database
  to exactly its empty catalog, and the migrations apply again afterwards;
* plus the ``updated_at`` trigger, the audit trigger of 002 and the idempotent seeds;
* and 003, which closes the seed's privilege escalation: a customer cannot change their
  own role, verification, lockout or deletion columns (an admin can), and ``users_audit``
  shows a user only their own rows, also to an application connected as its owner.

The files are applied by :func:`apply_samples` (and undone by :func:`rollback_samples`,
seeded by :func:`apply_seeds`). They run psql, one transaction per migration as asyncmig
does, so these tests judge the SQL independently of the engine; each can become a call
to ``asyncmig.migrate`` and friends without any test changing.
:func:`test_the_samples_run_through_asyncmig_itself` runs the same files through the
engine and checks it builds the identical schema.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig._pgserver import find_bindir

from .migtree import catalog_snapshot

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
ROLLBACK_DIR = ROOT / "rollback"
SEEDS_DIR = ROOT / "seeds"

PSQL_TIMEOUT = 60.0
ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
CAROL = uuid.UUID("00000000-0000-4000-8000-0000000ca201")


# --- applying the files ---------------------------------------------------------------


def _version(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def migration_files() -> list[Path]:
    """Forward migrations in apply order: by integer version, never by string."""
    return sorted(SQL_DIR.glob("*.sql"), key=_version)


def rollback_file(version: int) -> Path:
    """The one rollback file whose name starts with ``<version>_`` (DESIGN §2)."""
    found = [p for p in ROLLBACK_DIR.glob("*.sql") if _version(p) == version]
    assert len(found) == 1, f"version {version}: expected one rollback file, found {found}"
    return found[0]


@functools.cache
def _psql() -> str:
    try:
        candidate = find_bindir() / "psql"
        if candidate.exists():
            return str(candidate)
    except RuntimeError:
        pass
    found = shutil.which("psql")
    if found is None:
        pytest.skip("psql not available")
    return found


async def _run_psql(dsn: str, files: Sequence[Path]) -> None:
    """Run ``files`` with psql in ONE transaction (-1), stopping at the first error."""
    args = [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1"]
    for f in files:
        args += ["-f", str(f)]
    args += ["-d", dsn]
    env = {**os.environ, "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "10"}
    with anyio.fail_after(PSQL_TIMEOUT):
        result = await anyio.run_process(args, env=env, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"psql failed ({result.returncode}) on {[f.name for f in files]}:\n"
            + result.stderr.decode(errors="replace")
        )


async def apply_samples(dsn: str) -> None:
    """Apply every migration in ``sql/``, each in its own transaction.

    Stand-in for ``await asyncmig.migrate(dsn, sql_dir=SQL_DIR, rollback_dir=ROLLBACK_DIR)``.
    """
    for path in migration_files():
        await _run_psql(dsn, [path])


async def rollback_samples(dsn: str, steps: int | None = None) -> None:
    """Undo the newest ``steps`` migrations (all when None), newest first, in one transaction.

    Stand-in for ``Migrator.rollback(steps=…)`` / ``rollback(all=True)`` (DESIGN §7).
    """
    newest_first = list(reversed(migration_files()))[:steps]
    await _run_psql(dsn, [rollback_file(_version(p)) for p in newest_first])


async def apply_seeds(dsn: str, env: str | None = "dev") -> None:
    """``seeds/*.sql`` then ``seeds/<env>/*.sql``, all in one transaction (DESIGN §9)."""
    files = sorted(SEEDS_DIR.glob("*.sql"), key=_version)
    if env is not None:
        files += sorted((SEEDS_DIR / env).glob("*.sql"), key=_version)
    await _run_psql(dsn, files)


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An owner (superuser) connection to the test database, schema applied."""
    await apply_samples(dsn)
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def app_role(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A NOLOGIN, non-owner role with SELECT/UPDATE on users, as an application would have.

    Roles are cluster-wide: the name is unique and the role is dropped afterwards.
    """
    name = f"asyncmig_app_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE ROLE "{name}" NOLOGIN NOSUPERUSER NOBYPASSRLS')
    await conn.execute(f'GRANT SELECT, UPDATE ON users TO "{name}"')
    try:
        yield name
    finally:
        await conn.execute(f'DROP OWNED BY "{name}"')
        await conn.execute(f'DROP ROLE "{name}"')


async def _insert_user(
    conn: asyncpg.Connection, uid: uuid.UUID, name: str, role: str = "customer"
) -> None:
    await conn.execute(
        "INSERT INTO users (id, email, password_hash, name, role) VALUES ($1, $2, 'x', $3, $4)",
        uid,
        f"{name.lower()}@example.com",
        name,
        role,
    )


async def _as_app(dsn: str, db_role: str, /, **settings: str) -> asyncpg.Connection:
    """A connection acting as ``db_role`` with ``app.*`` settings (session level)."""
    c = await asyncpg.connect(dsn)
    await c.execute(f'SET ROLE "{db_role}"')
    for key, value in settings.items():
        await c.execute("SELECT set_config($1, $2, false)", f"app.{key}", value)
    return c


async def _visible_ids(c: asyncpg.Connection) -> set[uuid.UUID]:
    return {r["id"] for r in await c.fetch("SELECT id FROM users")}


# catalog_snapshot: the shared one of tests/migtree.py


# --- files on disk (no server) -----------------------------------------------------------


def test_versions_are_integers_and_each_migration_has_exactly_one_rollback() -> None:
    names = [p.name for p in migration_files()]
    assert names[:4] == [
        "000_create_auth_schema.sql",
        "001_create_users_table.sql",
        "002_users_audit_trigger.sql",
        "003_users_privilege_guard.sql",
    ]
    for name in names:
        assert re.fullmatch(r"\d{1,20}_[a-z0-9_]+\.sql", name), name
    versions = [_version(p) for p in migration_files()]
    assert len(set(versions)) == len(versions), "duplicate versions"
    # The seed's own name for 001's rollback is kept; the others follow `create`'s pattern.
    assert rollback_file(1).name == "001_drop_users_table.sql"
    assert rollback_file(0).name == "000_create_auth_schema_rollback.sql"
    assert rollback_file(2).name == "002_users_audit_trigger_rollback.sql"
    assert rollback_file(3).name == "003_users_privilege_guard_rollback.sql"
    for path in migration_files():
        rollback_file(_version(path))
    # A later `asyncmig create` file (14-digit timestamp) sorts after 002 as an integer,
    # although "20260101000000" < "3" as strings.
    assert sorted(["002", "20260101000000", "3"], key=int) == ["002", "3", "20260101000000"]


def test_every_sample_file_is_utf8_without_bom() -> None:
    for folder in (SQL_DIR, ROLLBACK_DIR, SEEDS_DIR):
        for path in folder.rglob("*.sql"):
            data = path.read_bytes()
            assert not data.startswith(b"\xef\xbb\xbf"), path
            data.decode("utf-8")


# --- 検証項目: パフォーマンスインデックス ------------------------------------------------------

EXPECTED_INDEXES = {
    "users_pkey": "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)",
    "users_email_key": "CREATE UNIQUE INDEX users_email_key ON public.users USING btree (email)",
    "idx_users_email": "CREATE INDEX idx_users_email ON public.users USING btree (email) "
    "WHERE (deleted_at IS NULL)",
    "idx_users_role": "CREATE INDEX idx_users_role ON public.users USING btree (role) "
    "WHERE (deleted_at IS NULL)",
    "idx_users_created_at": "CREATE INDEX idx_users_created_at ON public.users "
    "USING btree (created_at DESC)",
    "idx_users_addresses_gin": "CREATE INDEX idx_users_addresses_gin ON public.users "
    "USING gin (addresses)",
    "idx_users_metadata_gin": "CREATE INDEX idx_users_metadata_gin ON public.users "
    "USING gin (metadata)",
    "idx_active_users": "CREATE INDEX idx_active_users ON public.users USING btree (id, email) "
    "WHERE ((deleted_at IS NULL) AND (email_verified = true))",
    "users_audit_pkey": "CREATE UNIQUE INDEX users_audit_pkey ON public.users_audit "
    "USING btree (id)",
    "idx_users_audit_user_id": "CREATE INDEX idx_users_audit_user_id ON public.users_audit "
    "USING btree (user_id)",
    "idx_users_audit_changed_at": "CREATE INDEX idx_users_audit_changed_at "
    "ON public.users_audit USING btree (changed_at DESC)",
}


async def test_indexes_exist_with_their_methods_and_partial_predicates(
    conn: asyncpg.Connection,
) -> None:
    rows = await conn.fetch(
        "SELECT i.indexname, pg_get_indexdef(c.oid) AS def, x.indisvalid, x.indisready "
        "FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname "
        "JOIN pg_index x ON x.indexrelid = c.oid "
        "WHERE i.schemaname = 'public' AND i.tablename IN ('users', 'users_audit')"
    )
    assert {r["indexname"]: r["def"] for r in rows} == EXPECTED_INDEXES
    assert all(r["indisvalid"] and r["indisready"] for r in rows)


async def test_planner_uses_the_gin_index_for_jsonb_containment(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await apply_seeds(dsn)
    await conn.execute("ANALYZE users")
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(
            """EXPLAIN SELECT id FROM users WHERE addresses @> '[{"prefecture": "東京都"}]'"""
        )
    plan = "\n".join(r[0] for r in rows)
    assert "idx_users_addresses_gin" in plan, plan


# --- 検証項目: Row Level Security ----------------------------------------------------------


async def test_rls_user_sees_and_updates_only_its_own_row(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
        await _insert_user(conn, uid, name)

    alice = await _as_app(dsn, app_role, user_id=str(ALICE))
    try:
        assert await alice.fetchval("SELECT current_user") == app_role
        assert await _visible_ids(alice) == {ALICE}
        # An unqualified UPDATE reaches only the rows the policy lets through.
        assert await alice.execute("UPDATE users SET name = 'Alice A.'") == "UPDATE 1"
        assert await alice.execute("UPDATE users SET name = 'hacked' WHERE id = $1", BOB) == (
            "UPDATE 0"
        )
        # The USING clause doubles as WITH CHECK: the row cannot be handed to someone else.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await alice.execute("UPDATE users SET id = $1 WHERE id = $2", uuid.uuid4(), ALICE)
    finally:
        await alice.close()

    names = {r["id"]: r["name"] for r in await conn.fetch("SELECT id, name FROM users")}
    assert names == {ALICE: "Alice A.", BOB: "Bob", CAROL: "Carol"}


async def test_rls_admin_sees_and_updates_all_rows(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
        await _insert_user(conn, uid, name)
    for role in ("admin", "super_admin"):
        admin = await _as_app(dsn, app_role, role=role)
        try:
            assert await _visible_ids(admin) == {ALICE, BOB, CAROL}
            assert await admin.execute("UPDATE users SET email_verified = true") == "UPDATE 3"
        finally:
            await admin.close()
    # A role name the policies do not know grants nothing beyond the user's own row.
    staff = await _as_app(dsn, app_role, role="staff", user_id=str(BOB))
    try:
        assert await _visible_ids(staff) == {BOB}
    finally:
        await staff.close()


async def test_rls_without_user_id_sees_nothing(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob")):
        await _insert_user(conn, uid, name)
    anonymous = await _as_app(dsn, app_role)  # app.user_id never set: NULL
    try:
        assert await _visible_ids(anonymous) == set()
        assert await anonymous.execute("UPDATE users SET name = 'x'") == "UPDATE 0"
        # Set for one transaction, then gone: current_setting() returns '' afterwards,
        # which auth.uid() must read as "nobody", not fail on.
        async with anonymous.transaction():
            await anonymous.execute("SELECT set_config('app.user_id', $1, true)", str(ALICE))
            assert await _visible_ids(anonymous) == {ALICE}
        assert await anonymous.fetchval("SELECT current_setting('app.user_id', true)") == ""
        assert await _visible_ids(anonymous) == set()
    finally:
        await anonymous.close()


# --- triggers ---------------------------------------------------------------------------


async def test_updated_at_is_set_by_the_trigger_on_every_update(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO users (id, email, password_hash, name, created_at, updated_at) "
        "VALUES ($1, 'alice@example.com', 'x', 'Alice', '2000-01-01Z', '2000-01-01Z')",
        ALICE,
    )
    async with conn.transaction():
        stamped, now = await conn.fetchrow(
            "UPDATE users SET name = 'Alice B.', updated_at = '1999-01-01Z' WHERE id = $1 "
            "RETURNING updated_at, now()",
            ALICE,
        )
    assert stamped == now  # the trigger wins over an explicit value
    created = await conn.fetchval("SELECT created_at FROM users WHERE id = $1", ALICE)
    assert created.year == 2000  # created_at is left alone


async def _audit_rows(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[dict[str, object]]:
    rows = await conn.fetch(
        "SELECT action, user_id, changed_by, old_values, new_values, ip_address, user_agent "
        "FROM users_audit WHERE user_id = $1 ORDER BY changed_at, "
        "array_position(ARRAY['INSERT', 'UPDATE', 'DELETE']::varchar[], action)",
        user_id,
    )
    out = []
    for r in rows:
        d = dict(r)
        for key in ("old_values", "new_values"):
            d[key] = json.loads(d[key]) if d[key] is not None else None
        out.append(d)
    return out


async def test_audit_trigger_records_insert_update_delete_with_old_and_new_values(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("SELECT set_config('app.user_id', $1, false)", str(BOB))
    await conn.execute("SET app.client_ip = '203.0.113.7'")
    await conn.execute("SET app.user_agent = 'pytest/asyncmig'")

    await _insert_user(conn, ALICE, "Alice")
    await conn.execute("UPDATE users SET name = 'Alice B.' WHERE id = $1", ALICE)
    await conn.execute("DELETE FROM users WHERE id = $1", ALICE)

    rows = await _audit_rows(conn, ALICE)
    assert [r["action"] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    for r in rows:
        assert r["user_id"] == ALICE
        assert r["changed_by"] == BOB
        assert r["ip_address"] == ip_address("203.0.113.7")
        assert r["user_agent"] == "pytest/asyncmig"
    inserted, updated, deleted = rows
    assert inserted["old_values"] is None
    assert inserted["new_values"]["name"] == "Alice"  # type: ignore[index]
    assert inserted["new_values"]["email"] == "alice@example.com"  # type: ignore[index]
    assert updated["old_values"]["name"] == "Alice"  # type: ignore[index]
    assert updated["new_values"]["name"] == "Alice B."  # type: ignore[index]
    assert deleted["old_values"]["name"] == "Alice B."  # type: ignore[index]
    assert deleted["new_values"] is None
    # Secrets never reach the audit log.
    for r in rows:
        for doc in (r["old_values"], r["new_values"]):
            if doc is not None:
                assert "password_hash" not in doc
                assert "two_factor_secret" not in doc


async def test_audit_trigger_without_context_records_nulls(conn: asyncpg.Connection) -> None:
    await _insert_user(conn, ALICE, "Alice")
    (row,) = await _audit_rows(conn, ALICE)
    assert (row["changed_by"], row["ip_address"], row["user_agent"]) == (None, None, None)


async def test_app_role_is_audited_but_cannot_write_or_divert_the_audit_log(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    await _insert_user(conn, ALICE, "Alice")
    alice = await _as_app(dsn, app_role, user_id=str(ALICE))
    try:
        # No INSERT right on users_audit: the log cannot be forged…
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await alice.execute("INSERT INTO users_audit (user_id, action) VALUES ($1, 'x')", BOB)
        # …nor diverted into a temporary table of the same name (pg_temp comes first on
        # an unpinned search_path).
        await alice.execute(
            "CREATE TEMP TABLE users_audit (user_id uuid, action varchar, changed_by uuid, "
            "old_values jsonb, new_values jsonb, ip_address inet, user_agent text)"
        )
        assert await alice.execute("UPDATE users SET phone = '+81-3-0000-0000'") == "UPDATE 1"
        assert await alice.fetchval("SELECT count(*) FROM pg_temp.users_audit") == 0
    finally:
        await alice.close()
    actions = [(r["action"], r["changed_by"]) for r in await _audit_rows(conn, ALICE)]
    assert actions == [("INSERT", None), ("UPDATE", ALICE)]


# --- 003: privileged columns and the audit log --------------------------------------------
#
# The seed's users_update_policy has no WITH CHECK and users_audit has no row level
# security: before 003 a customer could make themselves admin, verify their own e-mail
# and read everyone's audit trail. Every refusal and visibility test below failed on the
# tree without 003 (the admin and harmless-column tests pass there too, as they should).

FUTURE = datetime(2999, 1, 1, tzinfo=UTC)

# (what the customer tries, the column the refusal names). The row starts as the owner
# left it: Alice is a customer, unverified, locked out after 5 failed logins and
# soft-deleted by an admin.
ESCALATIONS = [
    ("UPDATE users SET role = 'admin'", "role"),
    ("UPDATE users SET role = 'staff'", "role"),
    ("UPDATE users SET role = 'super_admin'", "role"),
    ("UPDATE users SET email_verified = true", "email_verified"),
    ("UPDATE users SET phone_verified = true", "phone_verified"),
    ("UPDATE users SET failed_login_attempts = 0", "failed_login_attempts"),
    ("UPDATE users SET locked_until = NULL", "locked_until"),
    ("UPDATE users SET deleted_at = NULL", "deleted_at"),
]


async def _insert_locked_out_alice(conn: asyncpg.Connection) -> None:
    """Alice as the owner left her: customer, unverified, locked out, soft-deleted."""
    await conn.execute(
        "INSERT INTO users (id, email, password_hash, name, role, email_verified, "
        "phone_verified, failed_login_attempts, locked_until, deleted_at) "
        "VALUES ($1, 'alice@example.com', 'x', 'Alice', 'customer', false, false, 5, "
        "$2, $2)",
        ALICE,
        FUTURE,
    )


_PRIVILEGED_STATE = (
    "SELECT role, email_verified, phone_verified, failed_login_attempts, locked_until, "
    "deleted_at FROM users WHERE id = $1"
)


async def test_customer_cannot_make_themselves_admin(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    """A customer setting role = 'admin' on their own row gets 42501; the row stays 'customer'."""
    await _insert_user(conn, ALICE, "Alice")
    alice = await _as_app(dsn, app_role, user_id=str(ALICE), role="customer")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"users\.role"):
            await alice.execute("UPDATE users SET role = 'admin' WHERE id = $1", ALICE)
    finally:
        await alice.close()
    assert await conn.fetchval("SELECT role FROM users WHERE id = $1", ALICE) == "customer"


async def test_customer_cannot_verify_their_own_email(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    """A customer's UPDATE of their own email_verified to true fails with 42501; it stays false."""
    await _insert_user(conn, ALICE, "Alice")
    alice = await _as_app(dsn, app_role, user_id=str(ALICE), role="customer")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"users\.email_verified"):
            await alice.execute("UPDATE users SET email_verified = true WHERE id = $1", ALICE)
    finally:
        await alice.close()
    assert await conn.fetchval("SELECT email_verified FROM users WHERE id = $1", ALICE) is False


@pytest.mark.parametrize(("attempt", "column"), ESCALATIONS)
async def test_customer_cannot_change_any_privileged_column_of_their_own_row(
    dsn: str, conn: asyncpg.Connection, app_role: str, attempt: str, column: str
) -> None:
    """Each privileged column: the customer's UPDATE fails with 42501 naming it; nothing changes."""
    await _insert_locked_out_alice(conn)
    before = await conn.fetchrow(_PRIVILEGED_STATE, ALICE)
    alice = await _as_app(dsn, app_role, user_id=str(ALICE), role="customer")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=rf"users\.{column}\b"):
            await alice.execute(attempt)
    finally:
        await alice.close()
    assert await conn.fetchrow(_PRIVILEGED_STATE, ALICE) == before


async def test_customer_can_still_update_their_own_harmless_columns(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    """Profile, password, 2FA and login bookkeeping stay writable; so does a privileged
    column assigned its current value (an ORM writing back the whole row)."""
    await _insert_user(conn, ALICE, "Alice")
    alice = await _as_app(dsn, app_role, user_id=str(ALICE), role="customer")
    try:
        status = await alice.execute(
            "UPDATE users SET name = 'Alice A.', phone = '+81-3-0000-0000', "
            "avatar_url = 'https://example.com/a.png', addresses = '[{\"city\": \"Kyoto\"}]', "
            "metadata = '{\"newsletter\": true}', password_hash = 'y', "
            "two_factor_enabled = true, two_factor_secret = 's', last_login_at = now(), "
            "last_login_ip = '203.0.113.7', "
            "role = 'customer', email_verified = false, deleted_at = NULL "
            "WHERE id = $1",
            ALICE,
        )
    finally:
        await alice.close()
    assert status == "UPDATE 1"
    row = await conn.fetchrow(
        "SELECT name, phone, two_factor_enabled, role, email_verified FROM users WHERE id = $1",
        ALICE,
    )
    assert tuple(row) == ("Alice A.", "+81-3-0000-0000", True, "customer", False)


@pytest.mark.parametrize("admin_role", ["admin", "super_admin"])
async def test_admin_can_change_role_and_verification_of_any_user(
    dsn: str, conn: asyncpg.Connection, app_role: str, admin_role: str
) -> None:
    """With app.role admin (or super_admin), every privileged column of another user changes."""
    await _insert_locked_out_alice(conn)
    admin = await _as_app(dsn, app_role, user_id=str(BOB), role=admin_role)
    try:
        status = await admin.execute(
            "UPDATE users SET role = 'staff', email_verified = true, phone_verified = true, "
            "failed_login_attempts = 0, locked_until = NULL, deleted_at = NULL WHERE id = $1",
            ALICE,
        )
    finally:
        await admin.close()
    assert status == "UPDATE 1"
    assert tuple(await conn.fetchrow(_PRIVILEGED_STATE, ALICE)) == (
        "staff", True, True, 0, None, None
    )  # fmt: skip


async def test_only_a_super_admin_grants_or_revokes_super_admin(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    """An admin can make Alice admin but not super_admin, nor demote Carol (a super_admin);
    a super_admin can do both."""
    await _insert_user(conn, ALICE, "Alice")
    await _insert_user(conn, CAROL, "Carol", role="super_admin")
    admin = await _as_app(dsn, app_role, user_id=str(BOB), role="admin")
    try:
        assert await admin.execute("UPDATE users SET role = 'admin' WHERE id = $1", ALICE) == (
            "UPDATE 1"
        )
        for uid, role in ((ALICE, "super_admin"), (CAROL, "admin")):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="super_admin"):
                await admin.execute("UPDATE users SET role = $2 WHERE id = $1", uid, role)
    finally:
        await admin.close()
    root = await _as_app(dsn, app_role, user_id=str(CAROL), role="super_admin")
    try:
        await root.execute("UPDATE users SET role = 'super_admin' WHERE id = $1", ALICE)
        await root.execute("UPDATE users SET role = 'admin' WHERE id = $1", CAROL)
    finally:
        await root.close()
    roles = dict(await conn.fetch("SELECT id, role FROM users"))
    assert roles == {ALICE: "super_admin", CAROL: "admin"}


async def test_the_owner_too_changes_privileged_columns_only_as_admin(
    conn: asyncpg.Connection,
) -> None:
    """The guard is a trigger, which RLS bypass does not skip: the owner (superuser here)
    without app.role is refused; with ``SET LOCAL app.role = 'admin'`` it succeeds."""
    await _insert_user(conn, ALICE, "Alice")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"users\.role"):
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", ALICE)
    async with conn.transaction():
        await conn.execute("SET LOCAL app.role = 'admin'")
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", ALICE)
    assert await conn.fetchval("SELECT role FROM users WHERE id = $1", ALICE) == "admin"


async def _audit_subjects(c: asyncpg.Connection) -> list[uuid.UUID]:
    return sorted(r["user_id"] for r in await c.fetch("SELECT user_id FROM users_audit"))


async def test_users_audit_rows_are_visible_to_their_subject_and_to_admins_only(
    dsn: str, conn: asyncpg.Connection, app_role: str
) -> None:
    """With SELECT on users_audit: a customer sees only the rows about themselves, an admin
    or super_admin all of them, a session without app.user_id none."""
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
        await _insert_user(conn, uid, name)
    await conn.execute(f'GRANT SELECT ON users_audit TO "{app_role}"')
    alice = await _as_app(dsn, app_role, user_id=str(ALICE), role="customer")
    try:
        await alice.execute("UPDATE users SET name = 'Alice A.' WHERE id = $1", ALICE)
        assert await _audit_subjects(alice) == [ALICE, ALICE]  # INSERT by owner, own UPDATE
    finally:
        await alice.close()
    everyone = sorted([ALICE, ALICE, BOB, CAROL])
    for role in ("admin", "super_admin"):
        admin = await _as_app(dsn, app_role, user_id=str(BOB), role=role)
        try:
            assert await _audit_subjects(admin) == everyone
        finally:
            await admin.close()
    anonymous = await _as_app(dsn, app_role)
    try:
        assert await _audit_subjects(anonymous) == []
    finally:
        await anonymous.close()


@pytest.fixture
async def plain_owner(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A NOLOGIN, non-superuser role made owner of users, users_audit and the audit trigger
    function, as when a deploy role (not a superuser) ran the migrations."""
    name = f"asyncmig_owner_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE ROLE "{name}" NOLOGIN NOSUPERUSER NOBYPASSRLS')
    for statement in (
        'ALTER TABLE users OWNER TO "{}"',
        'ALTER TABLE users_audit OWNER TO "{}"',
        'ALTER FUNCTION users_audit_row() OWNER TO "{}"',
    ):
        await conn.execute(statement.format(name))
    try:
        yield name
    finally:
        await conn.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
        await conn.execute(f'DROP OWNED BY "{name}"')
        await conn.execute(f'DROP ROLE "{name}"')


async def test_a_non_superuser_owner_obeys_the_audit_policies(
    dsn: str, conn: asyncpg.Connection, plain_owner: str
) -> None:
    """FORCE ROW LEVEL SECURITY on users_audit: an application connected as the (non-superuser)
    owner still has its UPDATE audited through the trigger, but sees only its user's audit
    rows (all of them as admin), cannot insert an audit row by hand, nor delete one."""
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob")):
        await _insert_user(conn, uid, name)
    owner = await _as_app(dsn, plain_owner, user_id=str(ALICE), role="customer")
    try:
        assert await owner.execute("UPDATE users SET name = 'Alice A.' WHERE id = $1", ALICE) == (
            "UPDATE 1"
        )
        assert await _audit_subjects(owner) == [ALICE, ALICE]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await owner.execute("INSERT INTO users_audit (user_id, action) VALUES ($1, 'x')", BOB)
        async with owner.transaction():
            await owner.execute("SET LOCAL app.role = 'admin'")
            assert await _audit_subjects(owner) == sorted([ALICE, ALICE, BOB])
            assert await owner.execute("DELETE FROM users_audit") == "DELETE 0"
    finally:
        await owner.close()
    assert await conn.fetchval("SELECT count(*) FROM users_audit") == 3


async def test_rollback_of_003_restores_the_catalog_of_002_exactly(dsn: str) -> None:
    """Snapshot (relations, ACLs, RLS flags, policies with their expressions, functions with
    their settings, triggers) after 000-002 equals the one after 003 and its rollback; and
    the owner can again change a role without app.role, so the guard is really gone."""
    forward = migration_files()
    assert _version(forward[-1]) == 3, "this test is about 003 as the newest migration"
    await _run_psql(dsn, forward[:-1])
    before = await catalog_snapshot(dsn)
    await _run_psql(dsn, [forward[-1]])
    after = await catalog_snapshot(dsn)
    assert after != before
    assert "public.users_audit enable=true force=true acl=-" in after["row_security"]
    assert "users users_guard_privileged_columns" in after["triggers"]
    await _run_psql(dsn, [rollback_file(3)])
    assert await catalog_snapshot(dsn) == before
    c = await asyncpg.connect(dsn)
    try:
        await _insert_user(c, ALICE, "Alice")
        assert await c.execute("UPDATE users SET role = 'admin' WHERE id = $1", ALICE) == (
            "UPDATE 1"
        )
    finally:
        await c.close()


# --- 検証項目: ロールバック ----------------------------------------------------------------


async def test_rollbacks_newest_first_restore_the_empty_catalog_and_apply_again(
    dsn: str,
) -> None:
    empty = await catalog_snapshot(dsn)

    await apply_samples(dsn)
    applied = await catalog_snapshot(dsn)
    assert applied != empty
    assert "auth.uid()" in applied["functions"]
    assert "public.users_audit_row()" in applied["functions"]
    assert "users users_select_policy" in applied["policies"]
    assert "users users_audit_row" in applied["triggers"]
    await apply_seeds(dsn)  # rollbacks must also work with data in the tables

    await rollback_samples(dsn)
    assert await catalog_snapshot(dsn) == empty

    await apply_samples(dsn)
    assert await catalog_snapshot(dsn) == applied
    c = await asyncpg.connect(dsn)
    try:
        await _insert_user(c, ALICE, "Alice")
        assert [r["action"] for r in await _audit_rows(c, ALICE)] == ["INSERT"]
    finally:
        await c.close()


async def test_each_rollback_undoes_exactly_its_own_migration(dsn: str) -> None:
    files = migration_files()
    snapshots = [await catalog_snapshot(dsn)]
    for path in files:
        await _run_psql(dsn, [path])
        snapshots.append(await catalog_snapshot(dsn))
    for steps_back in range(1, len(files) + 1):
        newest = files[len(files) - steps_back]
        await _run_psql(dsn, [rollback_file(_version(newest))])
        assert await catalog_snapshot(dsn) == snapshots[len(files) - steps_back], newest.name


async def test_rolling_back_002_keeps_the_audit_rows(dsn: str, conn: asyncpg.Connection) -> None:
    await _insert_user(conn, ALICE, "Alice")
    await rollback_samples(dsn, steps=2)  # 003, then 002
    await conn.execute("UPDATE users SET name = 'no audit now' WHERE id = $1", ALICE)
    assert [r["action"] for r in await _audit_rows(conn, ALICE)] == ["INSERT"]


async def test_the_samples_run_through_asyncmig_itself(dsn: str) -> None:
    """The engine splits, applies, validates, seeds and rolls back the shipped files.

    (The seed's 001 has its own BEGIN/COMMIT, which asyncmig drops; 002 has a $fn$ body.)
    """
    empty = await catalog_snapshot(dsn)
    dirs = {"sql_dir": SQL_DIR, "rollback_dir": ROLLBACK_DIR}
    report = await asyncmig.migrate(dsn, **dirs)
    assert [m.version for m in report.applied] == [_version(p) for p in migration_files()]
    applied = await catalog_snapshot(dsn)
    await rollback_samples(dsn)
    await apply_samples(dsn)
    assert await catalog_snapshot(dsn) == applied, "engine and psql build the same schema"
    async with asyncmig.Migrator(dsn, seeds_dir=SEEDS_DIR, **dirs) as m:
        assert (await m.validate()).issues == ()
        await m.seed(environment="dev")
        await m.seed(environment="dev")
        await m.rollback(all=True)
    assert await catalog_snapshot(dsn) == empty


# --- seeds ------------------------------------------------------------------------------


async def _seed_counts(conn: asyncpg.Connection) -> tuple[int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM users"),
        await conn.fetchval("SELECT count(*) FROM users_audit"),
    )


async def test_seeds_apply_twice_without_changing_anything(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await apply_seeds(dsn, env=None)
    assert await _seed_counts(conn) == (5, 5)
    roles = dict(await conn.fetch("SELECT role, count(*) FROM users GROUP BY role"))
    assert roles == {"admin": 1, "staff": 1, "customer": 3}
    assert (
        await conn.fetchval("SELECT count(*) FROM users WHERE jsonb_array_length(addresses) > 0")
        == 2
    )

    await apply_seeds(dsn, env="dev")
    first = await _seed_counts(conn)
    assert first == (55, 55)
    snapshot = await conn.fetch("SELECT * FROM users ORDER BY email")

    await apply_seeds(dsn, env="dev")
    assert await _seed_counts(conn) == first
    assert await conn.fetch("SELECT * FROM users ORDER BY email") == snapshot


async def test_seed_users_work_with_rls(dsn: str, conn: asyncpg.Connection, app_role: str) -> None:
    await apply_seeds(dsn, env=None)
    hanako = uuid.UUID("00000000-0000-4000-8000-000000000003")
    c = await _as_app(dsn, app_role, user_id=str(hanako))
    try:
        assert await _visible_ids(c) == {hanako}
    finally:
        await c.close()
