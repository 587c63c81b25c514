# SQL outside history, lock and session: the read-only catalog queries of verify-rollbacks.
"""The catalog snapshot: everything a migration can leave behind, for before/after equality.

A :class:`CatalogSnapshot` maps each user object of a database to its properties, read
from the system catalogs. :func:`diff` compares two and says what differs in words
("leaves index `orders_created_idx` on public.orders"). ``verify-rollbacks`` and
:func:`asyncmig.testing.check_rollbacks` are built on it.

This module owns SQL: the catalog queries below. It reads and never writes, and it
builds no SQL from input (the only parameter, the bookkeeping oids, is a bound value).
It is the one place for catalog inspection, beside ``history``, ``lock`` and ``session``
that own the engine's SQL.

What is covered (objects of ``pg_catalog``, ``information_schema``, ``pg_toast`` and
extension members are left out; an extension shows as one object):

* schemas (owner, privileges);
* tables, partitioned and foreign tables, views and materialized views (definition),
  sequences (type, start, increment, bounds, cache, cycle), composite types — each with
  owner, privileges, persistence, options, partitioning, row level security (enabled,
  forced) and replica identity;
* columns (type, collation, default, nullability, identity, generated expression,
  column privileges);
* constraints of tables and domains (full definition, deferrability, validity);
* indexes (full definition, validity, clustering);
* functions, procedures and aggregates (signature, result, body hash from the full
  definition, language, security, settings, owner, privileges);
* triggers (definition, enabled state), rules, event triggers, extended statistics;
* policies (command, permissive, roles, USING and WITH CHECK expressions);
* types: enums (labels in order), domains, ranges, base types;
* extensions (version, schema); comments on any of the above; default privileges.

Not compared: data, sequence values, column order (a rollback that re-adds a column
puts it last, which no SQL can avoid), object oids, and cluster-wide objects (roles,
databases, tablespaces), which other sessions of a shared server change at any time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .connection import Conn
from .history import History

__all__ = ["CatalogSnapshot", "Difference", "diff", "take_snapshot"]

_USER_SCHEMA = "{n}.nspname !~ '^pg_' AND {n}.nspname <> 'information_schema'"


def _user(alias: str) -> str:
    return _USER_SCHEMA.format(n=alias)


def _not_extension_member(classid: str, objid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{classid}'::regclass "
        f"AND e.objid = {objid} AND e.deptype = 'e')"
    )


_Q = "quote_ident"
_REL = f"{_Q}(n.nspname) || '.' || {_Q}(c.relname)"
_ACL = "coalesce({}::text, 'default')"

# $1: oids of asyncmig's own relations (history tables and what hangs off them).
_QUERIES: dict[str, str] = {
    "schema": f"""
SELECT 'schema ' || {_Q}(n.nspname),
       jsonb_build_object('owner', pg_get_userbyid(n.nspowner),
                          'privileges', {_ACL.format("n.nspacl")})
