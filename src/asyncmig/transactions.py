"""Transaction control in a migration file (DESIGN §4): the outer BEGIN/COMMIT a file
may carry is dropped; any other is an error, as is a statement that cannot run in a
transaction in a file without ``-- asyncmig: no-transaction``.

Transactions
    A first statement ``BEGIN``/``BEGIN WORK``/``BEGIN TRANSACTION``/``START
    TRANSACTION`` together with a last statement ``COMMIT``/``END`` (optionally ``WORK``
    or ``TRANSACTION``) is dropped, with a notice. An outer BEGIN with transaction modes
    (``ISOLATION LEVEL …``, ``READ ONLY``) is an error rather than silently dropped: the
    migration would run with different semantics than written. Any other transaction
    control is an error; ``SAVEPOINT``, ``RELEASE`` and ``ROLLBACK TO`` are fine in a
    transactional file and an error in a no-transaction one, where they would fail at
    run time ("can only be used in transaction blocks"). A no-transaction file wrapped
    in BEGIN/COMMIT contradicts itself and is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from .directives import Directives
from .errors import MissingDirectiveError, TransactionControlError
from .splitter import Statement

__all__ = ["apply_transaction_rules"]


_COMMENT = re.compile(r"--[^\n\r]*|/\*.*?\*/", re.S)  # "--" ends at CR or LF, as in psql
_PLAIN_BEGIN = {("BEGIN",), ("BEGIN", "WORK"), ("BEGIN", "TRANSACTION"), ("START", "TRANSACTION")}
_PLAIN_COMMIT = {
    (word, *rest) for word in ("COMMIT", "END") for rest in ((), ("WORK",), ("TRANSACTION",))
}
_SAVEPOINT_WORDS = ("SAVEPOINT", "RELEASE", "ROLLBACK")
_OWNS_TRANSACTION = (
    "asyncmig runs each migration in its own transaction and commits it together with its "
    "history row"
)


def _words(statement: Statement) -> tuple[str, ...]:
    return tuple(_COMMENT.sub(" ", statement.text).replace(";", " ").upper().split())


def _opens(statement: Statement) -> bool:
    return statement.transaction_control and _words(statement)[:1] in (("BEGIN",), ("START",))


def _closes(statement: Statement) -> bool:
    return statement.transaction_control and _words(statement)[:1] in (("COMMIT",), ("END",))


def _is_savepoint_command(statement: Statement) -> bool:
    words = _words(statement)
    if words[:1] in (("SAVEPOINT",), ("RELEASE",)):
        return True
    # ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
    return words[:1] == ("ROLLBACK",) and "TO" in words[1:3]


def _tc_error(statement: Statement, message: str, path: Path) -> TransactionControlError:
    return TransactionControlError(message, path=path, line=statement.line, column=statement.column)


def apply_transaction_rules(
    statements: list[Statement], directives: Directives, path: Path
) -> tuple[list[Statement], Statement | None, Statement | None]:
    """Drop an outer BEGIN/COMMIT and reject any other transaction control.

    Returns the remaining statements and the dropped BEGIN and COMMIT (or None).
    """
    begin = end = None
    body = statements
    if statements and _opens(statements[0]):
        first, last = statements[0], statements[-1]
        if len(statements) < 2 or not _closes(last):
            raise _tc_error(
                first,
                f"{first.keyword} at the start of the file has no matching COMMIT at its end; "
                f"{_OWNS_TRANSACTION} — remove the {first.keyword}",
                path,
            )
        if _words(first) not in _PLAIN_BEGIN:
            raise _tc_error(
                first,
                f"the outer `{' '.join(_words(first))}` sets transaction modes that asyncmig "
                f"would silently drop; {_OWNS_TRANSACTION} with the server's defaults — "
                "remove the BEGIN and COMMIT lines",
                path,
            )
        if _words(last) not in _PLAIN_COMMIT:
            raise _tc_error(
                last,
                f"`{' '.join(_words(last))}` cannot close the migration; {_OWNS_TRANSACTION}"
                " — remove it",
                path,
            )
        if not directives.transactional:
            raise _tc_error(
                first,
                "the file says `-- asyncmig: no-transaction` but wraps its statements in "
                f"{first.keyword} … {last.keyword}; a no-transaction migration runs each "
                "statement on its own in autocommit — remove the BEGIN and COMMIT lines, or "
                "the directive",
                path,
            )
        begin, end, body = first, last, statements[1:-1]

    transactional = directives.transactional
    for statement in body:  # one pass, cheap flag tests first: this runs for every statement
        if statement.transaction_control or statement.keyword.startswith(_SAVEPOINT_WORDS):
            _check_transaction_control(statement, body, begin, transactional, path)
        elif transactional and statement.no_transaction:
            preview = " ".join(statement.text.split())
            if len(preview) > 60:
                preview = preview[:59] + "…"
            raise MissingDirectiveError(
                f"{statement.keyword} cannot run inside a transaction block "
                f"(`{preview}`); add the line `-- asyncmig: no-transaction` at the top of "
                "the file (the migration then runs statement by statement, without a "
                "transaction)",
                path=path,
                line=statement.line,
                column=statement.column,
            )
    return body, begin, end


def _check_transaction_control(
    statement: Statement,
    body: list[Statement],
    begin: Statement | None,
    transactional: bool,
    path: Path,
) -> None:
    """Accept a savepoint command in a transactional file; reject everything else."""
    if _is_savepoint_command(statement):
        if not transactional:
            raise _tc_error(
                statement,
                f"{statement.keyword} needs a transaction, and this file is "
                "`-- asyncmig: no-transaction` (each statement runs in autocommit)",
                path,
            )
        return
    if not statement.transaction_control:
        return
    if statement is body[-1] and _closes(statement) and begin is None:
        detail = "it has no matching BEGIN at the start of the file"
    else:
        detail = "transaction control is not allowed inside a migration"
    raise _tc_error(
        statement,
        f"{statement.keyword}: {detail}; {_OWNS_TRANSACTION} — remove it "
        "(SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT are fine; an outer "
        "BEGIN … COMMIT around the whole file is dropped automatically)",
        path,
    )
