"""Splitter benchmark: MB/s of :func:`asyncmig.splitter.split_statements` beside
``pglast.split(text, with_parser=False)`` (pglast's C scanner), and peak memory, on two
generated 50 MB files:

* "mixed" mixes what real migrations and data dumps contain: multi-row INSERTs with
  quoted strings (``''`` and ``;`` inside) and JSON, plpgsql functions with ``$$``
  bodies, DO blocks and CREATE INDEX;
* "dense" is a ``pg_dump --inserts`` style dump in which most bytes are inside a
  literal (see :mod:`bench.dense`).

Both are generated deterministically under ``bench/.data/`` and reused while their
generator's version is unchanged. The two splitters run interleaved, :data:`RUNS` times
each per file; the table gives medians, min and max, and the ratio of the medians.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from asyncmig.splitter import split_statements
from bench import dense

DATA = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1
RUNS = 5
TARGET_RATIO = 1.0  # asyncmig / pglast's C scanner, medians, on each file
TARGET_MB_S = 30.0  # only when pglast is not installed
TARGET_MEMORY_RATIO = 1.25  # what splitting allocates: the statements, one copy of the input

Row = tuple[str, str, str, bool]

_WORDS = [
    "alpha", "beta", "gamma", "delta", "o'brien", "semi;colon", "naïve", "café", "東京",
    "--", "not", "a", "comment", "/*", "nor", "this", "*/", "$$dollar$$", "back\\slash",
    "(paren",
]  # fmt: skip


def _sentence(rng: random.Random, k: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(k))


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _insert(rng: random.Random, table: int, rows: int) -> str:
    values = []
    for _ in range(rows):
        doc = {
            "name": _sentence(rng, 2),
            "tags": [_sentence(rng, 1) for _ in range(rng.randint(0, 3))],
            "score": rng.randint(0, 10**6) / 100,
        }
        values.append(
            f"({rng.randint(1, 10**9)}, {_quote(_sentence(rng, rng.randint(1, 6)))}, "
            f"{_quote(json.dumps(doc, ensure_ascii=False))}::jsonb, "
            f"{rng.choice(['true', 'false', 'NULL'])}, "
            f"now() - interval '{rng.randint(1, 99)} days')"
        )
    return f"INSERT INTO data_{table} (id, label, doc, active, created_at) VALUES\n  " + (
        ",\n  ".join(values) + ";\n"
    )


def _function(rng: random.Random, i: int) -> str:
    return f"""CREATE OR REPLACE FUNCTION touch_{i}(p_id bigint, p_note text DEFAULT 'n/a;')
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := 0;  -- a comment; with a semicolon
BEGIN
    /* block comment with 'quote' */
    SELECT count(*) INTO v_count FROM data_{i % 10} WHERE id = $1;
    IF v_count > {rng.randint(1, 1000)} THEN
        RAISE NOTICE 'too many (%); note %', v_count, p_note;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
"""


def _do_block(rng: random.Random, i: int) -> str:
    return f"""DO $do$
BEGIN
    PERFORM pg_sleep(0);  -- {_sentence(rng, 3)}
    EXECUTE format('SELECT %L', $x${_sentence(rng, 4)}$x$);
END
$do$;
"""


def _index(rng: random.Random, i: int) -> str:
    kind = rng.choice(["", "UNIQUE ", ""])
    return (
        f"CREATE {kind}INDEX IF NOT EXISTS data_{i}_idx ON data_{i % 10} "
        f"USING btree ((doc->>'name'), created_at) WHERE active;\n"
    )


def generate(size_mb: int = 50, path: Path | None = None) -> Path:
    """Write (once) the deterministic mixed file of about ``size_mb`` MB and return it."""
    path = path or DATA / f"splitter_{size_mb}mb_v{GENERATOR_VERSION}.sql"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261126)
    target = size_mb * 1_000_000
    written = 0
    parts: list[str] = [
        "-- asyncmig splitter benchmark input (generated)\nSET standard_conforming_strings = on;\n"
    ]
    i = 0
    while written < target:
        i += 1
        roll = rng.random()
        if roll < 0.70:
            chunk = _insert(rng, i % 10, rng.randint(20, 200))
        elif roll < 0.85:
            chunk = _function(rng, i)
        elif roll < 0.93:
            chunk = _do_block(rng, i)
        else:
            chunk = _index(rng, i)
        parts.append(chunk)
        written += len(chunk.encode())
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def _rates(
    fns: dict[str, Callable[[str], object]], text: str, size_mb: float, runs: int
) -> dict[str, list[float]]:
    """MB/s of each function over ``runs`` rounds, interleaved so noise hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            gc.collect()
            started = time.perf_counter()
            result = fn(text)
            elapsed = time.perf_counter() - started
            del result
            rates[name].append(size_mb / elapsed)
    return rates


