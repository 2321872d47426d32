"""Suspects: every piece of evidence becomes candidates, candidates about one app function
are merged, and the strongest are listed.

Each candidate has a *strength* in 0..1:

- a hot function: its self share plus a quarter of the rest of its total share (a caller
  whose time is spread over its callees ranks below them; an entry point with 100 % total
  and no self time stays low), plus 0.05 for each further profile it is hot in; below
  :data:`MIN_SUSPECT_SELF` self share a function is no such suspect at all;
- a function waited under: its share of the profile's time spent waiting;
- an allocation site: its share of the heap growth; a type that grew: its share of the
  growth by type;
- a holder of some of the largest objects (the census's largest, those with one holder
  together): their share of the largest objects' bytes. A holder in the app's own code (a
  local variable of an app function, a global of an app module) is a *holder* suspect,
  named by that function or global; any other holder is a *largest objects* suspect;
- an exception raised at one place: its share of the exceptions kept;
- the event-loop block: 1.0 (whatever blocked the loop is always worth reading).

Strength is multiplied by how well that kind of evidence answers the rule that opened the
capture (:data:`RELEVANCE`: a CPU rule trusts the profiles first, a memory rule the
allocation sites and what holds the memory, an error-rate rule the exceptions, a loop-lag
rule the blocked stack). The same app function named by several kinds of evidence (hot in a
profile and holding the largest object, say) is one suspect, worded after its strongest
evidence, with that score plus 0.1 for each other kind: agreeing evidence is the best sign.
An allocation site is a line, not a function: it is named after the function a profile saw
running that line. An app module's global joins the allocation site whose line names it
(``RECORDS.append(...)`` in that module's file). A type that grew ranks below the app
holder suspect that holds objects of that type (the holder explains those bytes and says
where they are). Suspects below :data:`MIN_SCORE` are left out; at most
:data:`MAX_SUSPECTS` are listed, strongest first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from autoprof.findings.model import FindingsResult, Holder, HotFunction, Suspect, clip, fmt_bytes

__all__ = ["MAX_SUSPECTS", "MIN_SCORE", "MIN_SUSPECT_SELF", "RELEVANCE", "rank"]

MAX_SUSPECTS = 5
MIN_SCORE = 0.05
#: A function whose self share is below this is not a hot suspect (its callees are).
MIN_SUSPECT_SELF = 0.05
#: A type that grew scores at most this much of the app holder suspect that explains it.
EXPLAINED_TYPE = 0.8

#: metric of the opening rule -> evidence kind -> weight (``"*"``: any other metric).
RELEVANCE: dict[str, dict[str, float]] = {
    "cpu": {"hot": 1.0, "loop": 0.8, "wait": 0.3, "alloc": 0.4, "type": 0.3, "holder": 0.3,
            "largest": 0.2, "exception": 0.4},
    "mem": {"alloc": 1.0, "holder": 0.9, "type": 0.6, "largest": 0.5, "hot": 0.4, "loop": 0.5,
            "wait": 0.2, "exception": 0.4},
    "error_rate": {"exception": 1.0, "hot": 0.4, "loop": 0.5, "wait": 0.4, "alloc": 0.3,
                   "type": 0.2, "holder": 0.3, "largest": 0.2},
    "latency": {"hot": 1.0, "wait": 0.9, "loop": 0.9, "exception": 0.5, "alloc": 0.3,
                "type": 0.2, "holder": 0.3, "largest": 0.2},
    "loop_lag": {"loop": 1.0, "hot": 0.7, "wait": 0.3, "exception": 0.3, "alloc": 0.3,
                 "type": 0.2, "holder": 0.3, "largest": 0.2},
    "inflight": {"wait": 1.0, "loop": 0.9, "hot": 0.8, "exception": 0.5, "alloc": 0.3,
                 "type": 0.2, "holder": 0.3, "largest": 0.2},
    "threads": {"wait": 1.0, "hot": 0.8, "loop": 0.8, "exception": 0.5, "alloc": 0.3,
                "type": 0.2, "holder": 0.3, "largest": 0.2},
    "*": {"hot": 0.9, "loop": 0.9, "wait": 0.6, "exception": 0.7, "alloc": 0.7, "type": 0.5,
          "holder": 0.6, "largest": 0.4},
}
RELEVANCE["rss"] = RELEVANCE["rss_growth"] = RELEVANCE["mem"]

_Key = tuple[str, ...]


@dataclass
class _Candidate:
    kind: str
    what: str
    where: str | None
    detail: str
    evidence: list[str]
    score: float
    key: _Key | None = None
    #: What it adds to another kind of evidence about the same function, in a few words.
    also: str = ""
    #: Words that close the suspect's line, after what the others add (code, a message).
    trailer: str = ""
    #: The types of the largest objects an app holder holds.
    holds: set[str] = field(default_factory=set)


def rank(result: FindingsResult, weights: Mapping[str, float]) -> list[Suspect]:
    """The suspects of ``result``, strongest first (see the module docstring)."""
    groups: list[list[_Candidate]] = []
    by_key: dict[_Key, list[_Candidate]] = {}

    def add(candidate: _Candidate) -> None:
        key = candidate.key
        group = by_key.get(key) if key is not None else None
        if group is None:
            group = [candidate]
            groups.append(group)
            if key is not None:
                by_key[key] = group
            return
        same = next((c for c in group if c.kind == candidate.kind), None)
        if same is None:
            group.append(candidate)
        else:
            same.score = max(same.score, candidate.score)
            same.evidence.extend(e for e in candidate.evidence if e not in same.evidence)
            same.holds |= candidate.holds

    for candidate in _profile_candidates(result, weights):
        add(candidate)
    block = result.loop_block
    if block is not None:
        what = block.function or "event loop blocked"
        call = f" in {block.blocking_call}" if block.blocking_call else ""
        add(_Candidate(
            "loop", what, block.where, f"blocked the event loop {block.duration:.2f} s{call}",
            ["loop stack"], weights.get("loop", 0.5),
            key=_function_key(block.where.rsplit(":", 1)[0], what)
            if block.where and block.function else None,
            also=f"blocked the event loop {block.duration:.2f} s",
        ))
    for e in result.exceptions:
        raised = f"raised {e.type.rsplit('.', 1)[-1]} {e.count}x"
        add(_Candidate(
            "exception", e.function or e.type, e.where, raised, ["exceptions"],
            e.share * weights.get("exception", 0.5),
            key=_function_key(e.where.rsplit(":", 1)[0], e.function)
            if e.where and e.function else None,
            also=raised, trailer=clip(e.message, 80),
        ))
    for a in result.allocations:
        add(_Candidate(
            "alloc", a.function or clip(a.code, 50) or "allocation", a.where,
            f"allocated {fmt_bytes(a.size_diff, True)} in {a.count_diff:+d} blocks",
            ["heap growth"], a.share * weights.get("alloc", 0.5),
            key=_function_key(a.file, a.function) if a.function else ("line", a.where),
            also=f"allocated {fmt_bytes(a.size_diff, True)}",
            trailer=a.code if a.function else "",
        ))
    for t in result.types:
        add(_Candidate(
            "type", t.type, None,
            f"grew {t.count_diff:+d} objects, {fmt_bytes(t.bytes_diff, True)}",
            ["types grown"], t.share * weights.get("type", 0.5),
        ))
    for h in result.holders:
        add(_holder_candidate(h, result, weights))
    merged = [_merge(group) for group in groups]
    for c in merged:
        if c.kind != "type":
            continue
        explained = [m for m in merged if c.what in m.holds and m.score > 0]
        if explained:
            best = max(explained, key=lambda m: m.score)
            c.score = min(c.score, best.score * EXPLAINED_TYPE)
            c.detail += f"; see {best.what}"
    kept = sorted((c for c in merged if c.score >= MIN_SCORE), key=lambda c: -c.score)
    return [
        Suspect(rank=i, kind=c.kind, what=c.what, where=c.where, detail=c.detail,
                evidence=c.evidence, score=round(c.score, 3))
        for i, c in enumerate(kept[:MAX_SUSPECTS], 1)
    ]


def _profile_candidates(
    result: FindingsResult, weights: Mapping[str, float]
) -> list[_Candidate]:
    out: list[_Candidate] = []
    hot: dict[tuple[str, str, int], list[HotFunction]] = {}
    for profile in result.profiles:
        for h in profile.hot:
            hot.setdefault((h.file, h.function, h.line), []).append(h)
    for (file, function, line), found in hot.items():
        best = max(found, key=lambda h: h.self_share + 0.25 * (h.total_share - h.self_share))
        if best.self_share < MIN_SUSPECT_SELF:
            continue  # an entry point or a caller: its callees are the suspects
        strength = best.self_share + 0.25 * (best.total_share - best.self_share)
        strength += 0.05 * (len(found) - 1)
        callee = f", mostly in {best.calls_into}" if best.calls_into else ""
        out.append(_Candidate(
            "hot", function, f"{file}:{line}",
            f"hot: self {best.self_share:.0%}, total {best.total_share:.0%}{callee}",
            [h.profile for h in found], strength * weights.get("hot", 0.5),
            key=_function_key(file, function), also=f"hot: self {best.self_share:.0%}",
        ))
    for profile in result.profiles:
        for h in profile.waits:
            out.append(_Candidate(
                "wait", h.function, h.where, f"waited under it {h.wait_share:.0%} of the time",
                [h.profile], h.wait_share * weights.get("wait", 0.5),
                key=_function_key(h.file, h.function), also=f"waited {h.wait_share:.0%}",
            ))
    return out


def _holder_candidate(
    h: Holder, result: FindingsResult, weights: Mapping[str, float]
) -> _Candidate:
    """An app function or global named for what it holds; any other holder by its words."""
    size = fmt_bytes(h.bytes)
    via = f" {h.via}" if h.via else ""
    if h.app_file and h.kind == "local" and h.function:
        variable = f"local '{h.name}'" if h.name else "its frame"
        return _Candidate(
            "holder", h.function, h.where, f"holds {size} in {variable} ({h.objects}{via})",
            ["largest objects"], h.share * weights.get("holder", 0.5),
            key=_function_key(h.app_file, h.function), also=f"holds {size} in {variable}",
            holds=set(h.types),
        )
    holds = f"holds {size} in {h.objects}" + (f" ({h.via})" if h.via else "")
    if h.app_file and h.kind == "global" and h.name:
        name = re.compile(rf"(?<![\w.]){re.escape(h.name)}\b")
        site = next((a for a in result.allocations
                     if a.file == h.app_file and name.search(a.code)), None)
        key: _Key = ("global", str(h.module), h.name)
        if site is not None:
            key = _function_key(site.file, site.function) if site.function else (
                "line", site.where)
        return _Candidate(
            "holder", h.label, None, holds, ["largest objects"],
            h.share * weights.get("holder", 0.5), key=key,
            also=f"global {h.name} holds {size}", holds=set(h.types),
        )
    if h.kind == "unknown":
        return _Candidate("largest", h.objects, None, f"{size}, {h.label}",
                          ["largest objects"], h.share * weights.get("largest", 0.3))
    return _Candidate("largest", h.label, h.where, holds, ["largest objects"],
                      h.share * weights.get("largest", 0.3))


def _merge(group: list[_Candidate]) -> _Candidate:
    """One suspect from the evidence about one function: the strongest leads (its kind,
    place and words), each other kind adds a few words and 0.1 to the score; the lead's
    trailer (its code or message) closes the line."""
    lead, *others = sorted(group, key=lambda c: -c.score)
    if not others:
        detail = f"{lead.detail}: {lead.trailer}" if lead.trailer else lead.detail
        return _Candidate(lead.kind, lead.what, lead.where, detail, lead.evidence, lead.score,
                          lead.key, holds=lead.holds)
    trailer = [lead.trailer] if lead.trailer else []
    return _Candidate(
        lead.kind, lead.what, lead.where,
        "; ".join([lead.detail, *(c.also or c.detail for c in others), *trailer]),
        list(dict.fromkeys(e for c in (lead, *others) for e in c.evidence)),
        lead.score + 0.1 * len(others), lead.key,
        holds=set().union(*(c.holds for c in group)),
    )


def _function_key(file: str, function: str) -> _Key:
    """Candidates about one app function share this: its file and bare name (a method's
    class and a nested function's outer names are left out; the profiles and the census
    spell them differently)."""
    return (file, function.rsplit(".", 1)[-1])
