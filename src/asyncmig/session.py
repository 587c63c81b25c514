"""Session and transaction control around the user's statements (DESIGN §4).

Every migration, rollback and seed file starts from the session as it was when the
connection opened, as if psql ran it on a connection of its own. Between files the run's
connection is put back with :data:`RESET`:

``SET SESSION AUTHORIZATION DEFAULT``
    undoes ``SET SESSION AUTHORIZATION`` and ``SET ROLE``;
``RESET ALL``
    every run-time setting back to its value at connection start (``SET``,
    ``set_config(…, false)``, ``search_path``; settings given in the DSN stay);
``CLOSE ALL`` / ``UNLISTEN *``
    cursors declared ``WITH HOLD``, notification channels;
``DISCARD TEMP`` / ``DISCARD SEQUENCES``
    temporary objects and cached sequence values.

Not ``DISCARD ALL``: it would also release the run's advisory lock, and deallocate the
driver's prepared statements (a file's own ``PREPARE`` therefore outlives it).

asyncmig's own history writes inside a migration's transaction run after
:data:`OWN_IDENTITY`, which puts the connecting user and a safe ``search_path`` back for
the rest of that transaction only, so a file's ``SET ROLE`` cannot make the history write
fail or resolve to the file's functions.

Also here, as the third of the three places that hold SQL text (with ``history`` and
``lock``): :func:`quote_ident`, the run's own backend pid, and the throwaway databases
``asyncmig.testing`` creates on an administrative session (templates, verify-rollbacks).
"""

from __future__ import annotations

__all__ = [
    "BACKEND_PID",
    "BEGIN",
    "COMMENT_ON_DATABASE",
    "COMMIT",
    "END_SESSION",
    "IS_TEMPLATE",
    "OWN_IDENTITY",
    "RESET",
    "ROLLBACK",
    "STALE_DATABASES",
    "UNLOCK_ALL",
    "create_database",
    "drop_database",
    "quote_ident",
    "set_template",
    "timeouts",
]

RESET = (
    "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;CLOSE ALL;UNLISTEN *;"
    "DISCARD TEMP;DISCARD SEQUENCES;"
)
BEGIN = "BEGIN;"
ROLLBACK = "ROLLBACK"
COMMIT = "COMMIT"
OWN_IDENTITY = "SET LOCAL SESSION AUTHORIZATION DEFAULT;SET LOCAL search_path = pg_catalog"

# End the run's own earlier session (its pid and start time, so never another's) when
# it may still be running a unit whose COMMIT lost its answer; true while it exists.
END_SESSION = (
    "SELECT pg_terminate_backend(pid) OR true FROM pg_stat_activity "
    "WHERE pid = $1 AND backend_start = $2"
)


BACKEND_PID = "SELECT pg_backend_pid()"
UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"  # every session-level advisory lock


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's ``quote_ident`` does (always quoting)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def timeouts(lock_timeout: float | None, statement_timeout: float | None, *, local: bool) -> str:
    """``SET [LOCAL] lock_timeout = …;`` for a file's directives (whole milliseconds,
    integers only), or ``""``. Cleared by :data:`RESET` before the next file."""
    scope = "SET LOCAL" if local else "SET"
    out = ""
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if value is not None:
            out += f"{scope} {name} = {round(value * 1000)};"
    return out


# -- throwaway databases (asyncmig.testing), on an administrative session ------------------

IS_TEMPLATE = "SELECT datistemplate FROM pg_database WHERE datname = $1"
# Names starting with $1 but not with $2 (a project's templates built from other files).
STALE_DATABASES = (
    "SELECT datname FROM pg_database WHERE starts_with(datname, $1) "
    "AND NOT starts_with(datname, $2) ORDER BY 1"
)
# Returns the statement that sets database $1's comment to $2 (both quoted by the server).
COMMENT_ON_DATABASE = "SELECT format('COMMENT ON DATABASE %I IS %L', $1::text, $2::text)"


def create_database(name: str, template: str | None = None) -> str:
    """``CREATE DATABASE``: a copy of ``template``, or (None) an empty UTF-8 database."""
    source = quote_ident(template) if template else "template0 ENCODING 'UTF8'"
    return f"CREATE DATABASE {quote_ident(name)} TEMPLATE {source}"


def drop_database(name: str) -> str:
    """Drop a database if it exists, ending its sessions (PostgreSQL 13+)."""
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"


def set_template(name: str, template: bool) -> str:
    """Mark a database as a template nobody connects to, or unmark it (to drop it)."""
    if template:
        return f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    return f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE false"
