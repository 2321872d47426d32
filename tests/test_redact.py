"""The ``redact`` option: exception messages are masked before they go into dumps (issue 12,
hardening)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from autoprof import AutoProf, AutoProfMiddleware, ConfigError, Settings
from autoprof.errors import ErrorLog
from autoprof.redact import (
    MESSAGE_CHARS,
    WITHHELD,
    keep,
    redact_default,
    redact_message,
)
from tests.conftest import only_capture, read_file

# (message, what must not survive, what must survive)
CASES = [
    ('could not connect to postgresql://app:hunter2pw@db.internal:5432/shop',
     "hunter2pw", "postgresql://app:***@db.internal:5432/shop"),
    ("(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
     '"users_email_key"\nDETAIL:  Key (email)=(bob.smith@example.com) already exists.',
     "bob.smith", 'unique constraint "users_email_key"'),
    ("[SQL: INSERT INTO users (name, password) VALUES (?, ?)]\n"
     "[parameters: ('bob', 's3cr3t-value')]", "s3cr3t-value",
     "INSERT INTO users (name, password) VALUES (?, ?)"),
    ("login failed: password=Tr0ub4dor&3 user=bob", "Tr0ub4dor", "user=bob"),
    ("bad payload {'api_key': 'AKIA0123456789ABCDEF', 'page': 2}", "AKIA0123456789",
     "'page': 2"),
    ('invalid JSON body {"access_token": "eyJhbGciOi.x.y", "n": 1}', "eyJhbGciOi", '"n": 1'),
    ("upstream refused Authorization: Bearer abcdef0123456789xyz", "abcdef0123456789xyz",
     "upstream refused"),
    ("card 4111 1111 1111 1111 declined for order 1234", "4111 1111", "order 1234"),
    ("no such account 123456789012", "123456789012", "no such account ############"),
    ("X-Api-Key: k-9f8e7d6c5b4a missing scope", "k-9f8e7d6c5b4a", "missing scope"),
    ("db_password='two words' rejected", "two words", "db_password='***' rejected"),
]


@pytest.mark.parametrize(("message", "secret", "kept"), CASES)
def test_the_default_masks_credentials_and_personal_data(
    message: str, secret: str, kept: str
) -> None:
    redacted = redact_default(message)
    assert secret not in redacted, redacted
    assert kept in redacted, redacted


def test_the_default_keeps_ordinary_messages_whole() -> None:
    for message in ("division by zero", "'NoneType' object has no attribute 'id'",
                    "card declined for order 42", "Expecting value: line 1 column 1 (char 0)",
                    "KeyError: 'missing'", "timeout after 30.5 s (request 7f3a9c21e5b84d60)"):
        assert redact_default(message) == message


def test_a_failing_redact_function_withholds_the_message_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = ErrorLog()

    def broken(text: str) -> str:
        raise ValueError(f"cannot redact {text}")

    def not_text(text: str) -> Any:
        return None

    with caplog.at_level(logging.WARNING, logger="autoprof"):
        assert redact_message("token=abc123xyz", broken, errors) == WITHHELD
        assert redact_message("token=abc123xyz", not_text, errors) == WITHHELD
    assert errors.snapshot() == {"redact": 2}
    assert "abc123xyz" not in caplog.text  # the failure's message quoted the text


def test_long_messages_are_cut_after_redaction() -> None:
    secret = "postgresql://app:" + "p" * 30 + "@db/x"
    message = "x" * (MESSAGE_CHARS - 20) + secret  # the password straddles the cut
    kept = redact_message(message)
    assert len(kept) <= MESSAGE_CHARS
    assert "ppppp" not in kept
    assert redact_message(message, keep) == message[:MESSAGE_CHARS]


def test_the_option_from_code_and_from_the_environment() -> None:
    def mine(text: str) -> str:
        return text.upper()

    assert Settings().redact is redact_default
    assert Settings.build(redact=mine).redact is mine
    assert Settings.from_env({"AUTOPROF_REDACT": "off"}).redact is keep
    assert Settings.from_env({"AUTOPROF_REDACT": "default"}).redact is redact_default
    with pytest.raises(ConfigError, match="redact must be a function"):
        Settings.build(redact=3)
    with pytest.raises(ConfigError, match="redact must be a function"):
        Settings.from_env({"AUTOPROF_REDACT": "lambda s: s"})


def _failing_app() -> Starlette:
    password, owner = "hunter" + "2pw", "bob." + "smith@example.com"

    async def connect(request: Any) -> Any:
        # built from variables: the traceback's source line must not hold the values itself
        raise ConnectionError(f"could not connect to postgresql://shop:{password}@db/shop "
                              f"as owner {owner}")

    return Starlette(routes=[Route("/connect", connect)])


@pytest.mark.parametrize("redact", [None, "custom"])
def test_exception_messages_in_a_capture_are_redacted(
    make_autoprof: Callable[..., AutoProf], redact: str | None
) -> None:
    def custom(text: str) -> str:
        return "custom:" + redact_default(text)

    options = {} if redact is None else {"redact": custom}
    ap = make_autoprof(requests=1, capture_timeout=5, **options)
    app = AutoProfMiddleware(_failing_app(), autoprof=ap)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.get("/connect")  # starts autoprof
            assert ap.trigger() is not None
            second = await client.get("/connect")
        return [first.status_code, second.status_code]

    assert asyncio.run(run()) == [500, 500]
    info, manifest = only_capture(ap)
    text = read_file(info, next(n for n in info.files if n.endswith("exceptions.txt")))
    for shown in (text, str(manifest["exceptions"])):
        assert "hunter2pw" not in shown
        assert "bob.smith" not in shown
        assert "postgresql://shop:***@db/shop" in shown
        assert ("custom:" in shown) == (redact == "custom")
