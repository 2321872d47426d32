"""The capture's other evidence read into result types: heap growth by app line, types that
grew, the largest objects by what holds them, exceptions, the event-loop block, requests
and the rules that fired. Inputs are the loosely typed dicts of the manifest's parts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from autoprof.findings.classify import FOLDED, CodeClassifier
from autoprof.findings.model import (
    ITEMS_PER_SECTION,
    AllocationSite,
    ExceptionGroup,
    Holder,
    LargeObject,
    LoopBlock,
    RequestSummary,
    TypeGrowth,
)

_LOCAL = re.compile(r"local variable (['\"])(?P<name>.+?)\1 of ")
_GLOBAL = re.compile(r"global (?P<name>\S+) of module (?P<module>\S+)")
_VIA = re.compile(r" \((?P<via>inside .+)\)$")
#: A trailing comment (one without quotes, which could be inside a string instead).
_COMMENT = re.compile(r"\s+#[^'\"]*$")
#: At most this many of the census's largest objects are kept.
MAX_LARGEST = 10


class EvidenceReader:
    """Reads each kind of evidence, naming only the app's own code."""

    def __init__(self, classifier: CodeClassifier) -> None:
        self.classifier = classifier

    def allocations(self, growth: Mapping[str, Any]) -> list[AllocationSite]:
        """tracemalloc's growth by innermost app line, largest first."""
        sites: dict[tuple[str, int], list[Any]] = {}
        positive = 0
        for entry in as_list(growth.get("top")):
            entry = as_mapping(entry)
            size = entry.get("size_diff")
            if not isinstance(size, int) or size <= 0:
                continue
            positive += size
            # heap.py lists the traceback innermost first
            frame = next((as_mapping(f) for f in as_list(entry.get("traceback"))
                          if self.classifier.is_app(str(as_mapping(f).get("filename", "")))),
                         None)
            if frame is None:
                continue
            key = (str(frame.get("filename")), to_int(frame.get("lineno")))
            code = _COMMENT.sub("", str(frame.get("line") or ""))
            site = sites.setdefault(key, [0, 0, code])
            site[0] += size
            site[1] += to_int(entry.get("count_diff"))
        out = [
            AllocationSite(file=self.classifier.short(file), line=line, code=code,
                           size_diff=size, count_diff=count, share=size / (positive or 1))
            for (file, line), (size, count, code) in sites.items()
        ]
        return sorted(out, key=lambda a: -a.size_diff)[:ITEMS_PER_SECTION]

    def largest(self, census: Mapping[str, Any]) -> tuple[list[LargeObject], list[Holder]]:
        """The census's largest objects, and the same grouped by what holds them."""
        items = [as_mapping(i) for i in as_list(census.get("largest"))][:MAX_LARGEST]
        total = sum(to_int(i.get("bytes")) for i in items) or 1
        objects: list[LargeObject] = []
        holders: dict[tuple[str | None, ...], Holder] = {}
        for item in items:
            size, kind = to_int(item.get("bytes")), str(item.get("type", "?"))
            frame = item.get("frame")
            where = None
            if isinstance(frame, Mapping) and frame.get("filename"):
                function = f" {frame['function']}" if frame.get("function") else ""
                where = (f"{self.classifier.short(str(frame['filename']))}:"
                         f"{to_int(frame.get('lineno'))}{function}")
            held = item.get("held_by")
            objects.append(LargeObject(type=kind, bytes=size, held_by=str(held) if held else None,
                                       where=where, share=size / total))
            key, holder = self._holder(str(held or ""), frame)
            found = holders.setdefault(key, holder)
            found.count += 1
            found.bytes += size
            found.share += size / total
            found.types[kind] = found.types.get(kind, 0) + 1
        return objects, sorted(holders.values(), key=lambda h: -h.bytes)

    def _holder(self, held: str, frame: Any) -> tuple[tuple[str | None, ...], Holder]:
        """A holder (its count and bytes still zero) and the key objects share it by."""
        found = _VIA.search(held)
        via = found["via"] if found else ""
        base = held[: found.start()] if found else held
        holder = Holder(kind="other", name=base or None, function=None, where=None,
                        module=None, app_file=None, via=via, count=0, bytes=0, types={},
                        share=0.0)
        if isinstance(frame, Mapping) and frame.get("filename"):
            file = str(frame["filename"])
            local = _LOCAL.match(base)
            holder.kind, holder.name = "local", local["name"] if local else None
            holder.function = str(frame.get("function") or "?")
            holder.where = f"{self.classifier.short(file)}:{to_int(frame.get('lineno'))}"
            if self.classifier.is_app(file):
                holder.app_file = self.classifier.short(file)
            return ("local", file, holder.function, holder.name), holder
        if glob := _GLOBAL.match(base):
            holder.kind, holder.name, holder.module = "global", glob["name"], glob["module"]
            holder.app_file = self.classifier.app_module_file(glob["module"])
            return ("global", holder.module, holder.name), holder
        if not base or base.startswith("holder not found"):
            holder.kind = "unknown"
            return ("unknown",), holder
        return ("other", base), holder

    def exceptions(self, exceptions: Sequence[Mapping[str, Any]]) -> list[ExceptionGroup]:
        """The exceptions kept, by type and innermost app frame, most frequent first."""
        groups: dict[tuple[str, str | None, str | None], ExceptionGroup] = {}
        for raw in exceptions:
            entry = as_mapping(raw)
            frames = [as_mapping(f) for f in as_list(entry.get("frames"))]
            frame = next((f for f in reversed(frames)
                          if self.classifier.is_app(str(f.get("filename", "")))), None)
            where = function = None
            code = ""
            if frame is not None:
                where = self._where(frame)
                function = str(frame.get("function") or "") or None
                code = str(frame.get("line") or "")
            kind = str(entry.get("type") or "Exception")
            group = groups.get((kind, where, function))
            if group is None:
                group = groups[(kind, where, function)] = ExceptionGroup(
                    type=kind, message=str(entry.get("message") or ""), count=0,
                    function=function, where=where, code=code, requests=[], share=0.0,
                )
            group.count += 1
            request = f"{entry.get('method', '')} {entry.get('path', '')}".strip()
            if request and request not in group.requests and len(group.requests) < 3:
                group.requests.append(request)
        for group in groups.values():
            group.share = group.count / (len(exceptions) or 1)
        return sorted(groups.values(), key=lambda g: -g.count)

    def loop_block(self, block: Mapping[str, Any] | None) -> LoopBlock | None:
        """The innermost app frame of the blocked loop's stack and the call under it."""
        if not block:
            return None
        is_app = self.classifier.is_app
        stack = [as_mapping(f) for f in as_list(block.get("stack"))]  # outermost first
        index = next((i for i in range(len(stack) - 1, -1, -1)
                      if is_app(str(stack[i].get("filename", "")))), None)
        function = where = blocking = None
        code = ""
        while index and str(stack[index].get("function")) in FOLDED and is_app(
            str(stack[index - 1].get("filename", ""))
        ):
            index -= 1  # a generator expression runs as part of its caller
        if index is not None:
            frame = stack[index]
            function = str(frame.get("function") or "?")
            where = self._where(frame)
            code = str(frame.get("line") or "")
            below = [f for f in stack[index + 1 :] if not is_app(str(f.get("filename", "")))]
            if below:  # a Python-level library call under the app frame
                callee, inner = below[0], below[-1]
                blocking = f"{callee.get('function')} ({self._where(callee)})"
                if inner is not callee:
                    blocking += f" ... {inner.get('function')} ({self._where(inner)})"
            elif code:
                blocking = code
        elif stack:
            blocking = f"{stack[-1].get('function')} ({self._where(stack[-1])})"
        task = as_mapping(block.get("task"))
        duration = block.get("duration")
        return LoopBlock(
            duration=float(duration) if isinstance(duration, (int, float)) else 0.0,
            ongoing=bool(block.get("ongoing")),
            function=function, where=where, code=code, blocking_call=blocking,
            task=str(task.get("coro") or task.get("name")) if task else None,
        )

    def _where(self, frame: Mapping[str, Any]) -> str:
        return f"{self.classifier.short(str(frame.get('filename')))}:{to_int(frame.get('lineno'))}"


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, its ``as_dict()`` if it has one, else ``{}``."""
    if isinstance(value, Mapping):
        return value
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        try:
            found = as_dict()
        except Exception:
            return {}
        return found if isinstance(found, Mapping) else {}
    return {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def types_grown(grew_since: Mapping[str, Any]) -> list[TypeGrowth]:
    """The types that grew most since the census baseline."""
    rows = [as_mapping(t) for t in as_list(grew_since.get("types"))]
    rows = [t for t in rows if to_int(t.get("bytes_diff")) > 0 or to_int(t.get("count_diff")) > 0]
    rows.sort(key=lambda t: (-to_int(t.get("bytes_diff")), -to_int(t.get("count_diff"))))
    total = sum(max(to_int(t.get("bytes_diff")), 0) for t in rows) or 1
    return [
        TypeGrowth(type=str(t.get("type", "?")), count_diff=to_int(t.get("count_diff")),
                   bytes_diff=to_int(t.get("bytes_diff")),
                   share=max(to_int(t.get("bytes_diff")), 0) / total)
        for t in rows[:ITEMS_PER_SECTION]
    ]


def request_summary(record: Any) -> RequestSummary:
    r = record if isinstance(record, Mapping) else vars(record)
    return RequestSummary(
        method=str(r.get("method", "")), path=str(r.get("path", "")), route=r.get("route"),
        status=r.get("status"), duration_s=r.get("duration_s"), cpu_s=r.get("cpu_s"),
        error=r.get("error"), index=r.get("index"), trace_id=r.get("trace_id"),
        span_id=r.get("span_id"), trace_source=r.get("trace_source"),
        request_id=r.get("request_id"),
    )


def fired_texts(trigger: Mapping[str, Any], fired: Sequence[Any]) -> list[str]:
    """The opening rule's description, then those of the other rules that fired."""
    texts = [str(trigger.get("description") or trigger.get("metric") or "")]
    opening = _same_firing(trigger)
    for item in fired:
        inner = getattr(item, "trigger", None)
        data = as_mapping(inner if inner is not None else item)
        if not data or _same_firing(data) == opening:
            continue
        text = str(data.get("description") or data.get("metric"))
        outcome = getattr(item, "outcome", None)
        if outcome is None and isinstance(item, Mapping):
            outcome = item.get("outcome")
        texts.append(text + (" (while the capture was open)" if outcome == "joined" else ""))
    return list(dict.fromkeys(texts))


def _same_firing(trigger: Mapping[str, Any]) -> tuple[Any, ...]:
    return (trigger.get("metric"), trigger.get("subject"), trigger.get("time"))
