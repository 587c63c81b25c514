"""Differential test: asyncmig's statement boundaries against psql's own.

psql runs each case file with ``-X -e -v ON_ERROR_STOP=0 -f case.sql`` plus ``-L LOG``:
the log file wraps every query psql sends in ``/******** QUERY *********/`` …
``/************************/`` lines, which gives exact boundaries (``-e`` alone echoes
queries back to back). Query results go to ``-o /dev/null``.

Comparison, per query, after the same normalisation on both sides: drop U+FEFF, strip
the leading whitespace and comments (psql keeps leading ``/* */`` comments, asyncmig's
text starts at the first token), remove ``--`` comments and nested ``/* */`` comments
(psql versions differ in whether they keep ``--`` comments; asyncmig keeps them), and
remove all whitespace (psql re-joins the lines it reads with ``\\n``, so CRLF and trailing
blanks differ). Queries that are then empty or only ``;`` are dropped: psql sends a
bare ``;`` and a trailing comment as queries; asyncmig produces no statement for them.
The normalisation is naive about comment-like text inside strings, but it is applied
identically to both sides, so it cannot make different boundaries look equal unless
they differ only inside comments.

Passwords: psql never sees one on its command line. The password of a DSN (and the
random one of the probe role) goes to psql in ``PGPASSWORD``, so the test runs against a
server that asks for passwords (``ASYNCMIG_TEST_DSN``) as well as a trusting one.

Side effects: the cases run in a fresh database as a role without privileges
(``default_transaction_read_only=on`` for all but COPY cases), so ``CREATE DATABASE``,
``ALTER SYSTEM``, ``CREATE TABLESPACE`` and the like fail harmlessly while psql still
lexes, sends and logs every statement — and ``SET standard_conforming_strings`` still
takes effect, as it must. COPY cases need the COPY to start, so they run writable (the
role may create tables in ``public`` of the fresh database only).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from asyncmig.errors import SplitError
from asyncmig.splitter import split_statements

from .conftest import TestPg

GOLDEN = Path(__file__).parent / "golden" / "splitter"
CASES = sorted(GOLDEN.glob("*.sql"))
TIMEOUT = 60

# Where psql is known to split differently, what psql sends instead (normalised).
PSQL_DIVERGES = {
    # psql counts any word "begin" at depth 0 in CREATE FUNCTION as a body opening, so
    # RETURN begin + 1; does not end the statement and swallows the next one.
    "026_parameter_named_begin": [
        "CREATEFUNCTIONf(beginint)RETURNSintLANGUAGEsqlRETURNbegin+1;SELECT2;"
    ],
}
# Error cases whose unterminated construct psql sends as one last query at end of file.
PREFIX_ERRORS = {
    "e01_unterminated_string",
    "e02_unterminated_dollar",
    "e03_unterminated_block_comment",
    "e04_unterminated_quoted_identifier",
    "e05_unterminated_escape_string",
    "e06_unterminated_begin_atomic",
    "e10_unclosed_paren",
    "e12_scs_off_unterminated",
}

# psql 16+ frames a logged query in "/********* QUERY **********/" (a comment), older
# versions in plain stars: accept both, so the test runs against either server.
_QUERY = re.compile(
    r"^[/*]\*{8} QUERY \*{9}[/*]\n(.*?)\n[/*]\*{24}[/*]$", re.MULTILINE | re.DOTALL
)


def _strip_comments(s: str) -> str:
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        if s.startswith("--", i):
            j = s.find("\n", i)
            i = n if j < 0 else j
        elif s.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if s.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif s.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def normalise(query: str) -> str:
    return re.sub(r"\s+", "", _strip_comments(query.replace("\ufeff", "")))


def _keep(queries: list[str]) -> list[str]:
    return [q for q in (normalise(x) for x in queries) if q not in ("", ";")]


@dataclass(frozen=True)
class Probe:
    """A login role without privileges, with a random password of its own."""

    name: str
    password: str = field(repr=False)


@pytest.fixture(scope="module")
def probe(pg: TestPg) -> Iterator[Probe]:
    role = Probe(f"splitter_probe_{uuid.uuid4().hex[:8]}", secrets.token_hex(16))
    _admin(pg.admin_dsn, "CREATE ROLE %I LOGIN PASSWORD %L", role.name, role.password)
    try:
        yield role
    finally:
        _admin(pg.admin_dsn, "DROP ROLE IF EXISTS %I", role.name)


def _admin(dsn: str, template: str, *values: str) -> None:
    """Run ``format(template, values…)`` as the admin: the server quotes the values."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            sql = await conn.fetchval(
                "SELECT format($1, VARIADIC $2::text[])", template, list(values)
            )
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _as_role(dsn: str, role: Probe) -> tuple[str, str]:
    """``dsn`` for ``role`` without any password, and the password for ``PGPASSWORD``."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role.name}@{host}")), role.password


def psql_queries(
    pg: TestPg, dsn: str, role: Probe, sql_file: Path, *, writable: bool
) -> list[str]:
    """The queries psql sends for ``sql_file``, as logged by ``-L``."""
    if writable:
        _admin(dsn, "GRANT CREATE ON SCHEMA public TO %I", role.name)
    log = sql_file.with_suffix(".psql.log")
    target, password = _as_role(dsn, role)
    env = {
        **os.environ,
        "PGOPTIONS": "" if writable else "-c default_transaction_read_only=on",
        "PGPASSWORD": password,
    }
    proc = subprocess.run(
        [pg.psql, "-X", "-e", "-v", "ON_ERROR_STOP=0", "-o", os.devnull, "-L", str(log),
         "-d", target, "-f", str(sql_file)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )  # fmt: skip
    if not log.exists():
        if "no pg_hba.conf entry" in proc.stderr:  # the server admits known roles only
            pytest.skip(f"the server does not admit a fresh role: {proc.stderr.strip()[:200]}")
        raise AssertionError(f"psql did not run the file: {proc.stderr.strip()[:500]}")
    return _QUERY.findall(log.read_text("utf-8", errors="replace"))


def _before_error(text: str, exc: SplitError) -> str:
    assert exc.line is not None and exc.column is not None
    lines = text.splitlines(keepends=True)
    return "".join(lines[: exc.line - 1]) + lines[exc.line - 1][: exc.column - 1]


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_case_matches_psql(
    case: Path, pg: TestPg, dsn: str, probe: Probe, tmp_path: Path
) -> None:
    text = case.read_bytes().decode("utf-8")
    sql_file = tmp_path / case.name
    sql_file.write_bytes(case.read_bytes())
    try:
        ours = split_statements(text)
    except SplitError as exc:
        if case.stem not in PREFIX_ERRORS:
            pytest.skip("meta-command / COPY error case: psql would act on it")
        # psql sends the statements before the open construct as we do, then all the
        # rest (however it normalises) as one last query at end of file.
        cut = _before_error(text, exc)
        before = [s for s in split_statements(cut) if s.text.endswith(";")]
        sent = psql_queries(pg, dsn, probe, sql_file, writable=False)
        sent = [q for q in sent if normalise(q) != ";"]
        assert [normalise(q) for q in sent[: len(before)]] == [normalise(s.text) for s in before]
        assert len(sent) == len(before) + 1
        return
    writable = any(s.copy_from_stdin for s in ours)
    theirs = _keep(psql_queries(pg, dsn, probe, sql_file, writable=writable))
    mine = _keep([s.text for s in ours])
    if case.stem in PSQL_DIVERGES:
        assert mine != theirs
        assert theirs == PSQL_DIVERGES[case.stem]
    else:
        assert mine == theirs


# ------------------------------------------------------------------ generated cases

_FRAGMENTS = [
    "SELECT 1",
    "SELECT 'a;b'",
    "SELECT 'it''s;'",
    "SELECT E'it\\'s;'",
    "SELECT E'x\\\\'",
    "SELECT U&'d\\0061t;'",
    "SELECT B'101', X'1f'",
    'SELECT 1 AS "semi;colon"""',
    "SELECT $$a;b$$",
    "SELECT $t$ $$ ; $t$",
    "SELECT $q1$;$q1$ AS a$b",
    "SELECT a$b FROM (SELECT 1 AS a$b) s",
    "SELECT 1 /* c; /* nested; */ */",
    "SELECT (1; 2)",
    "SELECT (SELECT (2))",
    "SELECT 'a'\n  'b;'",
    "SELECT E'a'\n  'b\\'",
    "SELECT 1 -- comment; here\n + 1",
    "DO $do$ BEGIN PERFORM 1; END $do$",
    "CREATE FUNCTION fx() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "CREATE FUNCTION fy() RETURNS int LANGUAGE sql BEGIN ATOMIC "
    "SELECT CASE WHEN true THEN 1 END; END",
    "CREATE OR REPLACE PROCEDURE pz() LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
    "CREATE RULE r AS ON INSERT TO t DO INSTEAD (SELECT 1; SELECT 2)",
    "INSERT INTO t VALUES (1, 'x;'), (2, now()), (3, E'\\')')",
    "SELECT '東京;', 'naïve'",
    "SELECT $1::int",
]
_GAPS = [";\n", "; ", ";\n\n", ";;\n", "; -- after\n", ";\n/* between; */\n", ";\r\n"]


