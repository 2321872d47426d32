"""The admin route's framework-neutral request and response, and the headers every answer has.

Adapters translate their framework's request into an :class:`AdminRequest` and send the
:class:`AdminResponse` back; nothing here knows about ASGI, WSGI or Flask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

MAX_BODY = 16 * 1024
"""Largest POST body the admin route reads (a login or trigger form is tiny)."""
MAX_FIELDS = 20

PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""Admin pages: no script at all, inline styles and SVG, forms only to the admin itself."""
DUMP_HTML_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""A pyinstrument HTML profile: its inline script and styles run, in an opaque origin (no
``allow-same-origin``), so it can neither read nor act on the admin's or the app's origin, and
it loads nothing from anywhere (its web-font link is blocked)."""
DUMP_FILE_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
"""Any other dump file (text, JSON): nothing runs, nothing loads."""

BASE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
"""On every admin response, errors included."""

SECURITY_HEADER_NAMES = frozenset(
    name.lower() for name, _ in (*BASE_HEADERS, ("Content-Security-Policy", ""))
)

_SAFE_ROOT = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+=:@%-]*)*")
_DIGITS = re.compile(r"[0-9]+")


def admin_sub_path(prefix: str, path: str) -> str | None:
    """Whether a request is an admin request: the one test every adapter (the ASGI and WSGI
    middlewares, and through the WSGI one the Flask Blueprint) applies.

    ``path`` is the route path as the server hands it over: below the app's mount point
    (ASGI ``root_path``, WSGI ``SCRIPT_NAME``), percent-decoded, without the query. Leading
    slashes are merged into one first, as werkzeug's router and ``request.path`` (Flask,
    Quart) do, so ``//_autoprof/status`` is an admin request under every framework and never
    reaches the app's own routes or hooks; nothing else is normalised (no router resolves
    ``.`` segments, case or Unicode forms). Returns the part below ``prefix`` (``""`` or
    ``"/..."``), or None when the request is not an admin request.
    """
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    return rest if not rest or rest[0] == "/" else None


def security_headers(csp: str = PAGE_CSP) -> list[tuple[str, str]]:
    """The headers every admin response carries, with ``csp`` as its Content-Security-Policy."""
    return [*BASE_HEADERS, ("Content-Security-Policy", csp)]


HIDDEN = "***"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Headers whose values a repr of the request never shows (every cookie's value is hidden too)."""
SECRET_FIELDS = frozenset({"token"})
"""Form fields whose values a repr never shows (the login form's token)."""


class RedactedMapping(dict[str, str]):
    """A dict whose repr (and so str, f-strings and log lines) shows ``***`` for secret keys;
    the values themselves are unchanged."""

    __slots__ = ("_secret",)

    def __init__(self, items: Mapping[str, str], secret: frozenset[str] | None) -> None:
        super().__init__(items)
        self._secret = secret
        """Keys to hide; None: every key."""

    def __repr__(self) -> str:
        secret = self._secret
        shown = (
            f"{k!r}: {HIDDEN!r}" if secret is None or k in secret else f"{k!r}: {v!r}"
            for k, v in self.items()
        )
        return "{" + ", ".join(shown) + "}"

    __str__ = __repr__


