"""Rule strings (``AUTOPROF_MEM_RULE="3,25,80"``): which parts of a rule they change.

A string changes only the parts it names, on top of the metric's default rule, so
``AUTOPROF_LATENCY_RULE="min=500"`` keeps latency's ``diff=100``. Forms: positional
``min,diff,abs,cooldown`` (``"3,25,80"``, ``"10,25,70,5m"``; fewer parts change fewer), named
``part=value`` (``"min=500,cooldown=5m"``, ``"rise=300MiB"``), both mixed (positional first),
``part=-`` to unset a part (no such test, or for ``cooldown`` the global one), ``""`` for the
default itself, and ``"off"`` (and nothing else) to turn the rule off.

Each part takes the units written elsewhere: ``cooldown`` is a duration (``30``, ``30s``,
``5m``); ``diff`` a percentage (``25`` or ``25%``); ``min``, ``abs`` and ``rise`` the metric's
own unit, a bare number meaning that unit: percent for cpu/mem/rss_growth/error_rate, MiB for
rss (or a size: ``200MiB``, ``1GiB``), milliseconds for latency/loop_lag (or a duration:
``500ms``, ``2s``), a count for inflight/threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from autoprof.option_text import ConfigError, number, parse_duration, parse_size

POSITIONAL = ("min", "diff", "abs", "cooldown")
"""The parts a rule string may give by position, in order."""
PARTS = (*POSITIONAL, "rise")
FORMS = (
    "a rule is min,diff,abs,cooldown (e.g. 10,25,70,5m; fewer parts change fewer), "
    "named parts (e.g. min=10,cooldown=5m; part=- unsets one) or off"
)
_NOT_OFF = {
    "0": "write 'off' to turn the rule off, or 'min=0' for a floor of 0",
    "-": "'-' unsets one part (e.g. diff=-); write 'off' to turn the rule off",
}
_UNITLESS = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*$")


def _percent(raw: str) -> float:
    text = raw.strip()
    try:
        return number(text.removesuffix("%").strip())
    except ConfigError:
        raise ConfigError(f"expected a percentage like 25 or 25%, got {raw!r}") from None


def _mib(raw: str) -> float:
    if _UNITLESS.match(raw):
        return number(raw)
    try:
        return parse_size(raw) / 2**20
    except ConfigError:
        raise ConfigError(f"expected MiB like 200, or a size like 200MiB or 1GiB, got {raw!r}") \
            from None


def _ms(raw: str) -> float:
    if _UNITLESS.match(raw):
        return number(raw)
    try:
        return parse_duration(raw) * 1000
    except ConfigError:
        raise ConfigError(
            f"expected milliseconds like 500, or a duration like 500ms or 2s, got {raw!r}"
        ) from None


def _count(raw: str) -> float:
    try:
        return number(raw)
    except ConfigError:
        raise ConfigError(f"expected a number, got {raw!r}") from None


_LEVELS: dict[str, Callable[[str], float]] = {"%": _percent, "MiB": _mib, "ms": _ms, "": _count}


def level_parser(unit: str) -> Callable[[str], float]:
    """How ``min``, ``abs`` and ``rise`` are read for a metric whose unit is ``unit``
    (``"%"``, ``"MiB"``, ``"ms"`` or ``""`` for a count)."""
    return _LEVELS[unit.strip()]


def rule_changes(text: str, unit: str) -> dict[str, float | None] | None:
    """The parts ``text`` sets (a part set to ``None`` is unset), or None for ``"off"``.

    :class:`ConfigError` quoting ``text`` and saying what was expected otherwise."""
    stripped = text.strip()
    if stripped.lower() == "off":
        return None
    if not stripped:
        return {}
    hint = _NOT_OFF.get(stripped.lower())
    if hint is None and stripped.lower() in ("none", "false", "no", "disabled"):
        hint = "write 'off' to turn the rule off (only 'off' does)"
    if hint is not None:
        raise ConfigError(f"rule {text!r} is ambiguous: {hint}")
    level = level_parser(unit)
    parsers: dict[str, Callable[[str], float]] = {
        "min": level, "abs": level, "rise": level, "diff": _percent, "cooldown": parse_duration,
    }
    changes: dict[str, float | None] = {}
    named = False
    for position, part in enumerate(p.strip() for p in stripped.split(",")):
        name, sep, raw = part.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if not sep:
            if named:
                raise ConfigError(f"rule {text!r}: positional part {part!r} after a named one; "
                                  f"{FORMS}")
            if position >= len(POSITIONAL):
                raise ConfigError(f"rule {text!r} has too many parts; {FORMS}")
            name, raw = POSITIONAL[position], part
        else:
            named = True
            if name not in PARTS:
                raise ConfigError(f"rule {text!r}: unknown part {name!r}; parts are "
                                  f"{', '.join(PARTS)}; {FORMS}")
        if name in changes:
            raise ConfigError(f"rule {text!r} gives {name} twice")
        if not raw:
            raise ConfigError(f"rule {text!r}: part {name} is empty; write a value, or '-' to "
                              "unset it")
        if raw == "-" or raw.lower() == "none":
            if name == "min":
                raise ConfigError(f"rule {text!r}: min cannot be unset; give a floor (min=0)")
            changes[name] = None
            continue
        try:
            changes[name] = parsers[name](raw)
        except ConfigError as exc:
            raise ConfigError(f"rule {text!r}: {name}: {exc}") from None
    return changes
