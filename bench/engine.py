"""Engine benchmarks: asyncmig against ``psql -X -q -1 -f`` on the same SQL and server.

Everything runs against one throwaway server started here; each measurement gets a
fresh database, and runs are interleaved (psql, asyncmig, psql, …) because the server's
speed drifts. asyncmig runs in a child process (``python -m bench.engine_child``) like
psql; two figures come out of each run: the library call (what a service's lifespan
hook awaits, after import) and the whole process (what a deploy script sees, with the
Python interpreter's start-up and imports, ~0.15-0.2 s here, which psql does not pay).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from asyncmig._pgserver import PgServer

DATA = Path(__file__).resolve().parent / ".data"
ROOT = Path(__file__).resolve().parent.parent

Row = tuple[str, str, str, bool]
REPEAT = 5


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


def _psql(server: PgServer, dsn: str, path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [str(server.psql), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(path), "-d", dsn],
        check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PGOPTIONS": ""},
    )  # fmt: skip
    return time.perf_counter() - t0


def _asyncmig(dsn: str, root: Path, op: str = "migrate") -> dict[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench.engine_child", op, dsn, str(root)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def _new_db(server: PgServer, admin: Callable[[str], None]) -> str:
    name = f"b_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE DATABASE "{name}"')
    return server.dsn(name)


def section() -> list[Row]:
    rows: list[Row] = []
    server = PgServer().start()
    try:

        def admin(sql: str) -> None:
            subprocess.run([str(server.psql), "-X", "-q", "-c", sql, "-d", server.dsn()],
                           check=True)  # fmt: skip

        def ratio_rows(label: str, psql: list[float], runs: list[dict[str, float]],
                       target: float) -> list[Row]:  # fmt: skip
            p = statistics.median(psql)
            lib = statistics.median(r["after_import"] for r in runs)
            proc = statistics.median(r["wall"] for r in runs)
            return [
                (f"{label}: library call", f"{lib / p:.2f}x ({lib:.2f}s vs psql {p:.2f}s)",
                 f"<= {target}x", lib / p <= target),
                (f"{label}: whole process", f"{proc / p:.2f}x ({proc:.2f}s, with interpreter "
                 f"start-up)", f"<= {target}x", proc / p <= target),
            ]  # fmt: skip

        m300 = make_300()
        psql_up: list[float] = []
        psql_down: list[float] = []
        mig_up: list[dict[str, float]] = []
        mig_down: list[dict[str, float]] = []
        for _ in range(REPEAT):  # interleaved: the server's speed drifts between runs
            db = _new_db(server, admin)
            psql_up.append(_psql(server, db, m300 / "all_up.sql"))
            psql_down.append(_psql(server, db, m300 / "all_down.sql"))
            db = _new_db(server, admin)
            mig_up.append(_asyncmig(db, m300))
            mig_down.append(_asyncmig(db, m300, "rollback-all"))
        rows += ratio_rows("apply 300 migrations vs psql -1", psql_up, mig_up, 1.15)
        rows += ratio_rows("roll back 300 vs psql -1", psql_down, mig_down, 1.3)

        # nothing pending: 300 applied, a replica starts
        db = _new_db(server, admin)
        _asyncmig(db, m300)
        idle = [_asyncmig(db, m300)["after_import"] for _ in range(5)]
        rows.append(("nothing pending (300 applied), after import",
                     f"{statistics.median(idle) * 1000:.0f} ms", "< 150 ms",
                     statistics.median(idle) < 0.150))  # fmt: skip

        data = make_data()
        for kind, target in (("insert", 1.0), ("copy", 1.2)):
            p: list[float] = []
            runs: list[dict[str, float]] = []
            for _ in range(3):
                db = _new_db(server, admin)
                p.append(_psql(server, db, data / kind / "sql" / "001_load.sql"))
                db = _new_db(server, admin)
                runs.append(_asyncmig(db, data / kind))
            label = "50 MB multi-row INSERTs" if kind == "insert" else "50 MB inline COPY"
            rows += ratio_rows(f"{label} vs psql -1", p, runs, target)
            if kind == "insert":
                rss = max(r["max_rss_mb"] for r in runs)
                rows.append(("peak client RSS applying 50 MB", f"{rss:.0f} MB", "< 150 MB",
                             rss < 150))  # fmt: skip
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    for row in section():
        print(row)
