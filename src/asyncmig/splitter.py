"""Split a migration file into statements exactly where psql would.

:func:`split_statements` is a pure function over the file's text. It tracks the states
psql's lexer (``psqlscan.l``) tracks, and nothing more:

* ``--`` comments (to the end of the line, or of the file) and nested ``/* /* */ */``
  comments;
* quoted strings: ``'…'`` with ``''``; ``E'…'`` with backslash escapes (``E'it\\'s'``);
  ``U&'…'``, ``B'…'``, ``X'…'`` and ``N'…'``. The SQL rule that strings separated by
  whitespace with a newline are one string never applies in psql, which feeds its lexer
  one line at a time without the newline; so ``E'a'`` newline ``'b\\'`` is an escape
  string followed by a *plain* one, here as in psql;
* quoted identifiers ``"…"`` with ``""``, and ``U&"…"``;
* dollar quotes ``$$…$$`` and ``$tag$…$tag$`` (only the same tag closes; ``$1`` is a
  parameter; a ``$`` inside an identifier such as ``a$b`` opens nothing);
* parenthesis depth: a ``;`` inside parentheses (``CREATE RULE … DO ( …; … )``) does not
  end the statement;
* SQL-standard routine bodies: in ``CREATE [OR REPLACE] FUNCTION|PROCEDURE`` the pair
  ``BEGIN ATOMIC`` opens a body in which ``;`` does not split; ``CASE … END`` nests
  inside it and ``END`` closes it;
* ``COPY … FROM STDIN``: the lines after the statement, up to a line ``\\.``, are its
  data (:attr:`Statement.copy_data`), sent with the COPY, never split;
* ``standard_conforming_strings``: after ``SET [SESSION] standard_conforming_strings``
  ``= off`` (or ``TO off``, ``'off'``, ``false``, …) plain ``'…'`` strings are read with
  backslash escapes, as psql does once the server reports the change; ``= on``,
  ``DEFAULT``, ``RESET standard_conforming_strings`` and ``RESET ALL`` switch back.

Speed comes from looking at as few characters as possible in Python: for each
statement, a compiled "run" regular expression consumes in one match everything that
cannot change the scanner's state (ordinary characters, whole literals whose kind the
character before them settles, quoted identifiers, parenthesised groups nested up to
three deep), so a multi-row ``INSERT`` of a data dump is usually one match up to its
``;``. The state machine in :func:`_scan` then handles the one character the run stopped
at (``;``, a quote whose kind depends on the token before it, ``$``, a parenthesis the
run could not close, a comment, a backslash, or BEGIN/CASE/END in ``CREATE
FUNCTION|PROCEDURE``). Words are looked at only at the start of a statement and, in
``CREATE FUNCTION|PROCEDURE`` statements, to find ``BEGIN ATOMIC``/``CASE``/``END``.
Line numbers are counted incrementally, each character once, by ``str.count``.

Where asyncmig deliberately differs from psql
--------------------------------------------
* psql counts *every* word ``begin`` at parenthesis depth 0 in a ``CREATE FUNCTION``
  statement as the start of a body, so ``CREATE FUNCTION f(begin int) … RETURN begin;``
  swallows the following statements. asyncmig opens a body only at the keyword pair
  ``BEGIN ATOMIC``.
* psql ends COPY data at end of file; asyncmig requires the ``\\.`` line (a missing one
  is almost always a truncated file) and raises :class:`~asyncmig.errors.SplitError`.
* Text after ``COPY … FROM STDIN;`` on the same line (psql would run it after the data)
  is an error.
* An unclosed ``(`` at the end of the file is an error naming where it was opened (psql
  would send everything after it as one statement, which can only fail on the server,
  far from the mistake). A last statement without ``;`` is otherwise a statement.
* ``SET LOCAL standard_conforming_strings`` and ``set_config(…)`` are not followed (psql
  follows the server's reports); a server whose default is ``off`` is not supported.
* A backslash outside quotes is a psql meta-command and an error, except lines
  ``\\restrict …`` / ``\\unrestrict …`` between statements (written by recent pg_dump),
  which are skipped.
* Lines are counted at ``\\n`` (so CRLF is one line break); a lone ``\\r`` ends a ``--``
  comment, as in psql, but does not start a new line for line numbers. A leading
  U+FEFF (byte order mark) counts as whitespace. Line endings are never rewritten: a
  statement's text (and COPY data) keeps the file's CRLF, as psql sends it, so a
  literal spanning two lines holds ``\\r\\n``.

Errors are :class:`~asyncmig.errors.SplitError` with the file, and the line and column
of what is left open ("unterminated dollar quote $fn$ opened at 12:5").
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from dataclasses import dataclass

from .errors import SplitError

__all__ = ["Statement", "split_statements"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a file, as psql would send it.

    ``text`` runs from the first token through the terminating ``;`` (or the last token
    of a last statement without one); comments inside are kept. For ``COPY … FROM
    STDIN`` it is the COPY command only; the data lines are in ``copy_data``.
    ``line``/``column`` (1-based, in characters) and ``offset`` (0-based) locate its
    first token; ``end_line`` is the line of its last character.
    """

    text: str
    line: int
    column: int
    offset: int
    end_line: int
    transaction_control: bool = False
    no_transaction: bool = False
    copy_from_stdin: bool = False
    copy_data: str | None = None
    keyword: str = ""

    def position(self, server_position: int) -> tuple[int, int]:
        """Map PostgreSQL's 1-based character error position in ``text`` to (line, column)."""
        index = min(max(server_position, 1), len(self.text) + 1) - 1
        newlines = self.text.count("\n", 0, index)
        if newlines == 0:
            return self.line, self.column + index
        return self.line + newlines, index - self.text.rfind("\n", 0, index)