FROM pg_namespace n
WHERE {_user("n")} AND {_not_extension_member("pg_namespace", "n.oid")}""",
    "relation": f"""
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
         WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
         WHEN 'f' THEN 'foreign table' ELSE 'composite type' END || ' ' || {_REL},
       jsonb_strip_nulls(jsonb_build_object(
         'owner', pg_get_userbyid(c.relowner),
         'privileges', {_ACL.format("c.relacl")},
         'persistence', CASE c.relpersistence WHEN 'u' THEN 'unlogged' ELSE NULL END,
         'options', c.reloptions::text,
         'row security', CASE WHEN c.relkind IN ('r', 'p') THEN
             CASE WHEN c.relforcerowsecurity THEN 'enabled and forced'
                  WHEN c.relrowsecurity THEN 'enabled' ELSE 'disabled' END END,
         'replica identity', CASE WHEN c.relkind IN ('r', 'p')
             AND c.relreplident <> 'd' THEN c.relreplident::text END,
         'partition key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
         'partition of', CASE WHEN c.relispartition THEN
             (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid)
             || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
         'inherits', (SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
             FROM pg_inherits i WHERE i.inhrelid = c.oid AND NOT c.relispartition),
         'definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
         'sequence', (SELECT format('%s start %s increment %s min %s max %s cache %s%s',
             s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
             CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
             FROM pg_sequence s WHERE s.seqrelid = c.oid),
         'owned by', (SELECT d.refobjid::regclass::text || '.' || a.attname
             FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid
               AND a.attnum = d.refobjsubid
             WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
               AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
       ))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND {_user("n")}
  AND NOT c.oid = ANY($1::oid[]) AND {_not_extension_member("pg_class", "c.oid")}""",
    "column": f"""
SELECT 'column ' || {_Q}(a.attname) || ' of ' || {_REL},
       jsonb_strip_nulls(jsonb_build_object(
         'type', format_type(a.atttypid, a.atttypmod),
         'collation', CASE WHEN a.attcollation <> t.typcollation THEN
             (SELECT co.collname FROM pg_collation co WHERE co.oid = a.attcollation) END,
         'not null', CASE WHEN a.attnotnull THEN 'yes' ELSE 'no' END,
         'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
         'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
         'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
         'privileges', a.attacl::text
       ))
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  AND {_user("n")} AND NOT c.oid = ANY($1::oid[])
  AND {_not_extension_member("pg_class", "c.oid")}""",
    "constraint": f"""
SELECT 'constraint ' || {_Q}(co.conname) || ' on ' || coalesce(
         (SELECT {_Q}(n.nspname) || '.' || {_Q}(c.relname) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = co.conrelid),
         'domain ' || co.contypid::regtype::text),
       jsonb_build_object('definition', pg_get_constraintdef(co.oid))
FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
WHERE {_user("n")} AND NOT co.conrelid = ANY($1::oid[])""",
    "index": f"""
SELECT 'index ' || {_Q}(ic.relname) || ' on ' || {_REL},
       jsonb_strip_nulls(jsonb_build_object(
         'definition', pg_get_indexdef(i.indexrelid),
         'valid', CASE WHEN i.indisvalid THEN 'yes' ELSE 'no (INVALID)' END,
         'clustered', CASE WHEN i.indisclustered THEN 'yes' END,
         'replica identity', CASE WHEN i.indisreplident THEN 'yes' END
       ))
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_user("n")} AND NOT c.oid = ANY($1::oid[])
  AND {_not_extension_member("pg_class", "c.oid")}""",
    "function": f"""
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
         ELSE 'function ' END
       || {_Q}(n.nspname) || '.' || {_Q}(p.proname)
       || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       jsonb_strip_nulls(jsonb_build_object(
         'result', pg_get_function_result(p.oid),
         'language', (SELECT l.lanname FROM pg_language l WHERE l.oid = p.prolang),
         'body', CASE WHEN p.prokind = 'a' THEN
             (SELECT md5(concat_ws(' ', g.aggtransfn, g.aggfinalfn, g.aggcombinefn,
                                   g.aggtranstype::regtype, g.agginitval))
              FROM pg_aggregate g WHERE g.aggfnoid = p.oid)
             ELSE 'md5 ' || md5(pg_get_functiondef(p.oid)) END,
         'security', CASE WHEN p.prosecdef THEN 'definer' ELSE 'invoker' END,
         'settings', p.proconfig::text,
         'owner', pg_get_userbyid(p.proowner),
         'privileges', {_ACL.format("p.proacl")}
       ))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_user("n")} AND {_not_extension_member("pg_proc", "p.oid")}
  AND NOT p.oid = ANY($1::oid[])""",
    "trigger": f"""
SELECT 'trigger ' || {_Q}(t.tgname) || ' on ' || {_REL},
       jsonb_build_object('definition', pg_get_triggerdef(t.oid),
         'enabled', CASE t.tgenabled WHEN 'O' THEN 'yes' WHEN 'D' THEN 'no'
                    WHEN 'R' THEN 'replica' ELSE 'always' END)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_user("n")} AND NOT c.oid = ANY($1::oid[])""",
    "rule": f"""
SELECT 'rule ' || {_Q}(r.rulename) || ' on ' || {_REL},
       jsonb_build_object('definition', pg_get_ruledef(r.oid))
FROM pg_rewrite r
JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND {_user("n")}""",
    "policy": f"""
