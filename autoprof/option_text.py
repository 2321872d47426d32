"""Option values written as text: ``AUTOPROF_*`` environment variables and Flask ``app.config``.

Numbers, durations (``"500ms"``, ``"1m"``), sizes (``"200MiB"``), booleans and ``"off"``, each
error naming the key it came from; and the :class:`ConfigError` every invalid setting raises.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from autoprof.secret import SECRET_OPTIONS, Secret

ENV_PREFIX = "AUTOPROF_"

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


def check(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def is_number(value: object) -> bool:
    """An int or float, not a bool, not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def number(text: str) -> float:
    """``float(text)``, as a :class:`ConfigError` that shows the text."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None


def parse_duration(text: str) -> float:
    """``"10"``, ``"10s"``, ``"500ms"``, ``"1m"``, ``"2h"`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"expected a duration like 10, 10s, 500ms or 1m, got {text!r}")
    return float(match[1]) * _DURATION_UNITS[(match[2] or "s").lower()]


def parse_size(text: str) -> int:
    """``"1048576"``, ``"200MB"``, ``"200MiB"``, ``"1g"`` -> bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"expected a size like 200MiB, 1GiB or a number of bytes, got {text!r}")
    unit = (match[2] or "b").lower()[0]
    return int(float(match[1]) * 1024 ** "bkmgt".index(unit))


def parse_options(
    mapping: Mapping[str, Any],
    types: Mapping[str, str],
    *,
    prefix: str,
    source: str,
    parse_rule: Callable[[str, str], Any],
) -> dict[str, Any]:
    """The options named by the ``prefix`` keys of ``mapping`` (option name -> type name in
    ``types``), parsed; a :class:`ConfigError` naming the key for an unknown key or a bad value.
    ``*_rule`` options are parsed by ``parse_rule(text, option name)``."""
    options: dict[str, Any] = {}
    for key, raw in mapping.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name not in types:
            known = {prefix + n.upper() for n in types}
            raise ConfigError(
                f"{key} in the {source} is not an autoprof setting{did_you_mean(key, known)}"
            )
        try:
            if isinstance(raw, str) and name.endswith("_rule"):
                options[name] = parse_rule(raw, name)
            else:
                options[name] = _parse_value(name, types[name], raw)
        except (ConfigError, ValueError) as exc:
            shown = "<hidden>" if name in SECRET_OPTIONS else repr(raw)
            raise ConfigError(f"{key}={shown} in the {source}: {exc}") from None
    return options


def _parse_value(name: str, type_name: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if name == "admin_authorize":
        raise ConfigError("a function cannot come from a string: pass admin_authorize= in code")
    if type_name == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ConfigError("expected true/false (1/0, yes/no, on/off)")
    if name == "max_bytes":
        return parse_size(raw)
    if name == "cpu_max":
        if raw.strip().lower() in (*_FALSE[1:], "none", ""):
            return None
        return number(raw.strip().removesuffix("%"))
    if name == "flight_recorder_budget":
        return number(raw.strip().removesuffix("%"))
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"expected a whole number, got {raw!r}") from None
    if type_name == "float":
        return parse_duration(raw)
    if name in SECRET_OPTIONS:
        return Secret(raw) if raw else None
    if name == "path_filter":
        return raw or None
    return raw


def check_names(options: Collection[str], known: Collection[str]) -> None:
    """Raise :class:`ConfigError` (with a did-you-mean) for a name not in ``known``."""
    for name in options:
        if name not in known:
            raise ConfigError(f"unknown autoprof option {name!r}{did_you_mean(name, known)}")


def did_you_mean(name: str, known: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the closest known name, else the list of known names."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
