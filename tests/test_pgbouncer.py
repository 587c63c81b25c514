"""Behind PgBouncer in transaction pooling, asyncmig refuses clearly (a session lock
cannot work there). Needs the ``pgbouncer`` binary; skipped where it is not installed."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import asyncmig

from .conftest import TestPg
from .migtree import write_tree

pytestmark = pytest.mark.anyio

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp: Path, server: str, *, ignore_params: bool) -> Iterator[str]:
    assert PGBOUNCER is not None
    target = urlsplit(server)
    port = _free_port()
    (tmp / "users.txt").write_text('"postgres" ""\n')
    ignore = (
        "extra_float_digits,application_name,tcp_keepalives_idle,"
        "tcp_keepalives_interval,tcp_keepalives_count"
        if ignore_params
        else "extra_float_digits"
    )
    (tmp / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={target.hostname} port={target.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {tmp}/users.txt
pool_mode = transaction
ignore_startup_parameters = {ignore}
logfile = {tmp}/pgbouncer.log
pidfile = {tmp}/pgbouncer.pid
"""
    )
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        user = pwd.getpwnam("nobody")
        os.chmod(tmp, 0o777)
        for f in tmp.iterdir():
            os.chmod(f, 0o666)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(
        [PGBOUNCER, str(tmp / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    log = (tmp / "pgbouncer.log").read_text(errors="replace")[-500:]
                    pytest.skip(f"pgbouncer did not start: {log}")
                time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/{target.path.lstrip('/')}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _bouncer(dsn: str, *, ignore_params: bool) -> Iterator[str]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed")
    # not under pytest's tmp_path: as root, pgbouncer runs as "nobody", who must reach it
    tmp = Path(tempfile.mkdtemp(prefix="asyncmig-bouncer-"))
    try:
        yield from _start(tmp, dsn, ignore_params=ignore_params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def bouncer(pg: TestPg, dsn: str) -> Iterator[str]:
    yield from _bouncer(dsn, ignore_params=True)


@pytest.fixture
def strict_bouncer(pg: TestPg, dsn: str) -> Iterator[str]:
    yield from _bouncer(dsn, ignore_params=False)


async def test_transaction_pooling_is_detected_and_refused(bouncer: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    with pytest.raises(asyncmig.ConnectionPoolingError) as info:
        await asyncmig.migrate(bouncer, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rb")
    assert "direct" in str(info.value) and "PgBouncer" in str(info.value)
    assert info.value.exit_code == 2


async def test_a_bouncer_rejecting_session_settings_gets_the_same_advice(
    strict_bouncer: str, tmp_path: Path
) -> None:
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    with pytest.raises(asyncmig.ConnectionPoolingError) as info:
        await asyncmig.migrate(strict_bouncer, sql_dir=tmp_path / "sql",
                               rollback_dir=tmp_path / "rb")  # fmt: skip
    assert "direct" in str(info.value)
