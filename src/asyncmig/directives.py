"""The ``-- asyncmig:`` directives of a migration file (DESIGN §2), read and checked.

Directives
    ``-- asyncmig: <directive>`` comment lines before the first statement. Tolerant
    spelling: any case, optional spaces (``--asyncmig:no-transaction``,
    ``-- ASYNCMIG : No_Transaction``), ``_`` for ``-``, spaces around ``=``. One
    directive per line; each at most once per file. Timeouts use
    :func:`asyncmig.durations.parse_duration` with a unit required (``5000`` alone is
    ambiguous: PostgreSQL reads it as milliseconds); ``0`` is kept as ``0.0``, not
    ``None``, because ``SET LOCAL lock_timeout = 0`` deliberately disables a server
    default. A directive line after the first statement is an error, found in the gaps
    between statements; a ``-- asyncmig:`` line *inside* a statement (in a function
    body or a string) is statement text and left alone, and one inside a header
    ``/* … */`` comment is commented out. ``-- asyncmig`` followed by a
    directive name but no colon is reported, since a silently ignored
    ``lock-timeout`` would be worse; any other comment mentioning asyncmig is prose.

Line endings
    The text is the file's own (CRLF kept). A directive line ends at CR or LF, as a
    ``--`` comment does for psql, and "before the first statement" is judged by offset,
    so a file with lone-CR line endings (where line numbers, counted at LF, do not
    advance) is read like its LF twin.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .durations import parse_duration
from .errors import DirectiveError
from .splitter import Statement

__all__ = ["Directives", "line_col", "parse_directives"]


@dataclass(frozen=True, slots=True)
class Directives:
    """What a file's ``-- asyncmig:`` lines ask for. Timeouts are in seconds."""

    transactional: bool = True
    lock_timeout: float | None = None
    statement_timeout: float | None = None


# Searched as "--" + "asyncmig" anywhere, then checked to start its line: a literal-led
# pattern scans ~8x faster than a MULTILINE "^" one, and this runs on every file at startup.
_DIRECTIVE = re.compile(r"--[ \t]*asyncmig\b(?P<rest>[^\n\r]*)", re.I)
_NEAR_MISS = re.compile(r"[ \t]+(no|lock|statement)[-_ ]?(transaction|timeout)\b", re.I)
_VALUED = ("lock-timeout", "statement-timeout")
_KNOWN = ("no-transaction", *_VALUED)
_VALID_LIST = (
    "valid directives: `-- asyncmig: no-transaction`, `-- asyncmig: lock-timeout=<duration>`, "
    "`-- asyncmig: statement-timeout=<duration>` (durations like 500ms, 5s, 2min)"
)


