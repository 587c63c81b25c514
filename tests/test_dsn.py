"""DSN passwords: one module parses, redacts and scrubs them, and hands them to children."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import asyncmig
from asyncmig import dsn

from .migtree import write_tree

MARKER = "Sekret_Q_7731"


@pytest.mark.parametrize(
    ("text", "conninfo", "password"),
    [
        (
            "postgresql://u:s%40cret@h:5432/db?sslmode=require",
            "postgresql://u@h:5432/db?sslmode=require",
            "s@cret",
        ),
        (
            "postgresql://u@h/db?password=pw&application_name=x",
            "postgresql://u@h/db?application_name=x",
            "pw",
        ),
        ("postgresql://h/db", "postgresql://h/db", None),
        ("host=h user=u password=pw dbname=d", "host=h user=u dbname=d", "pw"),
        ("host=h password = 'a b\\'c' dbname=d", "host=h dbname=d", "a b'c"),
    ],
)
def test_parse_splits_off_the_password(text: str, conninfo: str, password: str | None) -> None:
    """parse() returns the DSN without its password, and the decoded password."""
    parsed = dsn.parse(text)
    assert (parsed.conninfo, parsed.password) == (conninfo, password)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw_x@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?sslmode=require&password=pw_x", "postgresql://u@h/db?sslmode=require&password=***"),
        ("postgresql://u@h/db?PASSWORD=pw_x", "postgresql://u@h/db?PASSWORD=***"),
        ("postgresql://u:a%2Fb@h/db?password=c%26d", "postgresql://u:***@h/db?password=***"),
        ("host=h password=pw_x dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)  # fmt: skip
def test_redact_hides_every_password_form(text: str, shown: str) -> None:
    """redact() masks the userinfo password, a ?password= query item and password= pairs."""
    assert dsn.redact(text) == shown


@pytest.mark.parametrize(
    ("text", "spellings"),
    [
        (f"postgresql://u:{MARKER}%2F1@h/db", (f"{MARKER}%2F1", f"{MARKER}/1")),
        (f"postgresql://u@h/db?password={MARKER}%26x", (f"{MARKER}%26x", f"{MARKER}&x")),
        (f"host=h password='{MARKER} 2'", (f"'{MARKER} 2'", f"{MARKER} 2")),
    ],
)
def test_scrub_removes_raw_and_decoded_password(text: str, spellings: tuple[str, ...]) -> None:
    """scrub() removes the DSN itself and each spelling of its password from any text."""
    message = " | ".join((text, *spellings, "rest"))
    scrubbed = dsn.scrub(message, text)
    assert MARKER not in scrubbed
    assert scrubbed.endswith("| rest")


def test_child_env_carries_the_password_and_conninfo_does_not() -> None:
    """A child process gets the password in PGPASSWORD only, never in its DSN argument."""
    parsed = dsn.parse(f"postgresql://u:{MARKER}@h/db")
    assert MARKER not in parsed.conninfo
    assert parsed.child_env() == {"PGPASSWORD": MARKER}
    assert dsn.parse("postgresql://u@h/db").child_env() == {}


def test_with_database_keeps_server_and_credentials() -> None:
    """with_database() swaps only the database, in both DSN forms."""
    assert dsn.with_database("postgresql://u:p@h:1/a?x=1", "b") == "postgresql://u:p@h:1/b?x=1"
    assert dsn.with_database("host=h dbname=a user=u", "b c") == "host=h user=u dbname='b c'"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_unreachable_error_never_contains_a_query_password(tmp_path: Path) -> None:
    """DatabaseUnreachableError for a URL with ?password= on a closed loopback port: neither
    its message nor its JSON form contains the password."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    url = f"postgresql://someone@127.0.0.1:{_closed_port()}/nowhere?password={MARKER}"
    with pytest.raises(asyncmig.DatabaseUnreachableError) as info:
        await asyncmig.migrate(url, sql_dir=tmp_path / "sql", connect_timeout=2)
    text = str(info.value) + json.dumps(info.value.to_dict())
    assert MARKER not in text and "password=***" in text


@pytest.mark.anyio
async def test_malformed_url_is_a_config_error_without_its_password(tmp_path: Path) -> None:
    """A URL urllib cannot split (an unclosed IPv6 bracket) with ?password= is a ConfigError
    whose message hides the password; it used to escape as a bare ValueError."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    url = f"postgresql://someone@[::1/nowhere?password={MARKER}"
    with pytest.raises(asyncmig.ConfigError) as info:
        await asyncmig.migrate(url, sql_dir=tmp_path / "sql", connect_timeout=2)
    assert MARKER not in str(info.value) and "password=***" in str(info.value)
