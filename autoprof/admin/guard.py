"""Who may use the admin route: a token (Bearer header or a login cookie) or an app callable.

The token is compared in constant time as SHA-256 digests of its UTF-8 bytes (so neither its
value nor its length leaks, and non-ASCII input cannot raise). The login cookie never holds
the token: it holds an expiry and an HMAC of it keyed by a hash of the token, so every worker
process accepts it and changing the token ends every session. Wrong tokens are counted per
client address and globally; past the limit, wrong tokens are refused (429) until the lockout
ends. The right token is never refused, so no flood of wrong ones locks its holders out (the
token's length, at least 16 characters, is what makes guessing it hopeless). Every configured
way in is tried before a wrong token counts as a failure.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from autoprof.admin.http import AdminRequest, parse_digits
from autoprof.errors import ErrorLog

logger = logging.getLogger("autoprof")

COOKIE_NAME = "autoprof_admin"
SESSION_TTL = 8 * 3600
"""Seconds a login lasts."""
GLOBAL_FACTOR = 10
"""All clients together may fail this many times ``max_failures`` per lockout period."""
MAX_TRACKED = 4096
"""Client addresses whose failures are remembered at most (stale ones are dropped first)."""

Via = Literal["bearer", "cookie", "authorize"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``via`` says how the request got in (None: it did not)."""

    via: Via | None = None
    retry_after: float | None = None
    """Set when wrong tokens from this client are locked out (the right one never is)."""
    presented: bool = False
    """Whether the request presented a token (a wrong one, when ``via`` is None)."""

    @property
    def ok(self) -> bool:
        return self.via is not None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