def _generated(seed: int, count: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    for _ in range(count):
        parts.append(rng.choice(_FRAGMENTS))
        parts.append(rng.choice(_GAPS))
    return "".join(parts)


def test_generated_cases_match_psql(pg: TestPg, dsn: str, probe: Probe, tmp_path: Path) -> None:
    # ~200 generated cases of 1-4 statements each, concatenated into one file (no state
    # crosses statements: no SET standard_conforming_strings, no COPY).
    text = "".join(_generated(seed, random.Random(seed).randint(1, 4)) for seed in range(200))
    sql_file = tmp_path / "generated.sql"
    sql_file.write_bytes(text.encode("utf-8"))
    mine = _keep([s.text for s in split_statements(text)])
    theirs = _keep(psql_queries(pg, dsn, probe, sql_file, writable=False))
    assert len(mine) > 300
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        assert a == b, f"statement {i} differs"
    assert len(mine) == len(theirs)


# ------------------------------------------------------------------ generated dense rows

# Values of a pg_dump --inserts style row: every literal kind, literals whose kind only
# the token before them decides (xe'…' is an identifier and a plain string; '…'E'…' and
# $$…$$E'…' are two literals), and what makes a row more than one scanner step:
# comments, dollar quotes, parameters, ";" inside parentheses.
_VALUES_BOTH = [
    "1", "-2.5", "NULL", "true", "7 - -1", "8 / 2", "$1", "a$b",
    "'a;b'", "'it''s; done'", "''''", "''",
    "E'it\\'s;'", "e'x\\\\'", "E'\\n;\\''", "E''''",
    "U&'d\\0061t;'", "u&'c\\'", "N'n;'", "B'101'", "X'1f'",
    '"c;""x"', "$$a;b$$", "$t$ ; $$ $t$", "'x'E'y\\';'", "$$z$$E'w\\';'",
    "'{\"k\": \"v\\\"(;\", \"a\": [1, {\"b\": null}]}'::jsonb",
    "now() - interval '1 day;'", "ARRAY['a;', E'b\\'']",
    "/* c; ( */ 3", "4 -- c; (\n", "(1; 2)",
]  # fmt: skip
_VALUES_SCS_ON = [*_VALUES_BOTH, "xe'a\\'", "'C:\\temp\\'"]


def _dense_value(rng: random.Random, values: list[str]) -> str:
    value = rng.choice(values)
    for _ in range(rng.choice([0, 0, 0, 1, 2, 4, 5])):  # deeper than one run match takes
        value = f"({value}, {rng.choice(values)})"
    return value


def _dense_insert(rng: random.Random, values: list[str]) -> str:
    rows = [
        "(" + ", ".join(_dense_value(rng, values) for _ in range(rng.randint(1, 8))) + ")"
        for _ in range(rng.randint(1, 6))
    ]
    return "INSERT INTO t VALUES\n\t" + ",\n\t".join(rows) + ";\n"


def test_generated_dense_rows_match_psql(
    pg: TestPg, dsn: str, probe: Probe, tmp_path: Path
) -> None:
    """psql sends the same statements as asyncmig splits for 300 generated multi-row
    INSERTs (every literal kind, nested parentheses, comments and dollar quotes inside
    rows), 200 with standard_conforming_strings on, then 100 with it off."""
    rng = random.Random(20260511)
    text = (
        "".join(_dense_insert(rng, _VALUES_SCS_ON) for _ in range(200))
        + "SET standard_conforming_strings = off;\n"
        + "".join(_dense_insert(rng, _VALUES_BOTH) for _ in range(100))
        + "SET standard_conforming_strings = on;\nSELECT 'end\\';\n"
    )
    sql_file = tmp_path / "dense.sql"
    sql_file.write_bytes(text.encode("utf-8"))
    mine = _keep([s.text for s in split_statements(text)])
    theirs = _keep(psql_queries(pg, dsn, probe, sql_file, writable=False))
    assert len(mine) == 303
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        assert a == b, f"statement {i} differs"
    assert len(mine) == len(theirs)
