"""``autoprof diff A B``: what grew in the heap between two captures, by type.

Each capture's heap report (``{id}_heap.json``) holds an object census taken when it opened:
the biggest types by bytes (``by_type``), every type when the report kept them (``types``).
A type missing from one side's list of biggest types counts as 0 there, so its growth is an
upper bound (marked ``<=``): that side held at most what its smallest listed type holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any

from autoprof.cli.base import EXIT_OK, NotFound, Source
from autoprof.cli.sources import find
from autoprof.cli.text import signed_size, size, table, when
from autoprof.sink.layout import IndexEntry


@dataclass(frozen=True)
class TypeDiff:
    type: str
    count_a: int | None
    """None: not among A's listed types."""
    count_b: int | None
    bytes_a: int | None
    bytes_b: int | None

    @property
    def count_diff(self) -> int:
        return (self.count_b or 0) - (self.count_a or 0)

    @property
    def bytes_diff(self) -> int:
        return (self.bytes_b or 0) - (self.bytes_a or 0)

    @property
    def partial(self) -> bool:
        return self.count_a is None or self.count_b is None


def census_of(source: Source, entry: IndexEntry) -> dict[str, Any]:
    """The census in a capture's heap report."""
    found = source.read(entry, f"{entry.id}_heap.json")
    if found is None:
        raise NotFound(f"capture {entry.id} has no heap report (heap_census was off, or it "
                       "was skipped)")
    try:
        census = json.loads(found[1]).get("census")
    except (ValueError, AttributeError):
        census = None
    if not isinstance(census, dict):
        raise NotFound(f"the heap report of capture {entry.id} holds no census")
    return census


def type_table(census: dict[str, Any]) -> dict[str, tuple[int, int]]:
    full = census.get("types")
    if isinstance(full, dict):
        return {str(name): (int(c), int(b)) for name, (c, b) in full.items()}
    return {
        str(row["type"]): (int(row["count"]), int(row["bytes"]))
        for row in census.get("by_type") or []
        if isinstance(row, dict) and "type" in row
    }


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[TypeDiff]:
    """Every type either census lists."""
    old, new = type_table(before), type_table(after)
    rows = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        rows.append(TypeDiff(name, a[0] if a else None, b[0] if b else None,
                             a[1] if a else None, b[1] if b else None))
    return rows


def diff(source: Source, ref_a: str, ref_b: str, out: IO[str], *, by: str, top: int,
         as_json: bool) -> int:
    """Types by growth in bytes (or count) from capture A to capture B."""
    entries = source.captures()
    a, b = find(source, ref_a, entries), find(source, ref_b, entries)
    before, after = census_of(source, a), census_of(source, b)
    rows = compare(before, after)
    def key(row: TypeDiff) -> int:
        return row.count_diff if by == "count" else row.bytes_diff

    rows.sort(key=lambda r: (key(r), r.type), reverse=True)
    totals: dict[str, tuple[Any, Any]] = {
        k: (before.get(k), after.get(k)) for k in ("objects", "bytes")
    }
    if as_json:
        json.dump({
            "a": a.id, "b": b.id, "totals": totals,
            "types": [{"type": r.type, "count_a": r.count_a, "count_b": r.count_b,
                       "count_diff": r.count_diff, "bytes_a": r.bytes_a, "bytes_b": r.bytes_b,
                       "bytes_diff": r.bytes_diff, "partial": r.partial} for r in rows],
        }, out, indent=1)
        out.write("\n")
        return EXIT_OK
    out.write(f"A  {a.host}/{a.id}  {when(a.created)} UTC\n")
    out.write(f"B  {b.host}/{b.id}  {when(b.created)} UTC\n")
    if a.created > b.created:
        out.write("note: A is newer than B; figures are B minus A\n")
    if (a.host, a.pid) != (b.host, b.pid):
        out.write("note: two different processes; their heaps may differ from the start\n")
    (obj_a, obj_b), (bytes_a, bytes_b) = totals["objects"], totals["bytes"]
    if all(isinstance(v, int) for v in (obj_a, obj_b, bytes_a, bytes_b)):
        out.write(
            f"heap: {obj_a:,} -> {obj_b:,} objects ({int(obj_b) - int(obj_a):+,}), "
            f"{size(int(bytes_a))} -> {size(int(bytes_b))} "
            f"({signed_size(int(bytes_b) - int(bytes_a))})\n"
        )
    grew = [r for r in rows if key(r) > 0][:top]
    if not grew:
        out.write(f"no type grew by {by} from A to B\n")
        return EXIT_OK
    out.write(f"grew most (by {by}):\n")

    def cell(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    table(
        ["TYPE", "COUNT A", "COUNT B", "+COUNT", "BYTES A", "BYTES B", "+BYTES"],
        [[r.type, cell(r.count_a), cell(r.count_b),
          ("<=" if r.partial else "") + f"{r.count_diff:+,}",
          "-" if r.bytes_a is None else size(r.bytes_a),
          "-" if r.bytes_b is None else size(r.bytes_b),
          ("<=" if r.partial else "") + signed_size(r.bytes_diff)] for r in grew],
        out, right=(1, 2, 3, 4, 5, 6),
    )
    if any(r.partial for r in grew):
        out.write("-: not among that capture's biggest types (its figure there is at most "
                  "the smallest listed)\n")
    return EXIT_OK