class Guard:
    """Checks admin requests against a token and/or an ``authorize(request) -> bool`` callable.

    Either suffices: a valid ``Authorization: Bearer`` token, a valid login cookie, or
    ``authorize`` returning True. With no token configured there is no login form and the
    Authorization header is left to ``authorize``.
    """

    def __init__(
        self,
        *,
        token: str | None,
        authorize: Callable[[AdminRequest], bool] | None,
        max_failures: int = 5,
        lockout: float = 300.0,
        errors: ErrorLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._token_digest = _digest(token) if token is not None else None
        self._session_key = (
            hashlib.sha256(b"autoprof-admin-session\0" + token.encode("utf-8")).digest()
            if token is not None
            else None
        )
        self._authorize = authorize
        self.max_failures = max_failures
        self.lockout = lockout
        self._errors = errors
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._global: deque[float] = deque(maxlen=max_failures * GLOBAL_FACTOR)
        self._global_locked_until = 0.0

    @property
    def has_token(self) -> bool:
        """Whether a token is configured (and so the login form is offered)."""
        return self._token_digest is not None

    # -- checks ---------------------------------------------------------------------------

    def check(self, request: AdminRequest) -> Verdict:
        """Let the request in by Bearer token, login cookie or ``authorize``, or say why not.

        Every configured way is tried before a wrong Bearer token counts as a failure: with
        ``authorize`` too, the header may carry the app's own credential (a JWT).
        """
        bearer = bearer_token(request.headers.get("authorization")) if self.has_token else None
        if bearer is not None and self._matches(bearer):
            return self._accept(request.client)
        if self.valid_session(request.cookies.get(COOKIE_NAME)):
            return Verdict("cookie")
        if self._authorize is not None and self._call_authorize(request):
            return Verdict("authorize")
        if bearer is None:
            return Verdict()
        return self._wrong(request.client)

    def attempt(self, client: str | None, presented: str) -> Verdict:
        """Check a presented token: the right one is always accepted; a wrong one is counted,
        or refused with ``retry_after`` while wrong attempts from ``client`` are locked out."""
        return self._accept(client) if self._matches(presented) else self._wrong(client)

    def _accept(self, client: str | None) -> Verdict:
        with self._lock:
            self._failures.pop(client or "-", None)
        return Verdict("bearer", presented=True)

    def _wrong(self, client: str | None) -> Verdict:
        key = client or "-"
        with self._lock:
            now = self._clock()
            wait = self._wait(key, now)
            if wait > 0:
                return Verdict(retry_after=wait, presented=True)
            self._fail(key, now)
        return Verdict(presented=True)

    def _matches(self, presented: str) -> bool:
        expected = self._token_digest
        return expected is not None and hmac.compare_digest(_digest(presented), expected)

    def locked_for(self, client: str | None) -> float:
        """Seconds until wrong tokens from ``client`` are counted again, not refused (0: now)."""
        with self._lock:
            return self._wait(client or "-", self._clock())

    def _call_authorize(self, request: AdminRequest) -> bool:
        assert self._authorize is not None
        try:
            return self._authorize(request) is True
        except Exception as exc:
            if self._errors is not None:
                self._errors.record("admin.authorize", exc)
            return False

    # -- failures and lockout (callers hold the lock) -------------------------------------

    def _wait(self, key: str, now: float) -> float:
        until = max(self._locked_until.get(key, 0.0), self._global_locked_until)
        return max(0.0, until - now)

    def _fail(self, key: str, now: float) -> None:
        window_start = now - self.lockout
        if key not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._forget_stale(window_start, now)
        recent = self._failures.setdefault(key, deque(maxlen=self.max_failures))
        recent.append(now)
        if len(recent) >= self.max_failures and recent[0] >= window_start:
            self._locked_until[key] = now + self.lockout
            recent.clear()
            logger.warning(
                "autoprof admin: %d wrong tokens from %s; its wrong tokens refused for %gs",
                self.max_failures, key, self.lockout,
            )
        self._global.append(now)
        limit = self._global.maxlen or 0
        if len(self._global) >= limit and self._global[0] >= window_start:
            self._global_locked_until = now + self.lockout
            self._global.clear()
            logger.warning(
                "autoprof admin: %d wrong tokens from all clients; wrong tokens refused for %gs",
                limit, self.lockout,
            )

    def _forget_stale(self, window_start: float, now: float) -> None:
        failures = self._failures
        for key in [k for k, times in failures.items() if not times or times[-1] < window_start]:
            del failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
        while len(self._failures) >= MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    # -- login cookie -----------------------------------------------------------------------

    def new_session(self) -> str:
        """A login cookie value: ``{expiry}.{hmac}``; needs a token."""
        expires = int(self._wall()) + SESSION_TTL
        return f"{expires}.{self._session_mac(expires)}"

    def valid_session(self, value: str | None) -> bool:
        """Whether a cookie value is one of ours and not expired."""
        if not value or self._session_key is None:
            return False
        stamp, sep, mac = value.partition(".")
        expires = parse_digits(stamp, 12)
        if not sep or expires is None or len(mac) != 64:
            return False
        now = self._wall()
        if not now < expires <= now + SESSION_TTL + 60:
            return False
        expected = self._session_mac(expires).encode()
        return hmac.compare_digest(mac.encode("ascii", "replace"), expected)

    def _session_mac(self, expires: int) -> str:
        assert self._session_key is not None
        message = f"session:{expires}".encode()
        return hmac.new(self._session_key, message, hashlib.sha256).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header ("" if empty), else None."""
    if header is None:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return rest.strip()


def same_origin(request: AdminRequest) -> bool:
    """Whether a browser says this request comes from the admin's own origin.

    ``Sec-Fetch-Site`` when the browser sends it, else ``Origin`` against ``Host``. A request
    with neither (not a modern browser's form post) is not same-origin.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() == "same-origin"
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if not origin or origin == "null" or not host:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return netloc.lower() == host.strip().lower()


def cross_site(request: AdminRequest) -> bool:
    """Whether a browser says this request comes from another site or origin (``Sec-Fetch-Site``
    other than same-origin or none, or an ``Origin`` naming another host). A request that
    says nothing (an older browser, a script) is not cross-site by this test."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    return not same_origin(request)
