"""Redaction of what the app's own data puts into dumps: the messages of exceptions.

An exception that escapes the app is kept with its message (``str(exc)``, cut to
:data:`MESSAGE_CHARS`), and messages carry data: SQL parameters, a connection URL with its
password, the value that failed validation. Before a message is kept it goes through the
``redact`` option, a function ``str -> str``; the default, :func:`redact_default`, masks the
shapes credentials and personal data usually take, and ``redact=keep`` (``AUTOPROF_REDACT=off``)
keeps messages as they are. A ``redact`` function that fails never lets the message through:
it is withheld.

Request paths reach dumps without their query strings (the adapters pass ASGI ``path``, WSGI
``PATH_INFO``, Flask ``request.path``), so no query parameter is ever written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoprof.option_text import ConfigError

if TYPE_CHECKING:
    from autoprof.errors import ErrorLog

Redactor = Callable[[str], str]
"""The type of the ``redact`` option."""

MESSAGE_CHARS = 500
"""Characters of a message kept, after redaction."""
REDACT_CHARS = 4000
"""Characters of a message given to ``redact`` (a longer message is cut first: bounded work on
the request's thread, and a secret cut in half at 500 characters is still whole when masked)."""
WITHHELD = "[message withheld: the redact function failed]"
MASK = "***"

_SECRET_KEY = (
    r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credential|session[_-]?id|cookie|authorization|signature)[\w.-]*"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # scheme://user:password@host (database and broker URLs in connection errors)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), rf"\g<1>{MASK}@"),
    # Authorization schemes
    (re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{MASK}"),
    # password=..., "api_key": "...", token: ..., X-Session-Id=...
    (re.compile(rf"(?i)(\b{_SECRET_KEY}[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;)}}\]]+)"),
     lambda m: m[1] + (m[2][0] + MASK + m[2][0] if m[2][0] in "\"'" else MASK)),
    # SQLAlchemy's "[parameters: (...)]" line: every bound value
    (re.compile(r"\[parameters: [^\n]*"), f"[parameters: {MASK}]"),
    # PostgreSQL's "Key (email)=(bob@example.com) already exists."
    (re.compile(r"(\bKey \([^)\n]*\)=\()[^\n]*?(\)(?: already exists| is not present|\.|$))"),
     rf"\g<1>{MASK}\2"),
    # e-mail addresses: the mailbox, not the domain
    (re.compile(r"(?<![\w.+-])[\w.+-]+@((?:[\w-]+\.)+[A-Za-z]{2,})\b"), rf"{MASK}@\1"),
    # 9 or more digits standing alone, with optional space or dash separators: card, account,
    # phone and national id numbers (digits inside a word, such as a hex id, are kept)
    (re.compile(r"(?<![\w.])\d(?:[ -]?\d){8,}(?![\w.])"),
     lambda m: re.sub(r"\d", "#", m[0])),
)


def redact_default(text: str) -> str:
    """Mask what usually carries credentials or personal data in an exception message.

    - the password of ``scheme://user:password@host`` URLs;
    - ``Bearer``/``Basic``/``Digest`` credentials;
    - the value after a key naming a secret (``password``, ``passwd``, ``pwd``, ``secret``,
      ``token``, ``api_key``, ``access_key``, ``private_key``, ``credential``,
      ``session_id``, ``cookie``, ``authorization``, ``signature``, also inside longer keys
      such as ``db_password`` or ``X-Api-Key``), in ``key=value``, ``key: value`` and JSON or
      Python-literal quoting;
    - SQLAlchemy's ``[parameters: ...]`` and PostgreSQL's ``Key (...)=(...)`` values;
    - the mailbox of e-mail addresses (the domain stays);
    - standalone runs of 9 or more digits (separators kept, digits shown as ``#``).

    Messages stay readable: the exception type, the SQL statement, names and short numbers
    are kept. For stricter needs pass your own function (it may call this one first).
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def keep(text: str) -> str:
    """Keep messages as they are (``redact=keep``): for apps whose messages carry no data."""
    return text


def redact_message(
    text: str, redact: Redactor | None = redact_default, errors: ErrorLog | None = None
) -> str:
    """``text`` as it may go into a dump: cut to :data:`REDACT_CHARS`, passed through
    ``redact`` (None: :func:`redact_default`), cut to :data:`MESSAGE_CHARS`. Never raises: if
    ``redact`` fails or returns something other than text, :data:`WITHHELD` is returned and
    the failure is counted in ``errors`` under ``"redact"``."""
    function = redact_default if redact is None else redact
    try:
        result = function(text[:REDACT_CHARS])
        if not isinstance(result, str):
            raise TypeError(f"redact returned {type(result).__name__}, not str")
    except Exception as exc:
        failure = type(exc).__name__
    else:
        return result[:MESSAGE_CHARS]
    if errors is not None:  # by type only, no traceback: the failure may quote the text
        errors.record("redact", RuntimeError(f"the redact function raised {failure}"))
    return WITHHELD


def redact_option(value: object) -> Redactor:
    """The ``redact`` option as a function: a function is kept; text (``AUTOPROF_REDACT``)
    may be ``default`` (:func:`redact_default`) or ``off`` / ``keep`` (:func:`keep`)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("", "default", "on", "true", "1", "yes"):
            return redact_default
        if word in ("off", "keep", "none", "false", "0", "no"):
            return keep
    elif callable(value):
        return value
    raise ConfigError(
        "redact must be a function taking an exception message and returning it redacted, "
        f"or 'default' / 'off' as text; got {value!r}"
    )