# ---------------------------------------------------------------------------- patterns

# Identifier characters as negated ASCII classes: "[^...]" compiles in a fraction of a
# millisecond, where the equivalent "\x80-\U0010ffff" range costs ~7 ms per pattern at
# import (on the start-up path of every replica).
_IDENT_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ and non-ASCII
_IDENT_CHAR = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9 and $
_TAG_CHAR = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # as _IDENT_CHAR, without $
_NOT_IDENT = r"[\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # the complement
_ASCII_IDENT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")

# The scanner alternates between two steps: a "run" regex consumes everything that cannot
# change its state, then the state machine in _scan looks at the one character the run
# stopped at. A run takes, in one match, ordinary characters, whole literals, whole
# quoted identifiers, and whole parenthesised groups (nested up to _GROUP_DEPTH) that
# hold nothing else: a multi-row INSERT is typically one match up to its ";". Each
# level is written "unrolled" (plain* (special plain*)*), which makes the regex engine
# loop once per literal instead of once per literal and once per gap.
#
# Strings: a literal is consumed only where its kind is certain from the characters just
# before its opening quote (a lookbehind); everywhere else the run stops at the quote and
# _scan decides with _token_starts_at. With standard_conforming_strings on, a "'" not
# preceded by E/e opens a plain string, and E/e preceded by a non-identifier character
# opens an escape string. With it off, a quote preceded by a non-identifier character
# other than "&" (U&'…' is plain) opens an escape string too. '' and "" doubling is
# consumed inside the literal.
_PLAIN_BODY = r"[^']*+(?:''[^']*+)*+'"
_ESC_BODY = r"[^'\\]*+(?:(?:\\.|'')[^'\\]*+)*+'"
_STRINGS_STD = rf"'(?<![Ee]'){_PLAIN_BODY}|'(?<={_NOT_IDENT}[Ee]'){_ESC_BODY}"
_STRINGS_EXT = (
    rf"'(?<=[\x00-\x23\x25\x27-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]'){_ESC_BODY}"
    rf"|'(?<={_NOT_IDENT}[Ee]'){_ESC_BODY}"
)
# Quoted identifiers, and "-" and "/" that start no comment.
_OTHERS = r"""|"[^"]*+"(?:"[^"]*+")*+|-(?!-)|/(?!\*)"""
_GROUP_DEPTH = 3


