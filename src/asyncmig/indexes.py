"""The INVALID indexes a failed concurrent build leaves, and what a migration does about them.

A ``CREATE INDEX CONCURRENTLY`` (or ``REINDEX … CONCURRENTLY``) that fails half-way
leaves its index behind, INVALID: never used by queries, still maintained on every
write. Running the statement again either fails ("already exists") or, with
``IF NOT EXISTS``, succeeds and keeps it invalid for good. So:

* **Which index does a statement build?** :func:`targets` reads it from the statement's
  text (pure): ``CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY]
  table`` builds ``name`` in the table's schema (an unnamed one: some index of that
  table); ``REINDEX [(…)] {INDEX|TABLE} [CONCURRENTLY] name`` builds ``<index>_ccnew``
  copies of that index, or of the table's indexes. The server resolves the names, with
  ``to_regclass`` and the session's search_path, when they are checked
  (:meth:`History.invalid_index_targets <asyncmig.history.History.invalid_index_targets>`).
* **Before a no-transaction migration runs** (a resume, a retry, or its first run), the
  migrator checks every index its statements build: one that exists and is INVALID
  stops the run before anything runs (:func:`refuse_invalid`), naming it. With
  ``rebuild_invalid`` the runner instead drops it (``DROP INDEX CONCURRENTLY``) just
  before the file runs, and runs its statement again: a statement still ahead in the
  file runs in its turn, one already done runs again first (:func:`rebuild_before`).
* **After a no-transaction migration**, no index it built may be INVALID
  (:func:`check_after`); if one is, the migration fails (resume point after its last
  statement), naming the index and the repair.

An index that a concurrent build is creating right now (its
``pg_stat_progress_create_index`` row) is invalid until that build ends: it is never
reported, never dropped (the SQL that excludes it is in :mod:`asyncmig.history`).
Partitioned indexes (``CREATE INDEX … ON ONLY``) are invalid until every partition's
index is attached; that is not a failed build, and they are left out too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
import asyncpg

from .errors import InvalidIndexError, MigrationError, ResumeRequiredError
from .events import Message
from .history import History, quote_ident
from .models import InvalidIndex

if TYPE_CHECKING:
    from .connection import Conn
    from .events import Emitter
    from .models import MigrateStep
    from .splitter import Statement
    from .sqlfile import SqlFile

__all__ = [
    "IndexTarget",
    "check_after",
    "invalid_in",
    "name_left_invalid",
    "rebuild_before",
    "refuse_invalid",
    "targets",
]

Kind = Literal["create", "reindex_index", "reindex_table"]

_ASK_TIMEOUT = 5.0  # seconds, for the catalog question after a failure
_NAMEDATALEN = 63  # bytes of an identifier the server keeps
# The copies REINDEX CONCURRENTLY makes: <index>_ccnew, _ccnew1, … and <index>_ccold…
_REINDEX_COPY = re.compile(r"_cc(?:new|old)[0-9]*\Z")


@dataclass(frozen=True, slots=True)
class IndexTarget:
    """An index a statement builds, as its text names it.

    ``relation`` is written as in the file (quotes kept), for ``to_regclass``: the
    table (``create``, ``reindex_table``) or the index (``reindex_index``). ``name``:
    the index's name as the server stores it (``create`` only; None when unnamed).
    ``statement``: the statement's 1-based position in its file.
    """

    statement: int
    kind: Kind
    relation: str
    name: str | None = None
    concurrently: bool = False

    def is_copy(self, index: InvalidIndex) -> bool:
        """``index`` is a copy a failed REINDEX CONCURRENTLY left (to drop; the
        REINDEX makes it again), not the index it rebuilds."""
        return self.kind != "create" and _REINDEX_COPY.search(index.name) is not None


# -- which index a statement builds (pure) ----------------------------------------------

_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*|"(?:[^"]|"")*"?|[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*|.""",
    re.S,
)