@dataclass(frozen=True)
class AdminRequest:
    """One request to the admin route, as every adapter hands it over.

    ``admin_authorize`` functions receive this. ``native`` is the server's own object (the ASGI
    scope or the WSGI environ) for checks that need more; under Flask, ``flask.request`` and
    ``flask.session`` work too. Its repr, and that of ``headers``, ``cookies`` and ``form``,
    hides credentials (Authorization and Cookie headers, cookie values, the login form's
    token), so logging the request leaks none.
    """

    method: str
    """Upper case (``GET``, ``HEAD``, ``POST`` ...)."""
    path: str
    """The path below the admin prefix, percent-decoded: ``""``, ``"/"``, ``"/status"`` ..."""
    base: str = "/_autoprof"
    """URL path of the admin root as the browser sees it (mount point + prefix)."""
    query: Mapping[str, str] = field(default_factory=dict)
    """First value of each query parameter."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-case names; repeated headers joined with ``", "``."""
    cookies: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    """Fields of an ``application/x-www-form-urlencoded`` POST body."""
    client: str | None = None
    """The peer's address as the server reports it (a proxy's, behind one)."""
    secure: bool = False
    """Whether the request came over HTTPS (as the server saw it)."""
    native: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, secret in (("headers", SECRET_HEADERS), ("cookies", None),
                             ("form", SECRET_FIELDS)):
            object.__setattr__(self, name, RedactedMapping(getattr(self, name), secret))

    @classmethod
    def build(
        cls,
        *,
        method: str,
        path: str,
        base: str,
        query_string: str,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"",
        client: str | None = None,
        secure: bool = False,
        native: Any = None,
    ) -> AdminRequest:
        """Parse raw request parts (header values already decoded as latin-1)."""
        merged: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        form: dict[str, str] = {}
        content_type = merged.get("content-type", "").split(";", 1)[0].strip().lower()
        if body and content_type == "application/x-www-form-urlencoded":
            form = _pairs(body.decode("utf-8", "replace"))
        return cls(
            method=method.upper(),
            path=path,
            base=base,
            query=_pairs(query_string),
            headers=merged,
            cookies=parse_cookies(merged.get("cookie", "")),
            form=form,
            client=client,
            secure=secure,
            native=native,
        )

    def wants_json(self) -> bool:
        """``?format=json``, or an Accept header asking for JSON rather than HTML."""
        fmt = self.query.get("format")
        if fmt is not None:
            return fmt == "json"
        accept = self.headers.get("accept", "")
        return "application/json" in accept and "text/html" not in accept


@dataclass
class AdminResponse:
    """Status, headers and the whole body (admin answers are small, or a file read whole)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


def parse_digits(text: str | None, max_digits: int = 18) -> int | None:
    """The whole number ``text`` spells in ASCII digits (at most ``max_digits`` of them), else None.

    Request data goes through this, never ``str.isdigit`` + ``int``: those accept other
    scripts' digits (``"١٢"``) and superscripts (``"²"``, which ``int`` then rejects).
    """
    if text is None or not 0 < len(text) <= max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def parse_content_length(value: str | None) -> int | None:
    """A Content-Length header's value (surrounding blanks allowed), or None if it is invalid."""
    return parse_digits(value.strip(" \t") if value is not None else None)


class BodyReader:
    """Reads an admin POST body, at most :data:`MAX_BODY` bytes of it, for every adapter.

    Give it the declared Content-Length (None: not declared), then :meth:`add` chunks while
    :attr:`wanted` is not 0; :attr:`refused` is then 400 (an invalid Content-Length) or 413
    (too large; the rest is not read), else :attr:`body` holds the body."""

    __slots__ = ("_chunks", "_size", "refused", "wanted")

    def __init__(self, declared: str | None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self.refused: int | None = None
        #: Bytes still worth reading: the declared length, else one more than the limit.
        self.wanted = MAX_BODY + 1
        if declared is not None:
            length = parse_content_length(declared)
            if length is None:
                self.refused, self.wanted = 400, 0
            elif length > MAX_BODY:
                self.refused, self.wanted = 413, 0
            else:
                self.wanted = length

    def add(self, chunk: bytes, more: bool = True) -> None:
        """One more piece of the body; ``more``: whether the client sends more after it."""
        self._size += len(chunk)
        if self._size > MAX_BODY:
            self.refused, self.wanted = 413, 0
            self._chunks = []
            return
        self._chunks.append(chunk)
        self.wanted = max(0, self.wanted - len(chunk)) if more else 0

    @property
    def body(self) -> bytes:
        """What was read (empty if refused)."""
        return b"" if self.refused is not None else b"".join(self._chunks)


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b=2`` -> ``{"a": "1", "b": "2"}``; the first of repeated names wins."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def mount_base(root: str, prefix: str) -> str:
    """The admin's URL path: the app's mount point (ASGI root_path, WSGI SCRIPT_NAME) followed
    by the prefix; an odd mount point (one that could break a header or a link) is dropped."""
    root = root.rstrip("/")
    return root + prefix if _SAFE_ROOT.fullmatch(root) else prefix


def _pairs(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found
