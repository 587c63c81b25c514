"""Engine benchmarks as users see them: the whole ``asyncmig`` process against the whole
``psql -X -q -1 -f`` process, on the same SQL and the same server.

Scenarios (issue 11's table): apply the 300-migration set; roll it back; apply it
through a loopback proxy adding 0.5 ms each way (+1 ms per round trip, psql through the
same proxy); a ~50 MB file of multi-row INSERTs; the same rows as inline COPY.

How it is measured:

* asyncmig is the installed console script, ``asyncmig --database-url URL migrate`` (or
  ``rollback --all``), run in the migration tree, stdout on a pipe that is read to the
  end (a CI log: not a terminal, default verbosity); the apply/roll back rows also run
  ``--json``. psql runs ``-X -q -1 -v ON_ERROR_STOP=1 -f`` on the same statements
  concatenated. Both start through the same small wrapper (:mod:`bench.engine_child`),
  which times spawn to exit and reads the child's peak RSS.
* Each run gets a fresh database; runs are paired and interleaved (psql, asyncmig,
  asyncmig --json, then the next pair in the opposite order) because the server's speed
  drifts. A row shows the median of the per-pair ratios with their min and max, and
  both medians in seconds. ``BENCH_REPEAT`` (default 5) sets the pairs per row. The
  ``--json`` runs happen on the first server only, to keep ``make bench`` short.
* Against the embedded server (PostgreSQL 18), and against the system PostgreSQL 15 when
  ``/usr/lib/postgresql/15/bin`` exists (a second throwaway server from that bindir,
  with that version's psql).
* The proxy (:mod:`bench.proxy`) counts the round trips (Query and Sync messages) of
  each run; the measured latency it adds is printed with the row.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncmig._pgserver import PgServer
from bench.proxy import DelayProxy

DATA = Path(__file__).resolve().parent / ".data"
ROOT = Path(__file__).resolve().parent.parent
ASYNCMIG = Path(sys.executable).parent / "asyncmig"
SYSTEM_PG15 = Path("/usr/lib/postgresql/15/bin")

Row = tuple[str, str, str, bool | None]
REPEAT = max(1, int(os.environ.get("BENCH_REPEAT", "5")))

TARGETS = {  # asyncmig / psql -1, from the table
    "apply": 0.9,
    "rollback": 1.0,
    "apply_1ms": 0.5,
    "insert": 0.8,
    "copy": 1.0,
}
RSS_TARGET_MB = 150.0


def _migration(i: int) -> tuple[str, str]:
    up = f"""-- Migration: item {i}