def _run_pattern(strings: str, words: bool) -> re.Pattern[str]:
    """The run regex for a string mode; with ``words``, stop at BEGIN/CASE/END too."""
    group = r"(?!)"  # the innermost level: no group
    inner = r"""[^'"$()\\\-/]*+"""  # ";" does not end a statement inside parentheses
    for _ in range(_GROUP_DEPTH):
        group = rf"\({inner}(?:(?:{strings}{_OTHERS}|{group}){inner})*+\)"
    if words:
        # Identifier characters are consumed a whole word at a time, so a keyword is
        # recognised only where no identifier character precedes it. The first class is
        # _NOT_IDENT without the characters a run stops at: ' " ( ) \ - / ;
        plain = (
            r"(?:[\x00-\x21\x23\x25\x26\x2a-\x2c\x2e\x3a\x3c-\x40\x5b\x5d\x5e\x60\x7b-\x7f]++"
            rf"|(?!(?<!{_IDENT_CHAR})(?i:begin|case|end)(?!{_IDENT_CHAR})){_TAG_CHAR}++)*+"
        )
    else:
        plain = r"""[^'"$()\\\-/;]*+"""
    return re.compile(rf"{plain}(?:(?:{strings}{_OTHERS}|{group}){plain})*+", re.DOTALL)


@functools.cache
def _run_regex(std_strings: bool, function: bool) -> re.Pattern[str]:
    """The run regex for one mode, compiled when first needed (~1 ms each)."""
    return _run_pattern(_STRINGS_STD if std_strings else _STRINGS_EXT, words=function)


_KEYWORD = re.compile(r"(?i:begin|case|end)")
_LINE_COMMENT = re.compile(r"--[^\n\r]*+")
_STD_STRING = re.compile(r"'[^']*+'")
_ESC_STRING = re.compile(r"'(?:[^'\\]++|\\.|'')*+'", re.DOTALL)
_DOLLAR_TAG = re.compile(rf"\$(?:{_IDENT_START}{_TAG_CHAR}*+)?\$")
_BLOCK_COMMENT_TOKEN = re.compile(r"/\*|\*/")
_SPACE = re.compile(r"(?:[ \t\n\r\f\v\ufeff]++|--[^\n\r]*+)*+")
_WORD = re.compile(rf"{_IDENT_START}{_IDENT_CHAR}*+")
# The first words of a statement in one match: word (space word (space word …)?)? space,
# where space is whitespace and -- comments (a /* */ comment ends the match).
_HEAD_WORDS = 6
_HEAD = re.compile(
    rf"({_WORD.pattern})"
    + rf"(?:{_SPACE.pattern}({_WORD.pattern})" * (_HEAD_WORDS - 1)
    + ")?" * (_HEAD_WORDS - 1)
    + _SPACE.pattern
)
_ATOMIC = re.compile(rf"(?i:atomic)(?!{_IDENT_CHAR})")
_META = re.compile(r"\\([A-Za-z_]+|[^\sA-Za-z_]?)")
_TOKEN = re.compile(
    rf"""{_IDENT_START}{_IDENT_CHAR}*+
    |[EeBbXxNn]?'(?:[^'\\]|\\.|'')*'|U&'[^']*'
    |"(?:[^"]|"")*"|U&"(?:[^"]|"")*"
    |\$(?:[A-Za-z_]\w*)?\$|[0-9]+|\S""",
    re.VERBOSE | re.DOTALL,
)
_HAS_CONCURRENTLY = re.compile(r"(?i)concurrently")

_TRANSACTION_CONTROL = frozenset(
    {
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "PREPARE TRANSACTION",
        "COMMIT PREPARED",
        "ROLLBACK PREPARED",
    }
)
_CREATE_MODIFIERS = frozenset(
    {
        "OR",
        "REPLACE",
        "UNIQUE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "TRUSTED",
        "PROCEDURAL",
        "DEFAULT",
        "RECURSIVE",
        "CONSTRAINT",
    }
)
_TWO_WORD_OBJECTS = frozenset({"MATERIALIZED", "FOREIGN", "EVENT", "USER", "ACCESS"})
_ALWAYS_NO_TRANSACTION = frozenset(
    {
        "VACUUM",
        "CREATE DATABASE",
        "DROP DATABASE",
        "CREATE TABLESPACE",
        "DROP TABLESPACE",
        "ALTER SYSTEM",
        "CREATE SUBSCRIPTION",
        "DROP SUBSCRIPTION",
    }
)
_SPACE_CHARS = frozenset(" \t\n\r\f\v\ufeff")


# ---------------------------------------------------------------------------- helpers


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - text.rfind("\n", 0, pos)


