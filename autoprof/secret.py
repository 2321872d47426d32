"""Credentials held so that no repr, log line or traceback shows them."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

SECRET_OPTIONS = frozenset({"admin_token"})
"""Options whose values are credentials."""


class Secret:
    """A credential (the admin token) whose ``repr`` and ``str`` hide it.

    autoprof wraps ``admin_token`` in one as soon as it receives it, so a traceback that shows
    local variables (pytest ``-l``, an error tracker's frame locals) shows ``Secret('…')``
    instead of the token. You may pass one yourself: ``admin_token=Secret(os.environ[...])``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value

    def reveal(self) -> str:
        """The credential itself (only the admin guard asks)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('…')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8", "surrogatepass"),
                                   other._value.encode("utf-8", "surrogatepass"))

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled: pass the token to each process")


def hide_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every credential (:data:`SECRET_OPTIONS`) given as text wrapped in
    a :class:`Secret`."""
    return {
        name: Secret(value) if name in SECRET_OPTIONS and isinstance(value, str) else value
        for name, value in options.items()
    }