CREATE TABLE item_{i} (
    id bigserial PRIMARY KEY,
    data jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    qty integer NOT NULL CHECK (qty >= 0),
    label text NOT NULL DEFAULT 'n/a; none',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX item_{i}_qty_idx ON item_{i} (qty);
CREATE INDEX item_{i}_data_gin ON item_{i} USING GIN (data);
CREATE FUNCTION item_{i}_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.qty > 1000000 THEN
        RAISE EXCEPTION 'qty too large; got %', NEW.qty;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER item_{i}_touch BEFORE UPDATE ON item_{i}
    FOR EACH ROW EXECUTE FUNCTION item_{i}_touch();
"""
    down = f"""DROP TRIGGER item_{i}_touch ON item_{i};
DROP FUNCTION item_{i}_touch();
DROP TABLE item_{i};
"""
    return up, down


def make_300(n: int = 300) -> Path:
    root = DATA / f"m{n}"
    if (root / "all_up.sql").exists():
        return root
    (root / "sql").mkdir(parents=True, exist_ok=True)
    (root / "rollback").mkdir(parents=True, exist_ok=True)
    ups, downs = [], []
    for i in range(1, n + 1):
        up, down = _migration(i)
        (root / "sql" / f"{i:04d}_item_{i}.sql").write_text(up)
        (root / "rollback" / f"{i:04d}_item_{i}_rollback.sql").write_text(down)
        ups.append(up)
        downs.append(down)
    (root / "all_up.sql").write_text("".join(ups))
    (root / "all_down.sql").write_text("".join(reversed(downs)))
    return root


def make_data(mb: int = 50) -> Path:
    """Two trees holding the same rows: multi-row INSERTs, and an inline COPY block."""
    root = DATA / f"data{mb}"
    ins = root / "insert" / "sql" / "001_load.sql"
    cpy = root / "copy" / "sql" / "001_load.sql"
    if ins.exists() and cpy.exists():
        return root
    for sub in ("insert", "copy"):
        (root / sub / "sql").mkdir(parents=True, exist_ok=True)
        (root / sub / "rollback").mkdir(parents=True, exist_ok=True)
    create = "CREATE TABLE load_rows (id integer PRIMARY KEY, name text, note text, doc jsonb);\n"
    target = mb * 1024 * 1024
    with ins.open("w") as fi, cpy.open("w") as fc:
        fi.write(create)
        fc.write(create + "COPY load_rows (id, name, note, doc) FROM stdin;\n")
        size = 0
        row = 0
        while size < target:
            values = []
            for _ in range(500):
                row += 1
                name = f"user {row}"
                note = f"it''s row {row}; ok" if row % 3 else f"plain {row}"
                doc = f'{{"n": {row}, "tags": ["a", "b;c"], "ok": true}}'
                values.append(f"({row}, '{name}', '{note}', '{doc}')")
                raw_note = note.replace("''", "'")
                fc.write(f"{row}\t{name}\t{raw_note}\t{doc}\n")
            head = "INSERT INTO load_rows (id, name, note, doc) VALUES\n"
            stmt = head + ",\n".join(values) + ";\n"
            fi.write(stmt)
            size += len(stmt)
        fc.write("\\.\n")
    return root


# -- measuring ------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment a deploy script would give asyncmig: no ASYNCMIG_* / DATABASE_URL
    from the developer's shell, and bytecode caching on (an installed package has its
    ``.pyc`` files; ``PYTHONDONTWRITEBYTECODE`` would recompile every module each run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCMIG_", "PG"))}
    for name in ("DATABASE_URL", "PYTHONDONTWRITEBYTECODE", "COLUMNS", "FORCE_COLOR"):
        env.pop(name, None)
    return env


def compile_bytecode() -> None:
    """Write the package's ``.pyc`` files once, as ``pip install`` does."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "asyncmig")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``argv`` as a whole process through :mod:`bench.engine_child`."""
    spec = json.dumps({"argv": argv, "cwd": str(cwd), "env": env})
    out = subprocess.run([sys.executable, "-m", "bench.engine_child", spec], cwd=ROOT,
                         check=True, capture_output=True, text=True)  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result['rc']}: {result['stderr']}")
    return result