def _error(message: str, text: str, pos: int, path: str | os.PathLike[str] | None) -> SplitError:
    line, column = _line_col(text, pos)
    return SplitError(
        message, path=os.fspath(path) if path is not None else None, line=line, column=column
    )


def _opened_at(text: str, pos: int) -> str:
    line, column = _line_col(text, pos)
    return f"{line}:{column}"


def _is_ident_char(c: str) -> bool:
    return c in _ASCII_IDENT or c >= "\x80"


def _token_starts_at(text: str, lo: int, q: int) -> bool:
    """Does psql's lexer start a new token at ``q``? (``lo``: a known token boundary.)

    Only the run of identifier characters before ``q`` matters: an identifier absorbs
    letters, digits and ``$``; a number or a ``$1`` parameter does not absorb letters.
    """
    r = q
    while r > lo and _is_ident_char(text[r - 1]):
        r -= 1
    i = r
    while i < q:
        ch = text[i]
        if ch == "$":
            i += 1
            if i < q and text[i].isdigit():  # parameter $1
                while i < q and text[i].isdigit():
                    i += 1
            elif i < q and text[i] != "$":  # "$abc": psql keeps only "$", then an identifier
                return False
        elif "0" <= ch <= "9":
            while i < q and "0" <= text[i] <= "9":
                i += 1
        else:
            return False  # an identifier runs on through q
    return True


def _skip_block_comment(text: str, start: int, path: str | os.PathLike[str] | None) -> int:
    depth = 0
    pos = start + 2
    search = _BLOCK_COMMENT_TOKEN.search
    while True:
        m = search(text, pos)
        if m is None:
            raise _error(
                f"unterminated /* comment opened at {_opened_at(text, start)}", text, start, path
            )
        if m.group() == "/*":
            depth += 1
        elif depth == 0:
            return m.end()
        else:
            depth -= 1
        pos = m.end()


def _skip_space(text: str, pos: int, path: str | os.PathLike[str] | None) -> int:
    """Skip whitespace and comments of both kinds."""
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # always matches
        if text.startswith("/*", pos):
            pos = _skip_block_comment(text, pos, path)
        else:
            return pos


def _string_end(text: str, start: int, escapes: bool, path: str | os.PathLike[str] | None) -> int:
    """End of the quoted string whose opening quote is at ``start``."""
    m = (_ESC_STRING if escapes else _STD_STRING).match(text, start)
    if m is None:
        raise _error(
            f"unterminated quoted string opened at {_opened_at(text, start)}", text, start, path
        )
    return m.end()


def _head_words(text: str, pos: int, limit: int) -> list[str]:
    """The first ``limit`` (at most _HEAD_WORDS) words from ``pos`` (uppercased), stopping
    at a non-word."""
    words: list[str] = []
    while True:
        m = _HEAD.match(text, pos)  # the words up to a non-word or a /* comment
        if m is None:
            return words
        words += [w.upper() for w in m.groups() if w is not None]
        pos = m.end()
        if len(words) >= limit or not text.startswith("/*", pos):
            return words[:limit]
        try:
            pos = _skip_space(text, pos, None)
        except SplitError:
            return words


def _tokens(text: str) -> list[str]:
    """Tokens of a statement (words uppercased, comments dropped) for classification."""
    out: list[str] = []
    pos = 0
    n = len(text)
    while True:
        try:
            pos = _skip_space(text, pos, None)
        except SplitError:
            return out
        if pos >= n:
            return out
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - _TOKEN matches any non-space character
            return out
        tok = m.group()
        out.append(tok.upper() if _WORD.fullmatch(tok) else tok)
        pos = m.end()


def _keyword(words: list[str]) -> str:
    if not words:
        return ""
    first = words[0]
    rest = words[1:]
    if first in ("CREATE", "DROP", "ALTER"):
        if first == "CREATE":
            while rest and rest[0] in _CREATE_MODIFIERS:
                rest = rest[1:]
        if not rest:
            return first
        obj = rest[0]
        if obj in _TWO_WORD_OBJECTS and len(rest) > 1:
            if obj == "FOREIGN" and rest[1] == "DATA":
                return f"{first} FOREIGN DATA WRAPPER"
            return f"{first} {obj} {rest[1]}"
        if obj == "TEXT" and len(rest) > 2:
            return f"{first} TEXT SEARCH {rest[2]}"
        if obj == "OPERATOR" and len(rest) > 1 and rest[1] in ("CLASS", "FAMILY"):
            return f"{first} OPERATOR {rest[1]}"
        return f"{first} {obj}"
    if first == "START" and rest[:1] == ["TRANSACTION"]:
        return "START TRANSACTION"
    if first in ("COMMIT", "ROLLBACK") and rest[:1] == ["PREPARED"]:
        return f"{first} PREPARED"
    if first == "ROLLBACK" and "TO" in rest[:2]:
        return "ROLLBACK TO SAVEPOINT"
    if first == "PREPARE" and rest[:1] == ["TRANSACTION"]:
        return "PREPARE TRANSACTION"
    return first