def _pglast_split() -> Callable[[str], object] | None:
    try:
        import pglast
    except ImportError:
        return None

    def split(text: str) -> object:
        return pglast.split(text, with_parser=False)

    return split


def measure(path: Path, runs: int = RUNS) -> dict[str, object]:
    """Figures for one input file: MB/s per run (ours, pglast's), peak memory."""
    raw = path.read_bytes()
    size_mb = len(raw) / 1_000_000
    text = raw.decode("utf-8")
    del raw
    count = len(split_statements(text))
    fns: dict[str, Callable[[str], object]] = {"asyncmig": split_statements}
    pglast_note: str | None = None
    pglast_split = _pglast_split()
    if pglast_split is None:
        pglast_note = "pglast is not installed"
    else:
        try:
            theirs = len(pglast_split(text))  # type: ignore[arg-type]
        except Exception as exc:  # pglast's scanner may reject part of the input
            pglast_note = f"pglast.split failed: {type(exc).__name__}: {exc}"[:200]
        else:
            fns["pglast"] = pglast_split
            if theirs != count:
                pglast_note = f"pglast found {theirs} statements, asyncmig {count}"
    rates = _rates(fns, text, size_mb, runs)

    gc.collect()
    tracemalloc.start()
    statements = split_statements(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del statements
    return {
        "size_mb": size_mb,
        "statements": count,
        "rates": rates,
        "pglast_note": pglast_note,
        "peak_mb": peak / 1_000_000,
        # Relative to the input as Python holds it (its str object), which is what
        # "one copy of the input" means for the statements' text slices.
        "peak_ratio": peak / sys.getsizeof(text),
    }


def _spread(rates: list[float]) -> str:
    return (
        f"{statistics.median(rates):.1f} MB/s (min {min(rates):.1f}, max {max(rates):.1f}, "
        f"n={len(rates)})"
    )


def _file_rows(label: str, path: Path) -> list[Row]:
    m = measure(path)
    rates: dict[str, list[float]] = m["rates"]  # type: ignore[assignment]
    ours = statistics.median(rates["asyncmig"])
    rows: list[Row] = [
        (f"{label}: input", f"{m['size_mb']:.1f} MB, {m['statements']} statements", "", True),
        (f"{label}: split_statements", _spread(rates["asyncmig"]), "", True),
    ]
    if "pglast" in rates:
        theirs = statistics.median(rates["pglast"])
        ratio = ours / theirs
        rows.append((f"{label}: pglast.split (C scanner)", _spread(rates["pglast"]), "", True))
        rows.append(
            (
                f"{label}: asyncmig / pglast (medians)",
                f"{ratio:.2f}x",
                f">= {TARGET_RATIO:.1f}x",
                ratio >= TARGET_RATIO,
            )
        )
    else:
        rows.append(
            (
                f"{label}: split_statements median",
                f"{ours:.1f} MB/s",
                f">= {TARGET_MB_S:.0f} MB/s",
                ours >= TARGET_MB_S,
            )
        )
    if m["pglast_note"]:
        rows.append((f"{label}: pglast note", str(m["pglast_note"]), "", True))
    ratio = float(m["peak_ratio"])  # type: ignore[arg-type]
    rows.append(
        (
            f"{label}: peak memory while splitting",
            f"{float(m['peak_mb']):.1f} MB ({ratio:.2f}x input str)",  # type: ignore[arg-type]
            f"<= {TARGET_MEMORY_RATIO:.2f}x input",
            ratio <= TARGET_MEMORY_RATIO,
        )
    )
    return rows


def section() -> list[Row]:
    return _file_rows("mixed", generate()) + _file_rows("dense", dense.generate())