def _tokens(text: str) -> Iterator[str]:
    """Words (upper-cased), quoted identifiers (as written) and single characters;
    whitespace and comments (nested block comments too) skipped."""
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None  # "." matches any character
        tok = m.group()
        pos = m.end()
        if tok == "/*":
            depth = 1
            while depth and pos < len(text):
                if text.startswith("/*", pos):
                    depth, pos = depth + 1, pos + 2
                elif text.startswith("*/", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
            continue
        if tok.isspace() or tok.startswith("--"):
            continue
        yield tok if tok.startswith('"') else (tok.upper() if _is_word(tok) else tok)


def _is_word(tok: str) -> bool:
    return tok[:1].isalpha() or tok[:1] == "_"


def _is_name(tok: str | None) -> bool:
    return tok is not None and (tok.startswith('"') or _is_word(tok))


def stored_name(tok: str) -> str:
    """An identifier token as the server stores it: quoted ones as written, others
    lower-cased (ASCII only, as PostgreSQL does); truncated to 63 bytes."""
    if tok.startswith('"'):
        name = tok[1:-1].replace('""', '"')
    else:
        name = "".join(c.lower() if c.isascii() else c for c in tok)
    raw = name.encode()
    if len(raw) > _NAMEDATALEN:
        name = raw[:_NAMEDATALEN].decode(errors="ignore")
    return name


class _Reader:
    def __init__(self, text: str, raw: str) -> None:
        self._it = _tokens(text)
        self._raw = raw
        self.tok: str | None = next(self._it, None)

    def take(self, *words: str) -> bool:
        if self.tok in words:
            self.tok = next(self._it, None)
            return True
        return False

    def next(self) -> str | None:
        tok, self.tok = self.tok, next(self._it, None)
        return tok

    def qualified(self) -> str | None:
        """``a`` or ``a.b`` as written (each part's original spelling), or None: longer
        names (another database's) and empty quoted names are left to the server to
        refuse when the statement runs, not to ``to_regclass`` before."""
        if not _is_name(self.tok):
            return None
        parts = [self._spelling(self.next())]
        while self.take("."):
            if not _is_name(self.tok):
                return None
            parts.append(self._spelling(self.next()))
        if len(parts) > 2 or '""' in parts:
            return None
        return ".".join(parts)

    @staticmethod
    def _spelling(tok: str | None) -> str:
        assert tok is not None
        return tok if tok.startswith('"') else tok.lower()


def target(st: Statement, index: int) -> IndexTarget | None:
    """The index statement ``index`` (1-based) builds, if it builds one."""
    if st.keyword == "CREATE INDEX":
        return _create_index(st.text, index)
    if st.keyword == "REINDEX":
        return _reindex(st.text, index)
    return None


def targets(statements: Sequence[Statement]) -> list[IndexTarget]:
    """Every index the statements build, in order."""
    found = (target(st, i) for i, st in enumerate(statements, 1))
    return [t for t in found if t is not None]


def _create_index(text: str, index: int) -> IndexTarget | None:
    r = _Reader(text, text)
    if not r.take("CREATE"):
        return None
    r.take("UNIQUE")
    if not r.take("INDEX"):
        return None
    concurrently = r.take("CONCURRENTLY")
    if r.take("IF") and not (r.take("NOT") and r.take("EXISTS")):
        return None
    name = None
    if r.tok != "ON":
        tok = r.next()
        if tok is None or not _is_name(tok):
            return None
        name = stored_name(tok)
    if not r.take("ON"):
        return None
    if r.take("ONLY"):
        return None  # a partitioned index: invalid until its partitions are attached
    table = r.qualified()
    if table is None:
        return None
    return IndexTarget(index, "create", table, name, concurrently)


_TRUE = frozenset({"TRUE", "ON", "1", "YES"})


def _reindex(text: str, index: int) -> IndexTarget | None:
    r = _Reader(text, text)
    if not r.take("REINDEX"):
        return None
    concurrently = False
    if r.take("("):
        option: list[str] = []
        while r.tok is not None and r.tok != ")":
            tok = r.next()
            if tok == ",":
                concurrently |= _concurrent_option(option)
                option = []
            elif tok is not None:
                option.append(tok)
        concurrently |= _concurrent_option(option)
        if not r.take(")"):
            return None
    kind: Kind
    if r.take("INDEX"):
        kind = "reindex_index"
    elif r.take("TABLE"):
        kind = "reindex_table"
    else:
        return None  # SCHEMA, DATABASE, SYSTEM: not one relation's indexes
    concurrently |= r.take("CONCURRENTLY")
    if not concurrently:
        return None  # a plain REINDEX is transactional: it leaves nothing behind
    relation = r.qualified()
    if relation is None:
        return None
    return IndexTarget(index, kind, relation, None, True)


def _concurrent_option(words: list[str]) -> bool:
    if not words or words[0] != "CONCURRENTLY":
        return False
    return len(words) == 1 or words[1].strip("'").upper() in _TRUE


# -- checks on the server -----------------------------------------------------------------


async def invalid_in(
    conn: Conn, history: History, sql: SqlFile
) -> list[tuple[IndexTarget, InvalidIndex]]:
    """The INVALID indexes (none being built now) that ``sql``'s statements build."""
    found = targets(sql.statements)
    if not found:
        return []
    by_position = {i: t for i, t in enumerate(found)}
    hits = await history.invalid_index_targets(conn, [(t.kind, t.relation, t.name) for t in found])
    return [(by_position[i], idx) for i, idx in hits]


def _rebuildable(
    found: Sequence[tuple[IndexTarget, InvalidIndex]],
) -> list[tuple[IndexTarget, InvalidIndex]]:
    """What running the statement again would trip over, and a drop cures: the index a
    CREATE INDEX builds, the copies a REINDEX CONCURRENTLY makes. Not an index that a
    REINDEX rebuilds (REINDEX INDEX CONCURRENTLY makes an invalid one valid; one that
    REINDEX TABLE CONCURRENTLY skips is :func:`check_after`'s finding)."""
    return [(t, idx) for t, idx in found if t.kind == "create" or t.is_copy(idx)]


def _drop_hint(indexes: Sequence[InvalidIndex]) -> str:
    return " ".join(
        f"DROP INDEX CONCURRENTLY {quote_ident(i.schema)}.{quote_ident(i.name)};" for i in indexes
    )


def _names(indexes: Sequence[InvalidIndex]) -> str:
    return ", ".join(i.qualified for i in indexes)


async def refuse_invalid(
    conn: Conn, history: History, steps: Sequence[MigrateStep], *, resume: bool
) -> None:
    """Before anything runs: an index a planned no-transaction migration builds that
    exists and is INVALID stops the run (:class:`ResumeRequiredError`, naming it)."""
    for step in steps:
        sql = step.migration.forward
        if sql.directives.transactional:
            continue
        found = _rebuildable(await invalid_in(conn, history, sql))
        if not found:
            continue
        indexes = _unique(idx for _, idx in found)
        statements = sorted({t.statement for t, _ in found})
        v = step.migration.version
        flags = "--resume --rebuild-invalid" if resume else "--rebuild-invalid"
        which = ", ".join(str(s) for s in statements)
        raise ResumeRequiredError(
            f"migration {v} ({step.migration.filename}) builds index "
            f"{_names(indexes)}, which exists and is INVALID: a concurrent build of it "
            f"failed or was cancelled (it is not being built now). Running statement "
            f"{which} again would fail, or keep it invalid. Nothing was run. Run "
            f"`asyncmig migrate {flags}` to drop it concurrently and build it again, or "
            f"drop it yourself ({_drop_hint(indexes)}) and run `asyncmig migrate"
            f"{' --resume' if resume else ''}`.",
            version=v, statements_done=step.resume_from,
            invalid_indexes=[i.qualified for i in indexes],
        )  # fmt: skip


async def rebuild_before(
    conn: Conn, history: History, emit: Emitter, sql: SqlFile, resume_from: int
) -> None:
    """Drop (concurrently) each INVALID index ``sql`` builds; a statement before
    ``resume_from`` (already done) builds it again now, a later one in its turn."""
    rerun: list[int] = []
    for t, idx in _rebuildable(await invalid_in(conn, history, sql)):
        await history.drop_index_concurrently(conn, idx.schema, idx.name)
        again = t.statement <= resume_from
        if again and t.statement not in rerun:
            rerun.append(t.statement)
        await emit(Message(
            level="warning",
            text=f"dropped INVALID index {idx.qualified} (DROP INDEX CONCURRENTLY); "
            f"statement {t.statement} builds it again"
            + (" now" if again else " in its turn"),
        ))  # fmt: skip
    for index in rerun:
        await conn.execute(sql.statements[index - 1].text)


async def check_after(
    conn: Conn, history: History, sql: SqlFile, version: int, applied: Sequence[int] = ()
) -> None:
    """After a no-transaction migration: none of the indexes it built is INVALID, else
    :class:`InvalidIndexError` naming them (``applied``: what the run applied before)."""
    found = await invalid_in(conn, history, sql)
    if not found:
        return
    indexes = _unique(idx for _, idx in found)
    statements = sorted({t.statement for t, _ in found})
    raise InvalidIndexError(
        f"migration {version} ran every statement, but index {_names(indexes)} "
        f"(statement {', '.join(str(s) for s in statements)}) is INVALID: queries do not "
        f"use it, writes still maintain it (an earlier failed build left it, and "
        f"IF NOT EXISTS kept it?). The migration is recorded as failed. Run `asyncmig "
        f"migrate --resume --rebuild-invalid` to drop it concurrently and build it again.",
        version=version, path=sql.path, applied=applied,
        invalid_indexes=[i.qualified for i in indexes],
    )  # fmt: skip


async def name_left_invalid(
    conn: Conn, history: History, steps: Sequence[MigrateStep], error: MigrationError
) -> None:
    """A no-transaction migration failed (its failure already recorded): if it left an
    index it builds INVALID, ``error``'s message names it and the repair. Best effort:
    a connection that cannot answer within a few seconds leaves the message as it is."""
    step = next((s for s in steps if s.migration.version == error.version), None)
    if step is None or step.migration.forward.directives.transactional:
        return
    found: list[tuple[IndexTarget, InvalidIndex]] = []
    with anyio.move_on_after(_ASK_TIMEOUT):
        try:
            if not conn.is_closed() and not conn.is_in_transaction():
                found = await invalid_in(conn, history, step.migration.forward)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return
    if not found:
        return
    indexes = _unique(idx for _, idx in found)
    # The statements before the failing one are committed: resuming is needed after 1.
    resume = (error.statement_index or 1) > 1 or step.resume_from > 0
    flags = "--resume --rebuild-invalid" if resume else "--rebuild-invalid"
    error.message += (
        f". It left index {_names(indexes)} INVALID: once the cause is fixed, "
        f"`asyncmig migrate {flags}` drops it concurrently and builds it again"
    )
    error.args = (error.message,)


def _unique(items: Iterator[InvalidIndex] | Sequence[InvalidIndex]) -> list[InvalidIndex]:
    out: list[InvalidIndex] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