def _no_transaction(keyword: str, words: list[str], text: str) -> bool:
    """Can this statement not run inside a transaction block?"""
    if keyword in _ALWAYS_NO_TRANSACTION:
        return True
    if keyword in ("CREATE INDEX", "DROP INDEX"):
        rest = words[words.index("INDEX") + 1 :] if "INDEX" in words else []
        return rest[:1] == ["CONCURRENTLY"]
    if keyword == "REINDEX":
        tokens = _tokens(text)
        target = [t for t in tokens[1:] if t[:1].isalpha()]
        return "CONCURRENTLY" in tokens or target[:1] in (["DATABASE"], ["SYSTEM"])
    if keyword == "DISCARD":
        return words[1:2] == ["ALL"]
    if keyword == "CLUSTER":
        tokens = [t for t in _tokens(text)[1:] if t not in (";", "VERBOSE")]
        if tokens[:1] == ["("]:
            tokens = tokens[tokens.index(")") + 1 :] if ")" in tokens else []
        return not tokens
    if keyword == "ALTER TABLE":
        if _HAS_CONCURRENTLY.search(text) is None:
            return False
        tokens = _tokens(text)
        return "DETACH" in tokens and "CONCURRENTLY" in tokens
    if keyword == "ALTER DATABASE":
        tokens = _tokens(text)
        return any(pair == ("SET", "TABLESPACE") for pair in itertools.pairwise(tokens))
    if keyword == "ALTER SUBSCRIPTION":
        tokens = _tokens(text)
        return "REFRESH" in tokens or "PUBLICATION" in tokens
    return False


def _copy_from_stdin(text: str) -> bool:
    depth = 0
    previous = ""
    for tok in _tokens(text):
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0 and previous == "FROM" and tok == "STDIN":
            return True
        previous = tok if depth == 0 else ""
    return False


def _parse_bool(value: str) -> bool | None:
    """PostgreSQL's parse_bool: unique prefixes of true/false/yes/no, on/off, 1/0."""
    v = value.strip().lower()
    if not v:
        return None
    if "true".startswith(v) or "yes".startswith(v) or v == "1":
        return True
    if "false".startswith(v) or "no".startswith(v) or v == "0":
        return False
    if len(v) >= 2 and "on".startswith(v) and v != "o":
        return True
    if len(v) >= 2 and "off".startswith(v):
        return False
    return None


def _standard_strings_after(keyword: str, text: str, current: bool) -> bool:
    """The value of standard_conforming_strings after a SET / RESET statement."""
    tokens = _tokens(text)
    if keyword == "RESET":
        if tokens[1:2] in (["STANDARD_CONFORMING_STRINGS"], ["ALL"]):
            return True
        return current
    rest = tokens[1:]
    if rest[:1] == ["SESSION"]:
        rest = rest[1:]
    if rest[:1] != ["STANDARD_CONFORMING_STRINGS"] or len(rest) < 3 or rest[1] not in ("=", "TO"):
        return current
    value = rest[2]
    if value == "DEFAULT":
        return True
    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        value = value[1:-1]
    parsed = _parse_bool(value)
    return current if parsed is None else parsed


# ---------------------------------------------------------------------------- splitting


