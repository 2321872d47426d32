"""Censuses compared: what grew since the baseline census (a warm-up's or a capture's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CensusBaseline:
    """The census later ones are compared with, when it was taken and what took it."""

    census: dict[str, Any]
    at: float
    """``time.time()`` of the census."""
    label: str
    """``"warm-up"`` or ``"capture <id>"``."""


def _type_table(census: dict[str, Any]) -> dict[str, tuple[int, int]]:
    full = census.get("types")
    if isinstance(full, dict):
        return {name: (int(c), int(b)) for name, (c, b) in full.items()}
    return {row["type"]: (row["count"], row["bytes"]) for row in census.get("by_type", [])}


def compare_census(
    before: dict[str, Any], after: dict[str, Any], top: int = 20
) -> list[dict[str, Any]]:
    """The types whose objects take more bytes in ``after`` than in ``before``, most first.

    Each row: ``type``, ``count_diff``, ``bytes_diff``, ``count`` and ``bytes`` (in
    ``after``). Uses every type when both censuses have ``"types"``, else their top types.
    """
    old, new = _type_table(before), _type_table(after)
    rows: list[dict[str, Any]] = []
    for name, (count, size) in new.items():
        old_count, old_size = old.get(name, (0, 0))
        if size > old_size:
            rows.append({
                "type": name,
                "count_diff": count - old_count,
                "bytes_diff": size - old_size,
                "count": count,
                "bytes": size,
            })
    rows.sort(key=lambda r: (-r["bytes_diff"], -r["count_diff"], r["type"]))
    return rows[: max(top, 0)]


def grew_since(
    baseline: CensusBaseline | None, census: dict[str, Any] | None, top: int = 20
) -> dict[str, Any] | None:
    """What grew between the baseline census and ``census``, for heap.json and heap.txt."""
    if baseline is None or census is None:
        return None
    return {
        "baseline_at": baseline.at,
        "baseline": baseline.label,
        "types": compare_census(baseline.census, census, top),
    }