SELECT 'policy ' || {_Q}(p.polname) || ' on ' || {_REL},
       jsonb_strip_nulls(jsonb_build_object(
         'command', CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                    WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
         'permissive', CASE WHEN p.polpermissive THEN 'yes' ELSE 'no (restrictive)' END,
         'roles', (SELECT string_agg(CASE WHEN r = 0 THEN 'public'
                                          ELSE pg_get_userbyid(r) END, ', ' ORDER BY 1)
                   FROM unnest(p.polroles) r),
         'using', pg_get_expr(p.polqual, p.polrelid),
         'with check', pg_get_expr(p.polwithcheck, p.polrelid)
       ))
FROM pg_policy p
JOIN pg_class c ON c.oid = p.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_user("n")}""",
    "type": f"""
SELECT CASE t.typtype WHEN 'e' THEN 'enum ' WHEN 'd' THEN 'domain ' WHEN 'r' THEN 'range '
         ELSE 'type ' END || {_Q}(n.nspname) || '.' || {_Q}(t.typname),
       jsonb_strip_nulls(jsonb_build_object(
         'labels', CASE WHEN t.typtype = 'e' THEN
             (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
              FROM pg_enum e WHERE e.enumtypid = t.oid) END,
         'base type', CASE WHEN t.typtype = 'd' THEN
             format_type(t.typbasetype, t.typtypmod) END,
         'not null', CASE WHEN t.typtype = 'd' AND t.typnotnull THEN 'yes' END,
         'default', t.typdefault,
         'subtype', CASE WHEN t.typtype = 'r' THEN
             (SELECT rg.rngsubtype::regtype::text FROM pg_range rg
              WHERE rg.rngtypid = t.oid) END,
         'owner', pg_get_userbyid(t.typowner),
         'privileges', {_ACL.format("t.typacl")}
       ))
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('b', 'd', 'e', 'r') AND t.typrelid = 0
  AND NOT (t.typtype = 'b' AND t.typcategory = 'A')
  AND {_user("n")} AND {_not_extension_member("pg_type", "t.oid")}""",
    "extension": """
SELECT 'extension ' || quote_ident(x.extname),
       jsonb_build_object('version', x.extversion,
                          'schema', x.extnamespace::regnamespace::text)
FROM pg_extension x WHERE x.extname <> 'plpgsql'""",
    "event trigger": """
SELECT 'event trigger ' || quote_ident(e.evtname),
       jsonb_build_object('event', e.evtevent, 'function', e.evtfoid::regproc::text,
                          'enabled', e.evtenabled::text,
                          'tags', coalesce(e.evttags::text, 'all'))
FROM pg_event_trigger e""",
    "statistics": f"""
SELECT 'statistics ' || {_Q}(n.nspname) || '.' || {_Q}(s.stxname),
       jsonb_build_object('definition', pg_get_statisticsobjdef(s.oid))
FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
WHERE {_user("n")}""",
    "default privileges": """
SELECT 'default privileges of ' || pg_get_userbyid(d.defaclrole)
       || coalesce(' in schema ' || quote_ident(n.nspname), '') || ' on '
       || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
            WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' ELSE 'schemas' END,
       jsonb_build_object('privileges', d.defaclacl::text)
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace""",
    "comment": """
SELECT 'comment on ' || o.type || ' ' || o.identity,
       jsonb_build_object('text', d.description)
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
WHERE d.objoid >= 16384
  AND coalesce(o.schema, '') !~ '^pg_' AND coalesce(o.schema, '') <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid
                  AND e.objid = d.objoid AND e.deptype = 'e')""",
}

# asyncmig's history tables, what hangs off them (indexes, sequences, toast), and its
# functions (the audit log's guard, the marker, the recorder). (pg_class and pg_proc
# oids come from one counter.)
_BOOKKEEPING = """
WITH t AS (SELECT c.oid FROM pg_class c WHERE c.oid IN
             (SELECT to_regclass(x) FROM unnest($1::text[]) x))
SELECT oid FROM t
UNION SELECT d.objid FROM pg_depend d, t
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
   AND d.refobjid = t.oid
UNION SELECT i.indexrelid FROM pg_index i, t WHERE i.indrelid = t.oid
UNION SELECT c.reltoastrelid FROM pg_class c, t WHERE c.oid = t.oid
UNION SELECT p.oid FROM pg_proc p
 WHERE p.oid IN (SELECT to_regprocedure(x) FROM unnest($2::text[]) x)