def split_statements(text: str, *, path: str | os.PathLike[str] | None = None) -> list[Statement]:
    """Split ``text`` into statements exactly where psql would (see the module docstring).

    Raises :class:`~asyncmig.errors.SplitError` for an unterminated construct or a psql
    meta-command. A file of only whitespace and comments gives ``[]``.
    """
    statements: list[Statement] = []
    n = len(text)
    pos = 0
    std_strings = True
    line_no = 1
    line_pos = 0  # where line_no was counted up to
    line_start = 0  # where the line line_pos is on starts
    while True:
        pos = _skip_space(text, pos, path)
        if pos >= n:
            return statements
        first = text[pos]
        if first == ";":
            pos += 1
            continue
        if first == "\\":
            pos = _meta_command(text, pos, path)
            continue

        start = pos
        words = _head_words(text, start, _HEAD_WORDS)
        function = (
            len(words) >= 2
            and words[0] == "CREATE"
            and (
                words[1] in ("FUNCTION", "PROCEDURE")
                or (words[1:3] == ["OR", "REPLACE"] and words[3:4] in (["FUNCTION"], ["PROCEDURE"]))
            )
        )
        end, pos = _scan(text, start, std_strings, function, path)

        # Lines are counted incrementally: each character is looked at once, by str.count
        # (and str.rfind only where a line starts, so a one-line file is not quadratic).
        newlines = text.count("\n", line_pos, start)
        if newlines:
            line_no += newlines
            line_start = text.rfind("\n", line_pos, start) + 1
        column = start - line_start + 1
        newlines = text.count("\n", start, end - 1)
        end_line = line_no + newlines
        if newlines:
            line_start = text.rfind("\n", start, end - 1) + 1
        stmt_text = text[start:end]
        keyword = _keyword(words)
        copy = keyword == "COPY" and _copy_from_stdin(stmt_text)
        copy_data: str | None = None
        if copy:
            copy_data, pos = _copy_data(text, end, pos, start, path)
        statements.append(
            Statement(
                stmt_text,
                line_no,
                column,
                start,
                end_line,
                keyword in _TRANSACTION_CONTROL,
                _no_transaction(keyword, words, stmt_text),
                copy,
                copy_data,
                keyword,
            )
        )
        line_no, line_pos = end_line, end - 1
        if keyword in ("SET", "RESET"):
            std_strings = _standard_strings_after(keyword, stmt_text, std_strings)


def _meta_command(text: str, pos: int, path: str | os.PathLike[str] | None) -> int:
    """Skip a ``\\restrict``/``\\unrestrict`` line; any other meta-command is an error."""
    m = _META.match(text, pos)
    name = m.group(1) if m else ""
    if name in ("restrict", "unrestrict"):
        eol = text.find("\n", pos)
        return len(text) if eol < 0 else eol + 1
    line, _ = _line_col(text, pos)
    raise _error(
        f"psql meta-command \\{name} at line {line} is not supported in migrations; remove it",
        text,
        pos,
        path,
    )


