"""asyncmig.testing benchmarks, on the 300-migration set of :mod:`bench.engine`:

* a database per test: the median time to hand a test its database (the factory keeps
  clones of the template ready), against migrating a fresh database from scratch and
  against one bare ``CREATE DATABASE … TEMPLATE``;
* ``verify-rollbacks`` (apply, roll back, two catalog snapshots, apply again, for each
  migration) against one plain apply of the same set.

Everything runs against one throwaway server started here.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import asyncpg

from asyncmig._pgserver import PgServer
from asyncmig.config import Config
from asyncmig.history import quote_ident
from asyncmig.migrator import Migrator
from asyncmig.testing import DatabaseFactory, check_rollbacks
from asyncmig.testing.templates import database_dsn
from bench.engine import make_300

Row = tuple[str, str, str, bool]
TESTS = 15
TEST_BODY_S = 0.2  # what a short integration test takes (requests against the app, asserts)


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _from_scratch(server: str, config: Config) -> float:
    name = f"b_{uuid.uuid4().hex[:10]}"
    await _admin(server, f"CREATE DATABASE {quote_ident(name)}")
    t0 = time.perf_counter()
    await Migrator(config.with_(dsn=database_dsn(server, name))).migrate()
    took = time.perf_counter() - t0
    await _admin(server, f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
    return took


async def _bare_clone(server: str, template: str) -> float:
    name = f"b_{uuid.uuid4().hex[:10]}"
    t0 = time.perf_counter()
    await _admin(server, f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}")
    took = time.perf_counter() - t0
    await _admin(server, f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
    return took


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def section() -> list[Row]:
    rows: list[Row] = []
    root = make_300()
    config = Config(sql_dir=root / "sql", rollback_dir=root / "rollback", seeds_dir=root / "seeds")
    server = PgServer().start()
    try:
        dsn = server.dsn()
        scratch = [asyncio.run(_from_scratch(dsn, config)) for _ in range(3)]
        with DatabaseFactory(dsn, config, spares=2) as factory:
            t0 = time.perf_counter()
            template = factory.template().name
            build = time.perf_counter() - t0
            hand: list[float] = []
            for _ in range(TESTS):
                t0 = time.perf_counter()
                db = factory.create()
                hand.append(time.perf_counter() - t0)
                time.sleep(TEST_BODY_S)  # the test runs; the next clone is made meanwhile
                factory.drop(db)
        # the bare copy, once the factory's spares and drops are done
        bare = [asyncio.run(_bare_clone(dsn, template)) for _ in range(7)]
        s, h = statistics.median(scratch), statistics.median(hand)
        rows.append((f"database per test: hand over (tests of {TEST_BODY_S * 1000:.0f} ms)",
                     f"median {_ms(h)} (max {_ms(max(hand))}) vs {_ms(s)} migrating 300 "
                     f"from scratch", "<= 50 ms", h <= 0.050))  # fmt: skip
        rows.append(("one CREATE DATABASE … TEMPLATE (300 tables), median",
                     _ms(statistics.median(bare)), "(figure)", True))  # fmt: skip
        rows.append(("template build, once per file set", _ms(build), "(figure)", True))

        t0 = time.perf_counter()
        report = asyncio.run(check_rollbacks(dsn, config))
        verify = time.perf_counter() - t0
        if not report.ok:
            print(report.summary(), file=sys.stderr)
        rows.append((
            "verify-rollbacks on 300 vs one plain apply",
            f"{_ms(verify)} vs {_ms(s)} ({verify / s:.0f}x), "
            f"{'ok' if report.ok else 'FINDINGS'}",
            "(figure)", report.ok,
        ))  # fmt: skip
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    for row in section():
        print(row)
