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
"""

from __future__ import annotations

__all__ = [
    "BEGIN",
    "COMMIT",
    "END_SESSION",
    "OWN_IDENTITY",
    "RESET",
    "ROLLBACK",
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


def timeouts(lock_timeout: float | None, statement_timeout: float | None, *, local: bool) -> str:
    """``SET [LOCAL] lock_timeout = …;`` for a file's directives (whole milliseconds,
    integers only), or ``""``. Cleared by :data:`RESET` before the next file."""
    scope = "SET LOCAL" if local else "SET"
    out = ""
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if value is not None:
            out += f"{scope} {name} = {round(value * 1000)};"
    return out
