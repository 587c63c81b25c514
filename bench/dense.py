"""A dense data dump for the splitter benchmark, as ``pg_dump --inserts`` writes one.

Most bytes are inside quoted literals: multi-row INSERTs (``--rows-per-insert``)
whose rows hold ``'…'`` text with ``''`` doubling, ``E'…'`` strings with ``\\n``,
``\\'`` and ``\\\\`` escapes, JSON literals with nested quotes and braces, arrays,
NULLs, booleans, numbers and timestamps; between them, the header, ``CREATE TABLE``,
``ALTER TABLE``, ``setval`` and ``CREATE INDEX`` statements pg_dump writes (no COPY). It
is what users point asyncmig at when a dump becomes a baseline migration, and the slowest
realistic text for a scanner that jumps from quote to quote.

Generated deterministically (seeded) under ``bench/.data/``, reused while
:data:`GENERATOR_VERSION` is unchanged; never committed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1

_WORDS = [
    "order", "shipped", "customer's", "O'Brien", "d'Artagnan", "it's", "naïve", "café",
    "Müller", "東京", "payment", "refund", "pending", "50%", "a;b", "x--y", "/*not*/",
    "(left", "right)", "$$", "{brace}", "[bracket]", '"quoted"', "tab\there", "C:\\temp",
    "the", "and", "of", "to", "with", "for", "on", "by", "new", "old",
]  # fmt: skip

_HEADER = """--
-- PostgreSQL database dump
--

-- Dumped from database version 15.6
-- Dumped by pg_dump version 15.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

"""


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _plain(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _escaped(s: str) -> str:
    """An ``E'…'`` literal of ``s`` (pg_dump writes these with standard strings off)."""
    body = s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return "E'" + body + "'"


def _json(rng: random.Random) -> dict[str, object]:
    doc: dict[str, object] = {"k": rng.choice(["web", "api", "import"]), "ok": rng.random() < 0.8}
    if rng.random() < 0.5:
        doc["tags"] = [_text(rng, 1, 1) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.3:
        doc["price"] = {"amount": rng.randint(0, 10**5) / 100, "cur": "EUR"}
    if rng.random() < 0.3:
        doc["note"] = _text(rng, 1, 3)
    return doc


def _timestamp(rng: random.Random) -> str:
    return (
        f"'20{rng.randint(10, 26):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        f".{rng.randint(0, 999999):06d}+00'"
    )


def _plain_array_item(rng: random.Random) -> str:
    """An element of a text[] literal: double-quoted, inside the '…' literal."""
    item = _text(rng, 1, 2).replace("\\", "\\\\").replace('"', '\\"')
    return ('"' + item + '"').replace("'", "''")


def _row(rng: random.Random, row_id: int) -> str:
    note = _text(rng, 1, 4) + ("\n" + _text(rng, 1, 2) if rng.random() < 0.3 else "")
    values = [
        str(row_id),
        _plain(_text(rng, 1, 3)),
        _escaped(note) if rng.random() < 0.8 else "NULL",
        _plain(rng.choice(["active", "pending", "closed", "it's done"])),
        _plain(rng.choice(["DE", "FR", "US", "JP"])),
        _plain(json.dumps(_json(rng), ensure_ascii=False)),
        "'{" + ",".join(_plain_array_item(rng) for _ in range(rng.randint(0, 2))) + "}'",
        rng.choice(["true", "false", "NULL"]),
        f"{rng.randint(-(10**5), 10**5) / 100:.2f}",
        _timestamp(rng),
        _plain(_text(rng, 0, 2)) if rng.random() < 0.7 else "NULL",
    ]
    return "(" + ", ".join(values) + ")"


def _create_table(i: int) -> str:
    return f"""--
-- Name: events_{i}; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.events_{i} (
    id bigint NOT NULL,
    title text NOT NULL,
    note text,
    status text NOT NULL,
    country character(2),
    doc jsonb DEFAULT '{{}}'::jsonb NOT NULL,
    labels text[],
    active boolean,
    amount numeric(12,2),
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    comment text,
    CONSTRAINT events_{i}_title_check CHECK ((title <> ''::text))
);


ALTER TABLE public.events_{i} OWNER TO app;

"""


def _tail(i: int, last_id: int) -> str:
    return (
        f"\nSELECT pg_catalog.setval('public.events_{i}_id_seq', {last_id}, true);\n\n"
        f"ALTER TABLE ONLY public.events_{i}\n"
        f"    ADD CONSTRAINT events_{i}_pkey PRIMARY KEY (id);\n\n"
        f"CREATE INDEX events_{i}_doc_idx ON public.events_{i} "
        f"USING gin (doc jsonb_path_ops);\n\n"
    )


def generate(size_mb: int = 50, path: Path | None = None) -> Path:
    """Write (once) the deterministic dense dump of about ``size_mb`` MB and return it."""
    path = path or DATA / f"dense_{size_mb}mb_v{GENERATOR_VERSION}.sql"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20260511)
    target = size_mb * 1_000_000
    parts = [_HEADER]
    written = len(_HEADER)
    table = 0
    while written < target:
        table += 1
        chunks = [
            _create_table(table),
            f"--\n-- Data for Name: events_{table}; Type: TABLE DATA\n--\n\n",
        ]
        row_id = 0
        for _ in range(rng.randint(20, 60)):
            rows = []
            for _ in range(rng.randint(50, 200)):
                row_id += 1
                rows.append(_row(rng, row_id))
            chunks.append(
                f"INSERT INTO public.events_{table} VALUES\n\t" + ",\n\t".join(rows) + ";\n"
            )
        chunks.append(_tail(table, row_id))
        chunk = "".join(chunks)
        parts.append(chunk)
        written += len(chunk.encode())
    parts.append("--\n-- PostgreSQL database dump complete\n--\n\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(generate())
