"""Property tests: statements built from random fragments are recovered exactly.

Fragments are the tricky kinds (strings of every kind with ``;`` and quotes inside,
dollar quotes with tags, nested comments, parentheses holding ``;``, identifiers with
``$``, parameters), separated by spaces so no two fragments fuse into one token.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmig.splitter import split_statements

TEXT = st.lists(
    st.sampled_from([*"ab ;,()*/-$'\"\\\n\té東", "--", "/*", "*/", "$$"]), max_size=12
).map("".join)
IDENT = st.from_regex(r"[a-z_][a-z0-9_$]{0,6}", fullmatch=True).filter(
    lambda s: s.lower() not in ("begin", "case", "end", "e", "b", "x", "n", "u")
)


def _plain_string(body: str) -> str:
    return "'" + body.replace("'", "''") + "'"


def _escape_string(body: str) -> str:
    return "E'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dollar(tag: str, body: str) -> str:
    return f"${tag}${body}${tag}$"


def _block_comment(body: str) -> str:
    return "/* " + body.replace("*/", "* /").replace("/*", "/ *") + " */"


DOLLAR = st.tuples(st.from_regex(r"[a-z_]{0,4}", fullmatch=True), TEXT).filter(
    # the closing tag must first occur where it is put
    lambda tb: (tb[1] + f"${tb[0]}$").find(f"${tb[0]}$") == len(tb[1])
)

ATOM = st.one_of(
    IDENT,
    st.integers(0, 10**6).map(str),
    st.integers(1, 9).map(lambda i: f"${i}"),
    TEXT.map(_plain_string),
    TEXT.map(_escape_string),
    TEXT.map(lambda b: "U&" + _plain_string(b)),
    TEXT.map(lambda b: "N" + _plain_string(b)),
    st.from_regex(r"[01]{0,6}", fullmatch=True).map(lambda b: f"B'{b}'"),
    st.from_regex(r"[0-9a-f]{0,6}", fullmatch=True).map(lambda b: f"X'{b}'"),
    TEXT.map(lambda b: '"' + b.replace('"', '""') + '"'),
    DOLLAR.map(lambda tb: _dollar(*tb)),
    TEXT.map(_block_comment),
    TEXT.map(lambda b: f"/* outer {_block_comment(b)} ; */"),
    TEXT.map(lambda b: "-- " + b.replace("\n", " ").replace("\r", " ") + "\n"),
    st.sampled_from([",", "+", "::", "=", "->>", "a$b", "t.c", "*"]),
)
PAREN = st.lists(ATOM, max_size=5).map(lambda xs: "(" + " ".join(xs) + ")")
STATEMENT = st.lists(st.one_of(ATOM, PAREN), min_size=0, max_size=8).map(
    lambda xs: " ".join(["SELECT", *xs])
)
GAP = st.lists(
    st.sampled_from([" ", "\n", "\t", "\r\n", "-- gap; comment\n", "/* gap; /* n */ */", ";"]),
    max_size=4,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(STATEMENT, min_size=1, max_size=6))
def test_statements_are_recovered(statements: list[str]) -> None:
    text = "".join(s + ";\n" for s in statements)
    assert [s.text for s in split_statements(text)] == [s + ";" for s in statements]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STATEMENT, GAP), min_size=1, max_size=6), GAP)
def test_gaps_between_statements_do_not_change_the_split(
    pairs: list[tuple[str, str]], lead: str
) -> None:
    plain = "".join(s + ";\n" for s, _ in pairs)
    padded = lead + "".join(s + ";" + gap + "\n" for s, gap in pairs)
    assert [s.text for s in split_statements(padded)] == [s.text for s in split_statements(plain)]


@settings(max_examples=100, deadline=None)
@given(st.lists(STATEMENT, min_size=1, max_size=6))
def test_positions_point_at_the_text(statements: list[str]) -> None:
    text = "\n  ".join(s + ";" for s in statements)
    for st_ in split_statements(text):
        assert text[st_.offset : st_.offset + len(st_.text)] == st_.text
        before = text[: st_.offset]
        assert (st_.line, st_.column) == (
            before.count("\n") + 1,
            len(before) - before.rfind("\n"),
        )


NESTED = st.recursive(
    ATOM,
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "(" + ", ".join(xs) + ")"),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(NESTED, min_size=1, max_size=4), min_size=1, max_size=4))
def test_rows_nested_deeper_than_one_scanner_step_are_recovered(
    statements: list[list[str]],
) -> None:
    """Multi-row INSERTs whose rows nest parentheses to any depth (past what one match
    of the scanner's run regex takes) around any fragment are recovered exactly."""
    texts = ["INSERT INTO t VALUES " + ", ".join(f"({row})" for row in rows) for rows in statements]
    text = "".join(s + ";\n" for s in texts)
    assert [s.text for s in split_statements(text)] == [s + ";" for s in texts]