"""


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """Every user object of one database: ``objects[label] = {property: value}``.

    A label names the object as a reader would (``index `orders_created_idx` on
    public.orders`` is written ``index orders_created_idx on public.orders``).
    """

    objects: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.objects)

    def as_lines(self) -> dict[str, list[str]]:
        """Sorted text per kind of object (``{"index": ["index … {…}", …]}``)."""
        out: dict[str, list[str]] = {}
        for label, props in self.objects.items():
            kind = _kind_of(label)
            out.setdefault(kind, []).append(f"{label} {json.dumps(props, sort_keys=True)}")
        return {k: sorted(v) for k, v in sorted(out.items())}


@dataclass(frozen=True, slots=True)
class Difference:
    """One object that differs: ``left`` (there after, not before), ``missing`` (there
    before, not after) or ``changed`` (``changes`` lists ``(property, before, after)``)."""

    kind: str
    label: str
    changes: tuple[tuple[str, str | None, str | None], ...] = ()

    def describe(self) -> str:
        """The difference in words, as the object would read after "rollback of N …"."""
        if self.kind == "left":
            return f"leaves {_quoted(self.label)}"
        if self.kind == "missing":
            return f"removes {_quoted(self.label)}, which was there before"
        parts = [
            f"{prop} {_show(after)} (was {_show(before)})" for prop, before, after in self.changes
        ]
        return f"leaves {_quoted(self.label)} with " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object": self.label,
            "changes": [{"property": p, "before": b, "after": a} for p, b, a in self.changes],
            "text": self.describe(),
        }


async def take_snapshot(conn: Conn, *, history_schema: str | None = "public") -> CatalogSnapshot:
    """Read the catalog of ``conn``'s database. asyncmig's own history tables (in
    ``history_schema``; None keeps them) and what hangs off them are left out."""
    tables: list[str] = []
    functions: list[str] = []
    if history_schema is not None:
        h = History(history_schema)  # it names its own tables and functions
        tables, functions = h.own_relations, h.own_functions

    bookkeeping = [r[0] for r in await conn.fetch(_BOOKKEEPING, tables, functions)]
    objects: dict[str, dict[str, str]] = {}
    for query in _QUERIES.values():
        args = (bookkeeping,) if "$1" in query else ()
        for label, props in await conn.fetch(query, *args):
            value = json.loads(props) if isinstance(props, str) else dict(props)
            objects[label] = {k: str(v) for k, v in value.items()}
    return CatalogSnapshot(objects)


def diff(before: CatalogSnapshot, after: CatalogSnapshot) -> list[Difference]:
    """What ``after`` has that ``before`` has not, and the reverse, sorted by object."""
    out: list[Difference] = []
    for label in sorted(set(before.objects) | set(after.objects)):
        b, a = before.objects.get(label), after.objects.get(label)
        if b is None:
            out.append(Difference("left", label))
        elif a is None:
            out.append(Difference("missing", label))
        elif a != b:
            changes = tuple(
                (prop, b.get(prop), a.get(prop))
                for prop in sorted(set(a) | set(b))
                if a.get(prop) != b.get(prop)
            )
            out.append(Difference("changed", label, changes))
    return out


def _kind_of(label: str) -> str:
    for kind in (
        "materialized view",
        "partitioned table",
        "foreign table",
        "composite type",
        "event trigger",
        "default privileges",
        "comment",
    ):
        if label.startswith(kind):
            return kind
    return label.split(" ", 1)[0]


def _quoted(label: str) -> str:
    """``index orders_idx on public.orders`` → ``index `orders_idx` on public.orders``."""
    kind = _kind_of(label)
    rest = label[len(kind) + 1 :]
    if " on " in rest or " of " in rest:
        for sep in (" on ", " of "):
            if sep in rest:
                name, _, owner = rest.partition(sep)
                return f"{kind} `{name}`{sep}{owner}"
    return f"{kind} {rest}"


def _show(value: str | None) -> str:
    if value is None:
        return "(none)"
    return value if len(value) <= 200 else value[:197] + "…"