@dataclass
class Target:
    """One server under test, its psql, and a way to make databases on it."""

    label: str
    server: PgServer

    def admin(self, sql: str) -> None:
        subprocess.run([str(self.server.psql), "-X", "-q", "-c", sql, "-d", self.server.dsn()],
                       check=True, env=child_env(), stdout=subprocess.DEVNULL)  # fmt: skip

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"b_{uuid.uuid4().hex[:10]}"
        self.admin(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            self.admin(f'DROP DATABASE "{name}" WITH (FORCE)')

    def psql(self, dsn: str, path: Path) -> dict[str, float]:
        argv = [str(self.server.psql), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(path),
                "-d", dsn]  # fmt: skip
        return measure(argv, path.parent, child_env())


def asyncmig(dsn: str, root: Path, *command: str, json_lines: bool = False) -> dict[str, float]:
    argv = [str(ASYNCMIG), "--database-url", dsn, *(["--json"] if json_lines else []), *command]
    return measure(argv, root, child_env())


@dataclass
class Pairs:
    """Paired runs of psql and asyncmig (and asyncmig --json) for one scenario."""

    psql: list[dict[str, float]]
    plain: list[dict[str, float]]
    json: list[dict[str, float]]

    @classmethod
    def empty(cls) -> Pairs:
        return cls([], [], [])


def ratio_row(label: str, psql: list[dict[str, float]], runs: list[dict[str, float]],
              target: float) -> Row:  # fmt: skip
    ratios = [r["wall"] / p["wall"] for p, r in zip(psql, runs, strict=True)]
    med = statistics.median(ratios)
    mine = statistics.median(r["wall"] for r in runs)
    theirs = statistics.median(p["wall"] for p in psql)
    value = (f"{med:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}; "
             f"{mine:.2f}s vs psql {theirs:.2f}s; n={len(ratios)})")  # fmt: skip
    return (label, value, f"<= {target}x", med <= target)


def paired(steps: list[Callable[[], None]]) -> None:
    """Run ``steps`` REPEAT times, reversing their order every other time (interleaved, so
    neither side always runs right after the other's warm-up)."""
    for i in range(REPEAT):
        for step in steps if i % 2 == 0 else steps[::-1]:
            step()


def bench_300(t: Target, m300: Path, with_json: bool = True) -> list[Row]:
    up, down = Pairs.empty(), Pairs.empty()

    def run_psql() -> None:
        with t.database() as db:
            up.psql.append(t.psql(t.server.dsn(db), m300 / "all_up.sql"))
            down.psql.append(t.psql(t.server.dsn(db), m300 / "all_down.sql"))

    def run_mig(json_lines: bool) -> None:
        with t.database() as db:
            dsn = t.server.dsn(db)
            a = asyncmig(dsn, m300, "migrate", json_lines=json_lines)
            b = asyncmig(dsn, m300, "rollback", "--all", json_lines=json_lines)
        (up.json if json_lines else up.plain).append(a)
        (down.json if json_lines else down.plain).append(b)

    steps = [run_psql, lambda: run_mig(False)]
    paired([*steps, lambda: run_mig(True)] if with_json else steps)
    p = t.label
    lines = statistics.median(r["lines"] for r in up.plain)
    rows = [
        ratio_row(f"{p} apply 300", up.psql, up.plain, TARGETS["apply"]),
        ratio_row(f"{p} roll back 300", down.psql, down.plain, TARGETS["rollback"]),
        (f"{p} apply 300: plain output lines", f"{lines:.0f}", "-", None),
    ]
    if with_json:
        rows[2:2] = [
            ratio_row(f"{p} apply 300 --json", up.psql, up.json, TARGETS["apply"]),
            ratio_row(f"{p} roll back 300 --json", down.psql, down.json, TARGETS["rollback"]),
        ]
    return rows


def measured_added_rtt_ms(direct_dsn: str, proxied_dsn: str) -> float:
    """What the proxy really adds to one round trip: median ``SELECT 1`` time through it
    minus direct, over 200 queries each."""
    import asyncio

    import asyncpg

    async def median_rtt(dsn: str) -> float:
        conn = await asyncpg.connect(dsn)
        try:
            times = []
            for _ in range(200):
                t0 = time.perf_counter()
                await conn.fetchval("SELECT 1")
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        finally:
            await conn.close()

    async def both() -> float:
        return await median_rtt(proxied_dsn) - await median_rtt(direct_dsn)

    return asyncio.run(both()) * 1000


def bench_300_delayed(t: Target, m300: Path) -> list[Row]:
    psql: list[dict[str, float]] = []
    mine: list[dict[str, float]] = []
    trips: dict[str, list[int]] = {"psql": [], "asyncmig": [], "asyncmig rollback": []}
    with DelayProxy(t.server.port, delay_s=0.0005) as proxy:
        added = measured_added_rtt_ms(t.server.dsn(), proxy.dsn("postgres"))

        def run_psql() -> None:
            with t.database() as db:
                proxy.reset()
                psql.append(t.psql(proxy.dsn(db), m300 / "all_up.sql"))
                trips["psql"].append(proxy.round_trips)

        def run_mig() -> None:
            with t.database() as db:
                proxy.reset()
                mine.append(asyncmig(proxy.dsn(db), m300, "migrate"))
                trips["asyncmig"].append(proxy.round_trips)
                if not trips["asyncmig rollback"]:  # the rollback's round trips, once
                    proxy.reset()
                    asyncmig(proxy.dsn(db), m300, "rollback", "--all")
                    trips["asyncmig rollback"].append(proxy.round_trips)

        paired([run_psql, run_mig])
    p = t.label
    a, q = statistics.median(trips["asyncmig"]), statistics.median(trips["psql"])
    back = trips["asyncmig rollback"][0]
    label = f"{p} apply 300, +1 ms per round trip (proxy measured +{added:.2f} ms)"
    return [
        ratio_row(label, psql, mine, TARGETS["apply_1ms"]),
        (
            f"{p} round trips per migration, apply 300",
            f"asyncmig {a / 300:.2f} ({a:.0f}), psql -1 {q / 300:.2f} ({q:.0f})",
            "-",
            None,
        ),
        (
            f"{p} round trips per migration, roll back 300",
            f"asyncmig {back / 300:.2f} ({back})",
            "-",
            None,
        ),
    ]


def bench_data(t: Target, data: Path) -> list[Row]:
    rows: list[Row] = []
    for kind in ("insert", "copy"):
        rows += _bench_file(t, data / kind, kind)
    return rows


def _bench_file(t: Target, root: Path, kind: str) -> list[Row]:
    path = root / "sql" / "001_load.sql"
    psql: list[dict[str, float]] = []
    mine: list[dict[str, float]] = []

    def run_psql() -> None:
        with t.database() as db:
            psql.append(t.psql(t.server.dsn(db), path))

    def run_mig() -> None:
        with t.database() as db:
            mine.append(asyncmig(t.server.dsn(db), root, "migrate"))

    paired([run_psql, run_mig])
    size = path.stat().st_size / 1e6
    label = (f"{size:.0f} MB INSERT file" if kind == "insert"
             else f"same rows as inline COPY ({size:.0f} MB)")  # fmt: skip
    rows = [ratio_row(f"{t.label} {label}", psql, mine, TARGETS[kind])]
    if kind == "insert":
        rss = max(r["peak_rss_mb"] for r in mine)
        theirs = max(r["peak_rss_mb"] for r in psql)
        rows.append((f"{t.label} peak RSS of asyncmig, {size:.0f} MB INSERT file",
                     f"{rss:.0f} MB (psql {theirs:.0f} MB)", f"<= {RSS_TARGET_MB:.0f} MB",
                     rss <= RSS_TARGET_MB))  # fmt: skip
    return rows


def guarded(label: str, scenario: Callable[..., list[Row]], *args: Any) -> list[Row]:
    """``scenario(*args)``'s rows, or one failed row saying why (a broken run must not
    lose the other scenarios' figures)."""
    try:
        return scenario(*args)
    except Exception as exc:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        errors = [x for x in lines if "error" in x.lower()]
        why = (errors or lines or [type(exc).__name__])[0]
        return [(label, f"FAILED: {why[:240]}", "runs", False)]


def servers() -> list[tuple[str, Callable[[], PgServer]]]:
    out: list[tuple[str, Callable[[], PgServer]]] = [("embedded", PgServer)]
    if (SYSTEM_PG15 / "initdb").exists() and (SYSTEM_PG15 / "psql").exists():
        out.append(("system", lambda: PgServer(bindir=SYSTEM_PG15)))
    return out


def section() -> list[Row]:
    compile_bytecode()
    m300 = make_300()
    data = make_data()
    rows: list[Row] = []
    for n, (kind, make) in enumerate(servers()):
        server = make().start()
        try:
            major = server.version().rsplit(" ", 1)[-1].split(".")[0]
            t = Target(f"[pg{major} {kind}]", server)
            started = time.perf_counter()
            json_too = n == 0  # --json pairs on the first server only
            rows += guarded(f"{t.label} apply/roll back 300", bench_300, t, m300, json_too)
            rows += guarded(f"{t.label} +1 ms", bench_300_delayed, t, m300)
            rows += guarded(f"{t.label} data files", bench_data, t, data)
            print(f"  {t.label} took {time.perf_counter() - started:.0f} s", file=sys.stderr)
        finally:
            server.stop()
    return rows


if __name__ == "__main__":
    for row in section():
        print(row)
