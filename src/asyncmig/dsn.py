"""Database URLs (DSNs), and the one owner of their password.

A DSN is a URL (``postgresql://user:secret@host:5432/db?sslmode=require``) or libpq's
key=value form (``host=h user=u password='se cret' dbname=db``). Its password may stand
in the URL's userinfo (URL-encoded), in its query (``?password=…``), or in a
``password=`` pair (plain or single-quoted with ``\\'`` escapes). Every place that shows,
logs or hands on a DSN goes through this module:

* :func:`parse` splits a DSN into the DSN without its password and the password;
* :func:`redact` shows a DSN with its password as ``***``;
* :func:`scrub` removes a DSN's password, in every form it may take, from any text
  (a driver's error message, a child process's output);
* :meth:`Dsn.child_env` hands the password to a child process (pg_dump, psql) in
  ``PGPASSWORD``, never on its command line, where ``ps`` would show it;
* :func:`with_database` is the same server's DSN for another database.

Nothing here talks to a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

__all__ = ["Dsn", "parse", "redact", "scrub", "with_database"]

MASK = "***"
# A ``password=`` pair of the key=value form: the value plain, or single-quoted with
# backslash escapes (libpq's rules), spaces allowed around ``=``.
_KV_VALUE = r"\s*=\s*('(?:[^'\\]|\\.)*'|\S*)"
_KV_PASSWORD = re.compile(r"(?i)(?<!\S)password" + _KV_VALUE)
_KV_DBNAME = re.compile(r"(?i)(?<!\S)dbname" + _KV_VALUE)
_SHORTEST_SECRET = 3  # "***" itself, or a 1-2 character password, is not scrubbed from text


@dataclass(frozen=True, slots=True)
class Dsn:
    """A DSN split into its password-free part and its password."""

    conninfo: str  # the DSN without any password: safe for argv and messages
    password: str | None = field(default=None, repr=False)
    # Every spelling of the password in the original text (raw, URL-decoded, quoted).
    spellings: tuple[str, ...] = field(default=(), repr=False)

    def child_env(self) -> dict[str, str]:
        """The environment that hands the password to a libpq client (``PGPASSWORD``)."""
        return {} if self.password is None else {"PGPASSWORD": self.password}


def parse(dsn: str) -> Dsn:
    """``dsn`` without its password, and the password (URL or key=value form)."""
    if _is_url(dsn):
        return _parse_url(dsn)
    password: str | None = None
    spellings: list[str] = []
    for found in _KV_PASSWORD.finditer(dsn):
        raw = found.group(1)
        password = _unquote_kv(raw)
        spellings += [raw, password]
    conninfo = " ".join(_KV_PASSWORD.sub("", dsn).split())
    return Dsn(conninfo, password, _distinct(spellings))


def redact(dsn: str) -> str:
    """The DSN with its password shown as ``***`` (every form, URL or key=value)."""
    if not _is_url(dsn):
        return _KV_PASSWORD.sub(f"password={MASK}", dsn)
    url = _Url.split(dsn)
    user, colon, _ = url.userinfo.partition(":")
    userinfo = f"{user}:{MASK}" if colon else url.userinfo
    query = [
        f"{item.partition('=')[0]}={MASK}" if _is_password_item(item) else item
        for item in url.query
    ]
    return url.join(userinfo=userinfo, query=query)


def scrub(text: str, dsn: str | None) -> str:
    """``text`` with ``dsn`` redacted and its password (in any spelling) replaced by ``***``."""
    if not dsn:
        return text
    text = text.replace(dsn, redact(dsn))
    for secret in sorted(parse(dsn).spellings, key=len, reverse=True):
        if len(secret) >= _SHORTEST_SECRET:
            text = text.replace(secret, MASK)
    return text


def with_database(dsn: str, database: str) -> str:
    """The same server's DSN (user, password, options) for ``database``."""
    if _is_url(dsn):
        return _Url.split(dsn).join(path="/" + quote(database, safe=""))
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    kept = _KV_DBNAME.sub("", dsn)
    return " ".join([*kept.split(), f"dbname='{escaped}'"])


# -- internals ---------------------------------------------------------------------------


def _is_url(dsn: str) -> bool:
    return "://" in dsn


def _is_password_item(item: str) -> bool:
    return unquote(item.partition("=")[0]).lower() == "password"


def _parse_url(dsn: str) -> Dsn:
    url = _Url.split(dsn)
    password: str | None = None
    spellings: list[str] = []
    user, colon, raw = url.userinfo.partition(":")
    if colon:
        password = unquote(raw)
        spellings += [raw, password]
    kept = []
    for item in url.query:
        if _is_password_item(item):
            raw = item.partition("=")[2]
            password = unquote(raw)
            spellings += [raw, password, unquote_plus(raw)]
        else:
            kept.append(item)
    return Dsn(url.join(userinfo=user, query=kept), password, _distinct(spellings))


@dataclass(frozen=True, slots=True)
class _Url:
    """A URL cut where libpq cuts it; unlike ``urllib.parse.urlsplit``, it never raises
    (a malformed DSN must still be shown without its password)."""

    scheme: str  # "postgresql://"
    userinfo: str
    hostinfo: str
    path: str
    query: tuple[str, ...]
    fragment: str

    @classmethod
    def split(cls, url: str) -> _Url:
        scheme, sep, rest = url.partition("://")
        ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
        netloc, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
        tail, _, fragment = tail.partition("#")
        path, _, query = tail.partition("?")
        userinfo, _, hostinfo = netloc.rpartition("@")
        items = tuple(item for item in query.split("&") if item)
        return cls(scheme + sep, userinfo, hostinfo, path, items, fragment)

    def join(self, **changes: Any) -> str:
        url = replace(self, **changes)
        query = "&".join(url.query)
        return "".join(
            (
                url.scheme,
                f"{url.userinfo}@" if url.userinfo else "",
                url.hostinfo,
                url.path,
                f"?{query}" if query else "",
                f"#{url.fragment}" if url.fragment else "",
            )
        )


def _unquote_kv(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _distinct(spellings: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in spellings if s))