def _scan(
    text: str,
    start: int,
    std_strings: bool,
    function: bool,
    path: str | os.PathLike[str] | None,
) -> tuple[int, int]:
    """Scan one statement from its first token: (end of its text, where to go on).

    Each turn, the run regex skips what cannot change the state; the character it stops
    at is then one of ``; ( ) ' " $ -- /* \\`` or, in a CREATE FUNCTION|PROCEDURE
    statement, the start of BEGIN/CASE/END.
    """
    run = _run_regex(std_strings, function).match
    n = len(text)
    opened: list[int] = []  # positions of "(" not yet closed
    comments: list[tuple[int, int]] = []
    atomic = 0
    atomic_at = -1
    lo = start  # a position where psql's lexer is known to start a token
    s = start
    while True:
        s = run(text, s).end()  # type: ignore[union-attr]  # always matches
        if s >= n:
            break
        c = text[s]
        if c == ";":
            s = lo = s + 1
            if not opened and not atomic:
                return s, s
        elif c == "(":  # a group the run could not take whole
            opened.append(s)
            s = lo = s + 1
        elif c == ")":
            if opened:
                opened.pop()
            s = lo = s + 1
        elif c == "'":  # a literal whose kind depends on the token before it (or unclosed)
            kind = ""
            if s > lo:
                before = text[s - 1]
                if before in "EeBbXxNn" and _token_starts_at(text, lo, s - 1):
                    kind = before.upper()
                elif (
                    before == "&"
                    and s - 2 >= lo
                    and text[s - 2] in "Uu"
                    and _token_starts_at(text, lo, s - 2)
                ):
                    kind = "U"
            escapes = kind == "E" or (not std_strings and kind in ("", "N"))
            s = lo = _string_end(text, s, escapes, path)
        elif c == '"':  # the run takes every closed one
            raise _error(
                f"unterminated quoted identifier opened at {_opened_at(text, s)}", text, s, path
            )
        elif c == "$":
            if s > lo and _is_ident_char(text[s - 1]) and not _token_starts_at(text, lo, s):
                s += 1  # inside a word: a$b
                continue
            dm = _DOLLAR_TAG.match(text, s)
            if dm is None:  # a parameter $1 or a lone $
                s += 1
                continue
            tag = dm.group()
            close = text.find(tag, dm.end())
            if close < 0:
                raise _error(
                    f"unterminated dollar quote {tag} opened at {_opened_at(text, s)}",
                    text,
                    s,
                    path,
                )
            s = lo = close + len(tag)
        elif c == "-":  # the run takes every "-" that starts no comment
            e = _LINE_COMMENT.match(text, s).end()  # type: ignore[union-attr]
            comments.append((s, e))
            s = lo = e
        elif c == "/":  # likewise "/*"
            e = _skip_block_comment(text, s, path)
            comments.append((s, e))
            s = lo = e
        elif c == "\\":
            m = _META.match(text, s)
            name = m.group(1) if m else ""
            line, _ = _line_col(text, s)
            raise _error(
                f"psql meta-command \\{name} at line {line} is not supported in migrations; "
                "remove it",
                text,
                s,
                path,
            )
        else:  # BEGIN / CASE / END in a CREATE FUNCTION|PROCEDURE statement
            e = _KEYWORD.match(text, s).end()  # type: ignore[union-attr]
            word = text[s:e].lower()
            if opened:
                s = lo = e
                continue
            if word == "begin":
                am = _ATOMIC.match(text, _skip_space(text, e, path))
                if am is not None:
                    if not atomic:
                        atomic_at = s
                    atomic += 1
                    e = am.end()
            elif word == "case":
                if atomic:
                    atomic += 1
            elif atomic:
                atomic -= 1
            s = lo = e

    if atomic:
        raise _error(
            f"unterminated BEGIN ATOMIC body opened at {_opened_at(text, atomic_at)}",
            text,
            atomic_at,
            path,
        )
    if opened:
        raise _error(
            f"unclosed parenthesis opened at {_opened_at(text, opened[-1])}"
            " (a ';' inside parentheses does not end a statement)",
            text,
            opened[-1],
            path,
        )
    # A last statement without ';': it ends with its last token.
    end = n
    while True:
        while end > start and text[end - 1] in _SPACE_CHARS:
            end -= 1
        if comments and comments[-1][1] == end:
            end = comments.pop()[0]
        else:
            return end, n


def _find_copy_end(text: str, data_start: int) -> tuple[int, int] | None:
    """Where the line ``\\.`` (optionally ``\\.\\r``) starts and the line after it begins.

    ``str.find`` over the data instead of a regex: inline COPY blocks can be tens of MB.
    """
    size = len(text)
    at = data_start if text.startswith("\\.", data_start) else text.find("\n\\.", data_start)
    while at >= 0:
        mark = at if at == data_start and text.startswith("\\.", at) else at + 1
        after = mark + 2
        if after < size and text[after] == "\r":
            after += 1
        if after == size:
            return mark, size
        if text[after] == "\n":
            return mark, after + 1
        at = text.find("\n\\.", mark)
    return None


def _copy_data(
    text: str, end: int, pos: int, start: int, path: str | os.PathLike[str] | None
) -> tuple[str, int]:
    """The data lines after ``COPY … FROM STDIN`` ending at ``end``: (data, where to go on)."""
    eol = text.find("\n", end)
    rest = text[end : len(text) if eol < 0 else eol]
    if _SPACE.fullmatch(rest) is None:
        raise _error(
            "text after COPY ... FROM STDIN on the same line is not supported "
            f"(COPY at {_opened_at(text, start)}); put it after the '\\.' line",
            text,
            end,
            path,
        )
    if end == pos and eol >= 0:  # terminated by ';'
        data_start = eol + 1
        found = _find_copy_end(text, data_start)
        if found is not None:
            return text[data_start : found[0]], found[1]
    raise _error(
        f"COPY FROM STDIN data not terminated by a line '\\.' (COPY at {_opened_at(text, start)})",
        text,
        start,
        path,
    )