def line_col(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def parse_directives(text: str, statements: Sequence[Statement], path: Path) -> Directives:
    """Read the ``-- asyncmig:`` lines before the first statement; reject later ones."""
    first_line = statements[0].line if statements else None
    header_end = statements[0].offset if statements else len(text)
    starts: list[int] | None = None
    values: dict[str, tuple[float | None, int]] = {}
    block_comments: list[tuple[int, int]] | None = None

    for match in _DIRECTIVE.finditer(text):
        dash = match.start()
        line_start = max(text.rfind("\n", 0, dash), text.rfind("\r", 0, dash)) + 1
        if text[line_start:dash].strip(" \t"):
            continue  # not a comment line: "--" after code, or inside a string
        rest = match["rest"]
        line, column = line_col(text, dash)
        if dash < header_end:
            if block_comments is None:
                block_comments = _block_comments(text, header_end)
            if any(start <= dash < end for start, end in block_comments):
                continue  # commented out: /* -- asyncmig: no-transaction */
        else:
            if starts is None:
                starts = [s.offset for s in statements]
            st = statements[bisect_right(starts, dash) - 1]
            if dash < st.offset + len(st.text):
                continue  # inside a statement: a comment in its text, or string content
            if rest.lstrip(" \t").startswith(":") or _NEAR_MISS.match(rest):
                raise DirectiveError(
                    f"directive after the first statement (line {first_line}); directives "
                    "must come before the first statement — move this line to the top of "
                    "the file",
                    path=path,
                    line=line,
                    column=column,
                )
            continue
        stripped = rest.lstrip(" \t")
        if not stripped.startswith(":"):
            near = _NEAR_MISS.match(rest)
            if near is not None:
                raise DirectiveError(
                    "directive without a colon; write it as `-- asyncmig: "
                    f"{near[0].strip().lower()}…`",
                    path=path,
                    line=line,
                    column=column,
                )
            continue  # prose such as "-- asyncmig runs this file in a transaction"
        body_offset = match.start("rest") + (len(rest) - len(stripped)) + 1
        body = stripped[1:]
        body_offset += len(body) - len(body.lstrip(" \t"))
        name, value = _read_directive(body.strip(), text, body_offset, path)
        if name in values:
            raise DirectiveError(
                f"{name} given twice (first on line {values[name][1]})",
                path=path,
                line=line,
                column=line_col(text, body_offset)[1],
            )
        values[name] = (value, line)

    def timeout(name: str) -> float | None:
        return values[name][0] if name in values else None

    return Directives(
        transactional="no-transaction" not in values,
        lock_timeout=timeout("lock-timeout"),
        statement_timeout=timeout("statement-timeout"),
    )


_HEADER_TOKEN = re.compile(r"--|/\*|\*/|[\n\r]")


def _block_comments(text: str, end: int) -> list[tuple[int, int]]:
    """Spans of ``/* … */`` comments (nested, as in PostgreSQL) in the header.

    The header (the text before the first statement, ending at ``end``) holds only
    whitespace and comments, so no string can hide a ``/*`` there; an unclosed one runs
    to its end.
    """
    if text.find("/*", 0, end) == -1:
        return []
    spans: list[tuple[int, int]] = []
    depth = start = 0
    in_line_comment = False
    for token in _HEADER_TOKEN.finditer(text, 0, end):
        kind = token[0]
        if in_line_comment:
            in_line_comment = kind not in ("\n", "\r")
        elif depth == 0:
            if kind == "--":
                in_line_comment = True
            elif kind == "/*":
                depth, start = 1, token.start()
        elif kind == "/*":
            depth += 1
        elif kind == "*/":
            depth -= 1
            if depth == 0:
                spans.append((start, token.end()))
    if depth:
        spans.append((start, end))
    return spans


def _read_directive(body: str, text: str, offset: int, path: Path) -> tuple[str, float | None]:
    line, column = line_col(text, offset)

    def fail(message: str, at: int = 0) -> DirectiveError:
        return DirectiveError(message, path=path, line=line, column=column + at)

    if not body:
        raise fail(f"empty directive; {_VALID_LIST}")
    raw_name, equals, raw_value = body.partition("=")
    name = raw_name.strip().lower().replace("_", "-")
    if " " in name or "\t" in name:
        head = name.split()[0]
        if head in _VALUED and not equals:
            raise fail(f"write `{head}=<duration>`, e.g. `-- asyncmig: {head}=5s`")
        if head in _KNOWN:
            raise fail(f"unexpected text after {head}; write one directive per line")
    if name not in _KNOWN:
        import difflib  # only for this error: kept off every run's start-up

        close = difflib.get_close_matches(name, _KNOWN, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise fail(f"unknown directive {raw_name.strip()!r}{hint}; {_VALID_LIST}")
    if name == "no-transaction":
        if equals:
            raise fail("no-transaction takes no value; write `-- asyncmig: no-transaction`")
        return name, None
    value_at = len(raw_name) + 1 + (len(raw_value) - len(raw_value.lstrip()))
    if not equals or not raw_value.strip():
        raise fail(f"{name} needs a duration, e.g. `-- asyncmig: {name}=5s`")
    try:
        seconds = parse_duration(raw_value, require_unit=True)
    except ValueError as exc:
        raise fail(f"{name}: {exc}", at=value_at) from None
    return name, seconds
