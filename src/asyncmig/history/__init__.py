"""The history asyncmig keeps in PostgreSQL, and every SQL statement that touches it.

Three tables in the configured schema (default ``public``):

``_migrations``
    One row per version (the seed's columns plus what recovery and audit need).
    ``status`` is ``completed`` / ``failed`` / ``rolled_back`` / ``running``;
    ``running`` only ever becomes visible for no-transaction migrations, whose progress
    (``statements_done``) is committed statement by statement.
``_migrations_log``
    Append-only audit: apply, fail, rollback, reclaim, resume, unlock. A trigger refuses
    UPDATE and DELETE.
``_migration_locks``
    The seed's single-row table: who holds the advisory lock, its backend pid, since
    when, the last heartbeat and what it is running now; plus ``layout_version``, the
    version of this layout, so later releases can upgrade it in place.

Identifiers are quoted with :func:`quote_ident`; every value travels as a parameter.

This package holds that SQL, one part a module, all of it behind :class:`History`:

- :mod:`.names`: the schema's table and function names, and whether the history exists;
- :mod:`.layout`: the DDL, the layout version, and creating or upgrading in place;
- :mod:`.records`: the rows: reading, staging a run's plan, recording each outcome,
  and the audit log;
- :mod:`.holder`: the lock holder's row (the lock itself is :mod:`asyncmig.lock`'s);
- :mod:`.catalog`: the INVALID indexes a failed concurrent build leaves.
"""

from __future__ import annotations

from ..models import HistoryRow, InvalidIndex
from ..session import quote_ident
from .catalog import IndexCatalog
from .holder import HolderRow
from .layout import LAYOUT_VERSION, MARK_SQLSTATE, Layout
from .names import HOSTNAME as HOSTNAME
from .records import Records, Staged

__all__ = [
    "LAYOUT_VERSION",
    "MARK_SQLSTATE",
    "History",
    "HistoryRow",
    "InvalidIndex",
    "Staged",
    "quote_ident",
]


class History(Layout, Records, HolderRow, IndexCatalog):
    """SQL for one schema's history tables. Holds names only, no connection."""
