"""The catalog queries about INVALID indexes: which ones a failed concurrent build left
(all of them, or those a file's statements name), and dropping one concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ..connection import Conn
from ..models import InvalidIndex
from ..session import quote_ident

# An INVALID index that a build is creating right now is not "left invalid": its
# pg_stat_progress_create_index row names it (CREATE INDEX CONCURRENTLY), or its table
# (REINDEX CONCURRENTLY, whose _ccnew copy the row does not name). A row of another
# user's backend, without pg_read_all_stats, hides its relations: then that backend's
# lock on the table tells. Partitioned indexes (relkind 'I') are invalid until their
# partitions' indexes are attached, not after a failed build: left out.
_LEFT_INVALID = """
NOT i.indisvalid AND c.relkind = 'i'
AND NOT EXISTS (
    SELECT 1 FROM pg_stat_progress_create_index p
    WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND p.pid <> pg_backend_pid()
      AND (p.index_relid = i.indexrelid
           OR (p.relid = i.indrelid AND p.command = 'REINDEX CONCURRENTLY')
           OR (p.relid IS NULL AND EXISTS (
               SELECT 1 FROM pg_locks l
               WHERE l.pid = p.pid AND l.locktype = 'relation'
                 AND l.database = p.datid AND l.relation = i.indrelid))))
"""

_INVALID_COLUMNS = """
n.nspname AS schema, c.relname AS name,
tn.nspname || '.' || t.relname AS table_name, pg_get_indexdef(i.indexrelid) AS definition
"""


def _invalid(rec: asyncpg.Record) -> InvalidIndex:
    return InvalidIndex(rec["schema"], rec["name"], rec["table_name"], rec["definition"])


class IndexCatalog:
    """Queries ``pg_index`` and friends; needs no history table."""

    async def invalid_indexes(
        self, conn: Conn, schemas: Sequence[str] | None = None
    ) -> list[InvalidIndex]:
        """INVALID indexes no build is creating now (see ``_LEFT_INVALID``), in
        ``schemas``, or (None) in every schema but the system ones, by name."""
        recs = await conn.fetch(
            f"""
SELECT {_INVALID_COLUMNS}
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE {_LEFT_INVALID}
  AND CASE WHEN $1::text[] IS NULL
      THEN n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
      ELSE n.nspname = ANY($1::text[]) END
ORDER BY n.nspname, c.relname
""",
            None if schemas is None else list(schemas),
        )
        return [_invalid(r) for r in recs]

    async def invalid_index_targets(
        self, conn: Conn, targets: Sequence[tuple[str, str, str | None]]
    ) -> list[tuple[int, InvalidIndex]]:
        """For each ``(kind, relation, name)`` (see :class:`asyncmig.indexes.IndexTarget`),
        the INVALID indexes it names, as ``(position in targets, index)``; relations are
        resolved with ``to_regclass`` (this session's search_path). ``create``: the index
        ``name`` in the table's schema (any index of the table when unnamed);
        ``reindex_index``: the index and its ``<name>_cc…`` copies; ``reindex_table``:
        the table's indexes."""
        if not targets:
            return []
        kinds, relations, names = (list(col) for col in zip(*targets, strict=True))
        recs = await conn.fetch(
            f"""
WITH given AS (
    SELECT g.pos, g.kind, g.name, to_regclass(g.rel) AS relid
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS g(kind, rel, name, pos)
), target AS (
    SELECT g.pos, g.kind,
        CASE WHEN g.kind = 'reindex_index' THEN ix.indrelid ELSE g.relid END AS tableid,
        CASE WHEN g.kind = 'reindex_index' THEN ixc.relname ELSE g.name END AS iname
    FROM given g
    LEFT JOIN pg_index ix ON g.kind = 'reindex_index' AND ix.indexrelid = g.relid
    LEFT JOIN pg_class ixc ON ixc.oid = ix.indexrelid
    WHERE g.relid IS NOT NULL
)
SELECT g.pos, {_INVALID_COLUMNS}
FROM target g
JOIN pg_index i ON i.indrelid = g.tableid
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE {_LEFT_INVALID}
  AND (g.iname IS NULL OR c.relname = g.iname
       OR (g.kind = 'reindex_index' AND left(c.relname, length(g.iname)) = g.iname
           AND substr(c.relname, length(g.iname) + 1) ~ '^_cc(new|old)[0-9]*$'))
ORDER BY g.pos, n.nspname, c.relname
""",
            kinds,
            relations,
            names,
        )
        return [(int(r["pos"]) - 1, _invalid(r)) for r in recs]

    async def drop_index_concurrently(self, conn: Conn, schema: str, name: str) -> None:
        """``DROP INDEX CONCURRENTLY IF EXISTS`` (outside any transaction block)."""
        await conn.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(name)}"
        )
