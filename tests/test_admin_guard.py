"""Admin settings, the guard (token, cookie, authorize, lockout) and the same-origin check."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from autoprof import AutoProf, Secret
from autoprof.admin import AdminRequest
from autoprof.admin.guard import SESSION_TTL, Guard, bearer_token, same_origin
from autoprof.config import ConfigError, Settings

TOKEN = "s3cret-token-0123456789"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_guard(clock: Clock | None = None, **kw: object) -> Guard:
    options: dict[str, object] = {"token": TOKEN, "authorize": None, "max_failures": 3,
                                  "lockout": 60.0}
    options.update(kw)
    clock = clock or Clock()
    return Guard(clock=clock, wall_clock=clock, **options)  # type: ignore[arg-type]


def req(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
        client: str = "10.0.0.1") -> AdminRequest:
    return AdminRequest(method="GET", path="/", headers=headers or {}, cookies=cookies or {},
                        client=client)


# -- settings -------------------------------------------------------------------------------

def test_admin_is_off_by_default_and_needs_a_guard_when_on():
    s = Settings()
    assert s.admin is False
    assert s.admin_prefix == "/_autoprof"
    assert s.admin_token is None
    # Not an error at construction (`flask init-db` needs no token): the controller reports it
    # when it starts serving (tests/test_side_effects.py), and the route lets nobody in.
    unguarded = Settings(admin=True).admin_unguarded
    assert unguarded is not None
    assert "admin_token" in unguarded
    assert "AUTOPROF_ADMIN_TOKEN" in unguarded
    assert "admin_authorize" in unguarded
    assert Settings(admin=True, admin_token=TOKEN).admin_unguarded is None
    assert Settings(admin=True, admin_token=TOKEN).admin
    assert Settings(admin=True, admin_authorize=lambda request: True).admin


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"admin_token": "short"}, "at least 16"),
        ({"admin_token": "with space in the token"}, "without spaces"),
        ({"admin_token": "tökén-non-ascii-0123"}, "printable ASCII"),
        ({"admin_prefix": "_autoprof"}, "admin_prefix must be a path"),
        ({"admin_prefix": "/_autoprof/"}, "no trailing"),
        ({"admin_prefix": "/"}, "admin_prefix"),
        ({"admin_prefix": "/a/../b"}, "admin_prefix"),
        ({"admin_prefix": "/a b"}, "admin_prefix"),
        ({"admin_prefix": "/a;b"}, "admin_prefix"),
        ({"admin_authorize": "yes"}, "admin_authorize must be a function"),
        ({"admin_max_failures": 0}, "admin_max_failures"),
        ({"admin_lockout": 0}, "admin_lockout"),
        ({"admin": "on"}, "admin must be True or False"),
    ],
)
def test_bad_admin_options(options, message):
    with pytest.raises(ConfigError, match=message):
        Settings.build(**options)


def test_the_token_is_never_shown():
    s = Settings(admin=True, admin_token=TOKEN)
    assert TOKEN not in repr(s)
    assert TOKEN not in str(AutoProf(settings=s).settings)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"AUTOPROF_ADMIN": "1", "AUTOPROF_ADMIN_TOKEN": "tooshort-secret"})
    assert "tooshort-secret" not in str(info.value)


def test_admin_options_from_the_environment():
    s = Settings.from_env(
        {
            "AUTOPROF_ADMIN": "true",
            "AUTOPROF_ADMIN_TOKEN": TOKEN,
            "AUTOPROF_ADMIN_PREFIX": "/ops/profiles",
            "AUTOPROF_ADMIN_MAX_FAILURES": "7",
            "AUTOPROF_ADMIN_LOCKOUT": "2m",
        }
    )
    assert (s.admin, s.admin_token, s.admin_prefix) == (True, Secret(TOKEN), "/ops/profiles")
    assert (s.admin_max_failures, s.admin_lockout) == (7, 120.0)
    assert Settings.from_env({"AUTOPROF_ADMIN_TOKEN": ""}).admin_token is None
    with pytest.raises(ConfigError, match="pass admin_authorize= in code"):
        Settings.from_env({"AUTOPROF_ADMIN_AUTHORIZE": "mymodule.check"})


# -- token ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer", ""),
        ("Bearer ", ""),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc", None),
    ],
)
def test_bearer_token_parsing(header, expected):
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    ("header", "via"),
    [
        (f"Bearer {TOKEN}", "bearer"),
        (f"Bearer {TOKEN}x", None),
        (f"Bearer {TOKEN[:-1]}", None),
        ("Bearer ", None),
        ("Bearer tökén-ñon-ascii-é", None),
        (f"Bearer {TOKEN}\u00e9", None),
        ("Bearer \udcff\udcfe", None),
        (f"Basic {TOKEN}", None),
    ],
)
def test_token_matrix(header, via):
    guard = make_guard()
    assert guard.check(req({"authorization": header})).via == via


def test_no_credentials_is_not_counted_as_a_failure():
    guard = make_guard()
    for _ in range(10):
        verdict = guard.check(req())
        assert not verdict.ok
        assert not verdict.presented
    assert guard.locked_for("10.0.0.1") == 0


def test_lockout_per_client_then_expiry():
    clock = Clock()
    guard = make_guard(clock)
    for _ in range(3):
        assert guard.attempt("10.0.0.1", "wrong").retry_after is None
    locked = guard.attempt("10.0.0.1", "wrong")
    assert not locked.ok
    assert locked.retry_after == pytest.approx(60.0)
    assert guard.attempt("10.0.0.2", "wrong").retry_after is None  # another client is not
    clock.now += 59
    assert guard.attempt("10.0.0.1", "wrong").retry_after == pytest.approx(1.0)
    clock.now += 1.5
    assert guard.attempt("10.0.0.1", "wrong").retry_after is None


def test_failures_spread_over_more_than_the_lockout_period_do_not_lock():
    clock = Clock()
    guard = make_guard(clock)
    for _ in range(6):
        assert guard.attempt("10.0.0.1", "wrong").retry_after is None
        clock.now += 31
    assert guard.attempt("10.0.0.1", TOKEN).ok


def test_success_resets_the_count():
    guard = make_guard()
    guard.attempt("c", "wrong")
    guard.attempt("c", "wrong")
    assert guard.attempt("c", TOKEN).ok
    guard.attempt("c", "wrong")
    guard.attempt("c", "wrong")
    assert guard.attempt("c", TOKEN).ok


def test_global_lockout_across_addresses():
    guard = make_guard(max_failures=2)  # global limit: 20 failures
    for i in range(20):
        guard.attempt(f"10.0.{i}.1", "wrong")
    verdict = guard.attempt("192.168.1.1", "wrong")
    assert verdict.retry_after is not None
    assert not verdict.ok
    assert guard.attempt("192.168.1.1", TOKEN).ok


def test_concurrent_wrong_guesses_cannot_overshoot_the_limit():
    guard = make_guard(max_failures=5, lockout=600)
    barrier = threading.Barrier(16)

    def guess(i: int) -> bool:
        barrier.wait()
        verdict = guard.attempt("10.9.9.9", f"wrong-{i}")
        return verdict.retry_after is None  # True: counted (401), not refused (429)

    with ThreadPoolExecutor(16) as pool:
        compared = list(pool.map(guess, range(64)))
    assert sum(compared) == 5
    assert guard.locked_for("10.9.9.9") > 0


def test_a_valid_cookie_and_the_right_token_still_work_during_a_lockout():
    guard = make_guard()
    cookie = guard.new_session()
    for _ in range(3):
        guard.attempt("10.0.0.1", "wrong")
    assert guard.check(req(cookies={"autoprof_admin": cookie})).via == "cookie"
    assert guard.check(req({"authorization": "Bearer wrong"})).retry_after is not None
    assert guard.check(req({"authorization": f"Bearer {TOKEN}"})).via == "bearer"


def test_address_table_stays_bounded(monkeypatch):
    monkeypatch.setattr("autoprof.admin.guard.MAX_TRACKED", 50)
    guard = make_guard(max_failures=1000)
    for i in range(500):
        guard.attempt(f"2001:db8::{i:x}", "wrong")
    assert len(guard._failures) <= 50


# -- session cookie ---------------------------------------------------------------------------

def test_session_cookie_holds_no_token_and_checks_out():
    clock = Clock(1_700_000_000.0)
    guard = make_guard(clock)
    cookie = guard.new_session()
    assert TOKEN not in cookie
    assert guard.valid_session(cookie)
    other = make_guard(clock, token="another-token-abcdefgh")
    assert not other.valid_session(cookie)  # changing the token ends every session
    assert make_guard(clock).valid_session(cookie)  # another worker with the same token
    stamp, mac = cookie.split(".")
    forged = f"{int(stamp) + 3600}.{mac}"
    assert not guard.valid_session(forged)
    assert not guard.valid_session(f"{stamp}.{'0' * 64}")
    assert not guard.valid_session("")
    assert not guard.valid_session("garbage")
    assert not guard.valid_session(f"{stamp}.é{mac[1:]}")
    clock.now += SESSION_TTL + 1
    assert not guard.valid_session(cookie)


def test_no_token_means_no_cookie_and_authorization_left_to_authorize():
    seen: list[str | None] = []

    def authorize(request: AdminRequest) -> bool:
        seen.append(request.headers.get("authorization"))
        return request.headers.get("authorization") == "Basic b3BzOm9wcw=="

    guard = make_guard(token=None, authorize=authorize)
    assert not guard.has_token
    assert guard.check(req({"authorization": "Basic b3BzOm9wcw=="})).via == "authorize"
    assert not guard.check(req({"authorization": f"Bearer {TOKEN}"})).ok
    assert seen == ["Basic b3BzOm9wcw==", f"Bearer {TOKEN}"]


def test_authorize_that_raises_denies_and_is_counted():
    from autoprof.errors import ErrorLog

    errors = ErrorLog()

    def authorize(request: AdminRequest) -> bool:
        raise RuntimeError("auth backend down")

    guard = make_guard(token=None, authorize=authorize, errors=errors)
    assert not guard.check(req()).ok
    assert errors.snapshot() == {"admin.authorize": 1}


@pytest.mark.parametrize("result", [1, "yes", None, [True]])
def test_authorize_must_return_true_itself(result):
    check: Callable[[AdminRequest], object] = lambda request: result  # noqa: E731
    guard = make_guard(token=None, authorize=check)
    assert not guard.check(req()).ok


def test_token_or_authorize_either_suffices():
    guard = make_guard(authorize=lambda request: request.client == "127.0.0.1")
    assert guard.check(req(client="127.0.0.1")).via == "authorize"
    assert guard.check(req({"authorization": f"Bearer {TOKEN}"}, client="10.1.1.1")).via == "bearer"
    assert not guard.check(req(client="10.1.1.1")).ok


# -- same origin ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"sec-fetch-site": "same-origin", "host": "a.example"}, True),
        ({"sec-fetch-site": "cross-site", "origin": "http://a.example", "host": "a.example"},
         False),
        ({"sec-fetch-site": "same-site", "host": "a.example"}, False),
        ({"sec-fetch-site": "none", "host": "a.example"}, False),
        ({"origin": "http://a.example:8000", "host": "a.example:8000"}, True),
        ({"origin": "https://A.example", "host": "a.example"}, True),
        ({"origin": "http://evil.example", "host": "a.example"}, False),
        ({"origin": "null", "host": "a.example"}, False),
        ({"host": "a.example"}, False),
        ({}, False),
    ],
)
def test_same_origin(headers, ok):
    assert same_origin(AdminRequest(method="POST", path="/trigger", headers=headers)) is ok


def test_a_bearer_header_still_asks_authorize_before_counting_a_failure():
    asked: list[str | None] = []

    def authorize(request: AdminRequest) -> bool:
        asked.append(request.headers.get("authorization"))
        return request.headers.get("authorization") == "Bearer app-jwt.payload.sig"

    guard = make_guard(authorize=authorize)  # max_failures=3
    app_jwt = req({"authorization": "Bearer app-jwt.payload.sig"})
    for _ in range(10):
        assert guard.check(app_jwt).via == "authorize"
    assert guard.locked_for("10.0.0.1") == 0  # not one failure counted
    assert guard.check(req({"authorization": f"Bearer {TOKEN}"})).via == "bearer"
    assert len(asked) == 10  # the right token did not need authorize
    for _ in range(3):  # a wrong header that authorize refuses too is a failure
        verdict = guard.check(req({"authorization": "Bearer forged"}))
        assert not verdict.ok
        assert verdict.presented
    assert guard.locked_for("10.0.0.1") > 0
    assert guard.check(app_jwt).via == "authorize"  # the lockout is the token's only


def test_a_flood_of_wrong_tokens_locks_out_no_token_holder():
    guard = make_guard(max_failures=5)  # the numbers: 50 wrong tokens, 10 addresses
    clients = [f"203.0.113.{i}" for i in range(10)]
    refused = 0
    for n in range(200):
        verdict = guard.check(req({"authorization": f"Bearer wrong-{n}"}, client=clients[n % 10]))
        assert not verdict.ok
        refused += verdict.retry_after is not None
    assert refused > 100  # the flood itself is refused
    assert guard.locked_for("198.51.100.1") > 0  # ... globally
    for client in [*clients, "198.51.100.1"]:  # the right token, from anywhere, gets in
        assert guard.check(req({"authorization": f"Bearer {TOKEN}"}, client=client)).ok
        assert guard.attempt(client, TOKEN).ok  # the login form too
