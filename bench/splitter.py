"""Splitter benchmark: MB/s of :func:`asyncmig.splitter.split_statements` on a generated
50 MB migration, beside ``pglast.split(text, with_parser=False)``, and peak memory.

The input mixes what real migrations and data dumps contain: multi-row INSERTs with
quoted strings (``''`` and ``;`` inside) and JSON, plpgsql functions with ``$$`` bodies,
DO blocks and CREATE INDEX. It is generated deterministically under ``bench/.data/``
and reused while the generator's version is unchanged.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from asyncmig.splitter import split_statements

DATA = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1
TARGET_MB_S = 30.0
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


def _best_rate(fn: Callable[[str], object], text: str, size_mb: float, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - started)
    return size_mb / best


def measure(path: Path, runs: int = 3) -> dict[str, float | str | None]:
    """Figures for one input file: MB/s (ours, pglast's), ratio, peak memory."""
    raw = path.read_bytes()
    size_mb = len(raw) / 1_000_000
    text = raw.decode("utf-8")
    del raw
    ours = _best_rate(split_statements, text, size_mb, runs)
    count = len(split_statements(text))

    pglast_rate: float | None = None
    pglast_note: str | None = None
    try:
        import pglast

        def pglast_split(t: str) -> object:
            return pglast.split(t, with_parser=False)

        pglast_rate = _best_rate(pglast_split, text, size_mb, 1)
        theirs = len(pglast.split(text, with_parser=False))
        if theirs != count:
            pglast_note = f"pglast found {theirs} statements, asyncmig {count}"
    except Exception as exc:  # pglast's scanner may reject part of the input
        pglast_note = f"pglast.split failed: {type(exc).__name__}: {exc}"[:200]

    gc.collect()
    tracemalloc.start()
    statements = split_statements(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del statements
    input_bytes = len(text.encode("utf-8")) if text.isascii() is False else len(text)
    return {
        "size_mb": size_mb,
        "statements": float(count),
        "ours_mb_s": ours,
        "pglast_mb_s": pglast_rate,
        "pglast_note": pglast_note,
        "peak_mb": peak / 1_000_000,
        # Relative to the input as Python holds it (its str object), which is what
        # "one copy of the input" means for the statements' text slices.
        "peak_ratio": peak / _str_size(text),
        "input_bytes": float(input_bytes),
    }


def _str_size(text: str) -> int:
    import sys

    return sys.getsizeof(text)


def section() -> list[Row]:
    path = generate()
    m = measure(path)
    ours = float(m["ours_mb_s"] or 0.0)
    rows: list[Row] = [
        (
            "input",
            f"{m['size_mb']:.1f} MB, {int(float(m['statements'] or 0))} statements",
            "",
            True,
        ),
        ("split_statements", f"{ours:.1f} MB/s", f">= {TARGET_MB_S:.0f} MB/s", ours >= TARGET_MB_S),
    ]
    theirs = m["pglast_mb_s"]
    if isinstance(theirs, float):
        rows.append(("pglast.split (scanner)", f"{theirs:.1f} MB/s", "", True))
        rows.append(("asyncmig / pglast", f"{ours / theirs:.2f}x", "", True))
    if m["pglast_note"]:
        rows.append(("pglast note", str(m["pglast_note"]), "", True))
    ratio = float(m["peak_ratio"] or 0.0)
    rows.append(
        (
            "peak memory while splitting",
            f"{float(m['peak_mb'] or 0.0):.1f} MB ({ratio:.2f}x input str)",
            f"<= {TARGET_MEMORY_RATIO:.1f}x input",
            ratio <= TARGET_MEMORY_RATIO,
        )
    )
    return rows
