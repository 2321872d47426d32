"""A capture's findings: the few suspects a person reads first, drawn from all its evidence.

The capture feeds a :class:`Findings` builder each profile as it is rendered
(:meth:`Findings.add_profile`; request profiles are added up together, the others kept
apart), so no session outlives its rendering. At finalize :meth:`Findings.build` adds the
heap reports, the exceptions, the event-loop block, the requests and the rules that fired,
and returns a :class:`FindingsResult`: ``as_dict()`` for the manifest's ``findings``,
``render_text()`` for ``summary.txt``.

Only the app's own code is named. A frame is the app's unless its file is in the standard
library, in site-packages / dist-packages (or the sysconfig purelib / platlib paths), in
autoprof, pyinstrument or a web framework / server package, or is not a file at all
(``<frozen ...>``, ``<built-in>``, ``<thread>``). Generator expressions and comprehensions
count as part of the function that runs them.

Profiles. Each sample is charged to the innermost app frame on its stack: that function's
*self* share is the time spent in its own lines and in the library calls it makes directly
(``json.dumps`` under ``render`` is ``render``'s cost; the callee that took most of it is
named); its *total* share counts every sample with the function anywhere on the stack.
Shares are of the profile's samples that are not waiting: samples that end in pyinstrument's
``[await]`` or ``[out-of-context]`` frames (an awaiting coroutine, or in the all-threads
profiles a thread that used almost no CPU) are counted apart, as the share of all samples a
function spent waiting under it. A sync call that sleeps or blocks (``time.sleep``, a sync
driver) is not waiting to pyinstrument's request profiler: it is time spent in that call,
which is why the summary names the call and the profile's process CPU seconds.

Ranking. Every piece of evidence becomes candidate suspects with a *strength* in 0..1:

- a hot function: its self share plus a quarter of the rest of its total share (a caller
  whose time is spread over its callees ranks below them; an entry point with 100 % total
  and no self time stays low), plus 0.05 for each further profile it is hot in; below
  :data:`MIN_SUSPECT_SELF` self share a function is no such suspect at all;
- a function waited under: its share of the profile's time spent waiting;
- an allocation site: its share of the heap growth; a type that grew: its share of the
  growth by type; one of the largest objects: its share of the largest objects' bytes;
- an exception raised at one place: its share of the exceptions kept;
- the event-loop block: 1.0 (whatever blocked the loop is always worth reading).

Strength is multiplied by how well that kind of evidence answers the rule that opened the
capture (:data:`RELEVANCE`: a CPU rule trusts the profiles first, a memory rule the
allocation sites, an error-rate rule the exceptions, a loop-lag rule the blocked stack). The
same app function named by several kinds of evidence (hot in a profile and blocking the loop,
say) is one suspect, worded after its strongest evidence, with that score plus 0.1 for each
other kind: agreeing evidence is the best sign. (An allocation site is a line, not a function:
it is named after the function a profile saw running that line.) Suspects below
:data:`MIN_SCORE` are left out; at most :data:`MAX_SUSPECTS` are listed, strongest first.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CodeClassifier",
    "Findings",
    "FindingsResult",
    "Suspect",
]

MAX_SUSPECTS = 5
MIN_SCORE = 0.05
#: A function whose self share is below this is not a hot suspect (its callees are).
MIN_SUSPECT_SELF = 0.05
HOT_PER_PROFILE = 5
MIN_HOT_SHARE = 0.02
ITEMS_PER_SECTION = 3

_WAIT_FRAMES = frozenset({"[await]", "[out-of-context]"})
_FOLDED = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>"})
_LIBRARY_PACKAGES = (
    "autoprof", "pyinstrument", "starlette", "fastapi", "uvicorn", "anyio", "h11", "httptools",
    "uvloop", "websockets", "flask", "werkzeug", "gunicorn", "jinja2", "click", "pydantic",
    "pydantic_core", "sniffio", "asgiref", "psutil",
)

#: metric of the opening rule -> evidence kind -> weight (``"*"``: any other metric).
RELEVANCE: dict[str, dict[str, float]] = {
    "cpu": {"hot": 1.0, "loop": 0.8, "wait": 0.3, "alloc": 0.4, "type": 0.3, "largest": 0.2,
            "exception": 0.4},
    "mem": {"alloc": 1.0, "type": 0.6, "largest": 0.5, "hot": 0.4, "loop": 0.5, "wait": 0.2,
            "exception": 0.4},
    "error_rate": {"exception": 1.0, "hot": 0.4, "loop": 0.5, "wait": 0.4, "alloc": 0.3,
                   "type": 0.2, "largest": 0.2},
    "latency": {"hot": 1.0, "wait": 0.9, "loop": 0.9, "exception": 0.5, "alloc": 0.3,
                "type": 0.2, "largest": 0.2},
    "loop_lag": {"loop": 1.0, "hot": 0.7, "wait": 0.3, "exception": 0.3, "alloc": 0.3,
                 "type": 0.2, "largest": 0.2},
    "inflight": {"wait": 1.0, "loop": 0.9, "hot": 0.8, "exception": 0.5, "alloc": 0.3,
                 "type": 0.2, "largest": 0.2},
    "threads": {"wait": 1.0, "hot": 0.8, "loop": 0.8, "exception": 0.5, "alloc": 0.3,
                "type": 0.2, "largest": 0.2},
    "*": {"hot": 0.9, "loop": 0.9, "wait": 0.6, "exception": 0.7, "alloc": 0.7, "type": 0.5,
          "largest": 0.4},
}
RELEVANCE["rss"] = RELEVANCE["rss_growth"] = RELEVANCE["mem"]


# -- where code lives -------------------------------------------------------------------


class CodeClassifier:
    """Tells the app's own files from the standard library's, installed packages' and
    autoprof's own, and shortens paths under the working directory."""

    def __init__(self, cwd: str | None = None, library_dirs: Iterable[str] = ()) -> None:
        self.cwd = os.path.abspath(cwd or os.getcwd())
        dirs = set(library_dirs)
        paths = sysconfig.get_paths()
        dirs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
        try:
            dirs.update(site.getsitepackages())
            dirs.add(site.getusersitepackages())
        except AttributeError:  # an old virtualenv's site module
            pass
        for name in _LIBRARY_PACKAGES:
            module = sys.modules.get(name)
            file = getattr(module, "__file__", None)
            if isinstance(file, str):
                dirs.add(os.path.dirname(file))
        self._prefixes = tuple(
            sorted({os.path.join(os.path.realpath(d), "") for d in dirs if d}, key=len)
        )
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()

    def is_app(self, path: str) -> bool:
        """Whether ``path`` (a code object's file name) is the app's own code."""
        found = self._cache.get(path)
        if found is None:
            found = self._classify(path)
            with self._lock:
                if len(self._cache) > 20_000:
                    self._cache.clear()
                self._cache[path] = found
        return found

    def _classify(self, path: str) -> bool:
        if not path or path.startswith("<"):
            return False
        parts = path.replace("\\", "/").split("/")
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        real = os.path.realpath(os.path.abspath(path))
        return not any(real.startswith(prefix) for prefix in self._prefixes)

    def short(self, path: str) -> str:
        """``path`` relative to the working directory when it is under it."""
        full = os.path.abspath(path) if path and not path.startswith("<") else path
        if full.startswith(os.path.join(self.cwd, "")):
            return os.path.relpath(full, self.cwd)
        return path


@functools.cache
def default_classifier() -> CodeClassifier:
    """One classifier for the process (its paths do not change; its cache is shared)."""
    return CodeClassifier()


# -- results ----------------------------------------------------------------------------


@dataclass
class HotFunction:
    """An app function in a profile; shares are fractions (0..1)."""

    function: str
    file: str
    line: int
    profile: str
    self_share: float
    total_share: float
    wait_share: float = 0.0
    hot_line: int | None = None
    calls_into: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ProfileSummary:
    """One kind of profile (all request profiles together) and its hottest app functions."""

    kind: str
    sessions: int
    seconds: float
    busy_seconds: float
    #: The process's CPU seconds while the profiles ran (pyinstrument's ``cpu_time``), for
    #: the kinds whose sessions measure just that (requests, all-threads).
    cpu_seconds: float | None
    app_share: float
    hot: list[HotFunction] = field(default_factory=list)
    waits: list[HotFunction] = field(default_factory=list)


@dataclass
class AllocationSite:
    """Heap growth whose innermost app frame is one line."""

    file: str
    line: int
    code: str
    size_diff: int
    count_diff: int
    share: float
    #: The function, when a profile saw that line run.
    function: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class TypeGrowth:
    type: str
    count_diff: int
    bytes_diff: int
    share: float


@dataclass
class LargeObject:
    type: str
    bytes: int
    held_by: str | None
    where: str | None
    share: float


@dataclass
class ExceptionGroup:
    """Exceptions of one type raised at one place (the innermost app frame)."""

    type: str
    message: str
    count: int
    function: str | None
    where: str | None
    code: str
    requests: list[str]
    share: float


@dataclass
class LoopBlock:
    """What blocked the event loop: the innermost app frame and the call under it."""

    duration: float
    ongoing: bool
    function: str | None
    where: str | None
    code: str
    blocking_call: str | None
    task: str | None


@dataclass
class RequestSummary:
    method: str
    path: str
    route: str | None
    status: int | None
    duration_s: float | None
    cpu_s: float | None
    error: str | None


@dataclass
class Suspect:
    """One line of the summary: what to look at, where, and why."""

    rank: int
    kind: str
    what: str
    where: str | None
    detail: str
    evidence: list[str]
    score: float


@dataclass
class FindingsResult:
    """The findings of one capture (see the module docstring)."""

    headline: str
    fired: list[str]
    suspects: list[Suspect]
    profiles: list[ProfileSummary]
    allocations: list[AllocationSite]
    growth_bytes: int | None
    types: list[TypeGrowth]
    largest: list[LargeObject]
    exceptions: list[ExceptionGroup]
    exception_count: int
    loop_block: LoopBlock | None
    requests: list[RequestSummary]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest."""
        return asdict(self)

    def render_text(self) -> str:
        """The plain-text summary: why, suspects, then a short section per evidence."""
        out = [self.headline]
        out.extend(f"Also fired: {text}" for text in self.fired[1:4])
        if len(self.fired) > 4:
            out.append(f"Also fired: {len(self.fired) - 4} more rules")
        out.append("")
        out.append("Suspects:")
        if not self.suspects:
            out.append("  none stood out in the app's own code (see the sections below)")
        for s in self.suspects:
            where = f"  {s.where}" if s.where else ""
            out.append(f"  {s.rank}. {s.what}{where}  {s.detail} [{', '.join(s.evidence)}]")
        out.extend(self._render_requests())
        out.extend(self._render_profiles())
        out.extend(self._render_loop_block())
        out.extend(self._render_exceptions())
        out.extend(self._render_heap())
        return "\n".join(out) + "\n"

    def _render_requests(self) -> list[str]:
        if not self.requests:
            return []
        groups: dict[tuple[str, str, Any], list[RequestSummary]] = {}
        for r in self.requests:
            groups.setdefault((r.method, r.route or r.path, r.status), []).append(r)
        out = ["", f"Requests profiled ({len(self.requests)}):"]
        for (method, route, status), items in list(groups.items())[:ITEMS_PER_SECTION]:
            durations = [r.duration_s for r in items if r.duration_s is not None]
            took = ""
            if durations:
                low, high = min(durations) * 1000, max(durations) * 1000
                took = f" in {low:.0f} ms" if round(low) == round(high) else (
                    f" in {low:.0f}-{high:.0f} ms")
            errors = sorted({r.error for r in items if r.error})
            raised = f", raised {', '.join(errors)}" if errors else ""
            out.append(f"  {len(items)}x {method} {route} -> {status}{took}{raised}")
        if len(groups) > ITEMS_PER_SECTION:
            out.append(f"  ... and {len(groups) - ITEMS_PER_SECTION} more routes")
        return out

    def _render_profiles(self) -> list[str]:
        out: list[str] = []
        for p in self.profiles:
            if not p.hot and not p.waits:
                continue
            if not out:
                out = ["", "Hot app functions (self / total share of the samples not waiting):"]
            sessions = f"{p.sessions} profiles, " if p.sessions > 1 else ""
            cpu = f", process CPU {p.cpu_seconds:.2f} s" if p.cpu_seconds is not None else ""
            out.append(f"  {p.kind} ({sessions}{p.seconds:.2f} s sampled, "
                       f"{p.seconds - p.busy_seconds:.2f} s waiting{cpu}, "
                       f"app code {p.app_share:.0%}):")
            for h in p.hot[:ITEMS_PER_SECTION]:
                extra = f", line {h.hot_line}" if h.hot_line and h.hot_line != h.line else ""
                callee = f", in {h.calls_into}" if h.calls_into else ""
                out.append(f"    {h.self_share:4.0%} {h.total_share:4.0%}  {h.function}  "
                           f"{h.where}{extra}{callee}")
            for h in p.waits[:2]:
                out.append(f"    waiting {h.wait_share:.0%} of the time under {h.function}  "
                           f"{h.where}")
        return out

    def _render_loop_block(self) -> list[str]:
        b = self.loop_block
        if b is None:
            return []
        still = ", still blocked" if b.ongoing else ""
        out = ["", f"Event loop blocked {b.duration:.2f} s{still}:"]
        if b.function is None:
            out.append("  no app frame on the loop thread's stack")
        else:
            out.append(f"  in {b.function}  {b.where}" + (f": {b.code}" if b.code else ""))
        if b.blocking_call and b.blocking_call != b.code:
            out.append(f"  blocking call: {b.blocking_call}")
        if b.task:
            out.append(f"  task: {b.task}")
        return out

    def _render_exceptions(self) -> list[str]:
        if not self.exceptions:
            return []
        out = ["", f"Exceptions that escaped the app ({self.exception_count}):"]
        for e in self.exceptions[:ITEMS_PER_SECTION]:
            place = f" in {e.function}  {e.where}" if e.where else ""
            requests = f" ({', '.join(e.requests[:2])})" if e.requests else ""
            out.append(f"  {e.count}x {_type_name(e.type)}: {_clip(e.message, 60)}{place}"
                       f"{requests}")
        if len(self.exceptions) > ITEMS_PER_SECTION:
            out.append(f"  ... and {len(self.exceptions) - ITEMS_PER_SECTION} more places")
        return out

    def _render_heap(self) -> list[str]:
        out: list[str] = []
        if self.allocations or self.growth_bytes is not None:
            net = _bytes(self.growth_bytes, signed=True) if self.growth_bytes is not None else "?"
            out += ["", f"Heap growth during the capture (net {net}), by app line:"]
            if not self.allocations:
                out.append("  none in the app's own code")
            for a in self.allocations[:ITEMS_PER_SECTION]:
                code = f": {_clip(a.code, 50)}" if a.code else ""
                function = f" in {a.function}" if a.function else ""
                out.append(f"  {_bytes(a.size_diff, signed=True)} in {a.count_diff:+d} blocks"
                           f"{function}  {a.where}{code}")
        if self.types:
            out += ["", "Types that grew:"]
            out.extend(f"  {t.type}: {t.count_diff:+d} objects, {_bytes(t.bytes_diff, True)}"
                       for t in self.types[:ITEMS_PER_SECTION])
        if self.largest:
            out += ["", "Largest objects:"]
            for o in self.largest[:ITEMS_PER_SECTION]:
                held = f" held by {_clip(o.held_by, 50)}" if o.held_by else ""
                where = f" ({o.where})" if o.where else ""
                out.append(f"  {o.type} {_bytes(o.bytes)}{held}{where}")
        return out


# -- the builder ------------------------------------------------------------------------


_SYNTHETIC, _LIBRARY, _APP, _FOLDED_APP = range(4)
#: A parsed frame identifier: kind, (file, function, first line), current line.
_Frame = tuple[int, tuple[str, str, int], "int | None"]


@dataclass
class _Stats:
    name: str
    self_time: float = 0.0
    total_time: float = 0.0
    wait_time: float = 0.0
    lines: dict[int, float] = field(default_factory=dict)
    callees: dict[str, float] = field(default_factory=dict)


@dataclass
class _Profile:
    sessions: int = 0
    seconds: float = 0.0
    busy: float = 0.0
    cpu: float = 0.0
    app_busy: float = 0.0
    waiting: float = 0.0
    stats: dict[tuple[str, str, int], _Stats] = field(default_factory=dict)


def profile_group(kind: str) -> str:
    """The group a profile kind is added up in: every ``request-<n>`` in ``requests``."""
    return "requests" if kind.startswith("request-") else kind


class Findings:
    """Collects a capture's profiles as they are rendered, then builds its findings.

    :meth:`add_profile` may be called from any thread; it keeps only sums per app function,
    never the session.
    """

    def __init__(self, classifier: CodeClassifier | None = None) -> None:
        self.classifier = classifier or default_classifier()
        self._profiles: dict[str, _Profile] = {}
        self._parsed: dict[str, _Frame] = {}
        self._lock = threading.Lock()

    def add_profile(self, kind: str, session: Any) -> None:
        """Add one pyinstrument ``Session`` of ``kind`` (``request-<n>``, ``all-threads``,
        ``before-trigger``, ``loop-blocked``)."""
        records = getattr(session, "frame_records", None)
        if not records:
            return
        with self._lock:
            profile = self._profiles.setdefault(profile_group(kind), _Profile())
            profile.sessions += 1
            cpu = getattr(session, "cpu_time", None)
            if isinstance(cpu, (int, float)):
                profile.cpu += cpu
            for stack, weight in records:
                self._add_record(profile, stack, float(weight))

    def _add_record(self, profile: _Profile, stack: Sequence[str], weight: float) -> None:
        profile.seconds += weight
        waiting = bool(stack) and stack[-1] in _WAIT_FRAMES
        if waiting:
            profile.waiting += weight
        else:
            profile.busy += weight
        parsed = self._parsed
        innermost: _Stats | None = None
        line: int | None = None
        callee: str | None = None  # the first library call under the innermost app frame
        seen: set[tuple[str, str, int]] = set()
        for info in stack:
            frame = parsed.get(info)
            if frame is None:
                frame = self._parse(info)
            kind, key, current = frame
            if kind == _SYNTHETIC:
                continue
            if kind == _LIBRARY:
                if callee is None and innermost is not None:
                    callee = key[1]
                continue
            callee = None
            if kind == _FOLDED_APP and innermost is not None:
                line = current if current is not None else line
                continue
            stats = profile.stats.get(key)
            if stats is None:
                stats = profile.stats[key] = _Stats(key[1])
            if not waiting and key not in seen:
                seen.add(key)
                stats.total_time += weight
            innermost, line = stats, current
        if innermost is None:
            return
        if waiting:
            innermost.wait_time += weight
            return
        profile.app_busy += weight
        innermost.self_time += weight
        if line is not None:
            innermost.lines[line] = innermost.lines.get(line, 0.0) + weight
        if callee is not None:
            innermost.callees[callee] = innermost.callees.get(callee, 0.0) + weight

    def _parse(self, info: str) -> _Frame:
        """What a frame identifier says, cached (a profile repeats the same few strings)."""
        identifier, _, attributes = info.partition("\x01")
        parts = identifier.split("\x00")
        current = _line_of(attributes)
        if len(parts) != 3:  # a synthetic frame: [await], [self], [root]...
            frame: _Frame = (_SYNTHETIC, ("", "", 0), None)
        else:
            function, file, first = parts
            if not self.classifier.is_app(file):
                frame = (_LIBRARY, (file, _callee_name(function, file), 0), current)
            else:
                class_name = _class_of(attributes)
                if class_name and "." not in function:
                    function = f"{class_name}.{function}"
                kind = _FOLDED_APP if function.rsplit(".", 1)[-1] in _FOLDED else _APP
                frame = (kind, (file, function, _int(first)), current)
        if len(self._parsed) >= 100_000:
            self._parsed.clear()
        self._parsed[info] = frame
        return frame

    # -- build -----------------------------------------------------------------------

    def build(
        self,
        *,
        trigger: Any,
        fired: Sequence[Any] = (),
        requests: Sequence[Any] = (),
        heap: Mapping[str, Any] | None = None,
        exceptions: Sequence[Mapping[str, Any]] = (),
        loop_block: Mapping[str, Any] | None = None,
    ) -> FindingsResult:
        """The findings, from what was added and the rest of the capture's evidence.

        ``trigger``: the opening rule (a ``Trigger`` or its dict); ``fired``: every rule
        that fired into the capture (``Fired``, ``Trigger`` or dicts; the opening one may be
        among them); ``requests``: the profiled requests (``RequestRecord`` or dicts);
        ``heap``: the heap document (``census``, ``growth``, ``grew_since``, each optional);
        ``exceptions``: the kept exceptions; ``loop_block``: ``BlockEvent.as_dict()``.
        """
        trig = _as_mapping(trigger)
        metric = str(trig.get("metric") or "")
        headline = f"Why: {trig.get('description') or metric or 'unknown trigger'}"
        fired_texts = _fired_texts(trig, fired)
        heap = heap or {}
        census = _as_mapping(heap.get("census"))
        growth = _as_mapping(heap.get("growth"))
        with self._lock:
            profiles = [self._summarise(kind, p) for kind, p in self._profiles.items()]
            owners = {
                (self.classifier.short(file), line): name
                for p in self._profiles.values()
                for (file, name, _), stats in p.stats.items()
                for line in stats.lines
            }
        profiles.sort(key=lambda p: _PROFILE_ORDER.get(p.kind, 9))
        allocations = self._allocations(growth)
        for site_ in allocations:
            site_.function = owners.get((site_.file, site_.line))
        total = growth.get("total_growth_bytes")
        result = FindingsResult(
            headline=headline,
            fired=fired_texts,
            suspects=[],
            profiles=profiles,
            allocations=allocations,
            growth_bytes=total if isinstance(total, int) and growth else None,
            types=_types(_as_mapping(heap.get("grew_since"))),
            largest=self._largest(census),
            exceptions=self._exceptions(exceptions),
            exception_count=len(exceptions),
            loop_block=self._loop_block(loop_block),
            requests=[_request(r) for r in requests],
        )
        result.suspects = _rank(result, RELEVANCE.get(metric, RELEVANCE["*"]))
        return result

    def _summarise(self, kind: str, p: _Profile) -> ProfileSummary:
        short = self.classifier.short
        busy = p.busy or 1.0
        hot: list[HotFunction] = []
        for (file, name, first), s in p.stats.items():
            if s.total_time / busy < MIN_HOT_SHARE and s.wait_time / (p.seconds or 1.0) < 0.1:
                continue
            callee = None
            if s.callees:
                top, spent = max(s.callees.items(), key=lambda item: item[1])
                if spent >= 0.3 * s.self_time:
                    callee = top
            hot.append(HotFunction(
                function=name, file=short(file), line=first, profile=kind,
                self_share=s.self_time / busy, total_share=s.total_time / busy,
                wait_share=s.wait_time / (p.seconds or 1.0),
                hot_line=max(s.lines.items(), key=lambda item: item[1])[0] if s.lines else None,
                calls_into=callee,
            ))
        ranked = sorted(hot, key=lambda h: (-h.self_share, -h.total_share, h.function))
        waits = sorted((h for h in hot if h.wait_share >= 0.1), key=lambda h: -h.wait_share)
        return ProfileSummary(
            kind=kind, sessions=p.sessions, seconds=p.seconds, busy_seconds=p.busy,
            cpu_seconds=p.cpu if kind in _MEASURES_CPU else None,
            app_share=p.app_busy / busy if p.busy else 0.0,
            hot=[h for h in ranked if h.self_share >= MIN_HOT_SHARE or h.total_share >= 0.2][
                :HOT_PER_PROFILE],
            waits=waits[:ITEMS_PER_SECTION],
        )

    def _allocations(self, growth: Mapping[str, Any]) -> list[AllocationSite]:
        sites: dict[tuple[str, int], list[Any]] = {}
        positive = 0
        for entry in _as_list(growth.get("top")):
            entry = _as_mapping(entry)
            size = entry.get("size_diff")
            if not isinstance(size, int) or size <= 0:
                continue
            positive += size
            # heap.py lists the traceback innermost first
            frame = next((_as_mapping(f) for f in _as_list(entry.get("traceback"))
                          if self.classifier.is_app(str(_as_mapping(f).get("filename", "")))),
                         None)
            if frame is None:
                continue
            key = (str(frame.get("filename")), _int(frame.get("lineno")))
            site_ = sites.setdefault(key, [0, 0, str(frame.get("line") or "")])
            site_[0] += size
            site_[1] += _int(entry.get("count_diff"))
        out = [
            AllocationSite(file=self.classifier.short(file), line=line, code=code,
                           size_diff=size, count_diff=count, share=size / (positive or 1))
            for (file, line), (size, count, code) in sites.items()
        ]
        return sorted(out, key=lambda a: -a.size_diff)[:ITEMS_PER_SECTION]

    def _largest(self, census: Mapping[str, Any]) -> list[LargeObject]:
        items = [_as_mapping(i) for i in _as_list(census.get("largest"))]
        total = sum(_int(i.get("bytes")) for i in items) or 1
        out = []
        for item in items[:ITEMS_PER_SECTION]:
            frame = item.get("frame")
            where = None
            if isinstance(frame, Mapping) and frame.get("filename"):
                function = f" {frame['function']}" if frame.get("function") else ""
                where = (f"{self.classifier.short(str(frame['filename']))}:"
                         f"{_int(frame.get('lineno'))}{function}")
            held = item.get("held_by")
            out.append(LargeObject(type=str(item.get("type", "?")), bytes=_int(item.get("bytes")),
                                   held_by=str(held) if held else None, where=where,
                                   share=_int(item.get("bytes")) / total))
        return out

    def _exceptions(self, exceptions: Sequence[Mapping[str, Any]]) -> list[ExceptionGroup]:
        groups: dict[tuple[str, str | None, str | None], ExceptionGroup] = {}
        for raw in exceptions:
            entry = _as_mapping(raw)
            frames = [_as_mapping(f) for f in _as_list(entry.get("frames"))]
            frame = self._innermost_app(frames)
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

    def _loop_block(self, block: Mapping[str, Any] | None) -> LoopBlock | None:
        if not block:
            return None
        stack = [_as_mapping(f) for f in _as_list(block.get("stack"))]  # outermost first
        index = next((i for i in range(len(stack) - 1, -1, -1)
                      if self.classifier.is_app(str(stack[i].get("filename", "")))), None)
        function = where = blocking = None
        code = ""
        while index and str(stack[index].get("function")) in _FOLDED and self.classifier.is_app(
            str(stack[index - 1].get("filename", ""))
        ):
            index -= 1  # a generator expression runs as part of its caller
        if index is not None:
            frame = stack[index]
            function = str(frame.get("function") or "?")
            where = self._where(frame)
            code = str(frame.get("line") or "")
            below = [f for f in stack[index + 1 :]
                     if not self.classifier.is_app(str(f.get("filename", "")))]
            if below:  # a Python-level library call under the app frame
                callee, inner = below[0], below[-1]
                blocking = f"{callee.get('function')} ({self._where(callee)})"
                if inner is not callee:
                    blocking += f" ... {inner.get('function')} ({self._where(inner)})"
            elif code:
                blocking = code
        elif stack:
            blocking = f"{stack[-1].get('function')} ({self._where(stack[-1])})"
        task = _as_mapping(block.get("task"))
        duration = block.get("duration")
        return LoopBlock(
            duration=float(duration) if isinstance(duration, (int, float)) else 0.0,
            ongoing=bool(block.get("ongoing")),
            function=function, where=where, code=code, blocking_call=blocking,
            task=str(task.get("coro") or task.get("name")) if task else None,
        )

    def _innermost_app(self, frames: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The innermost app frame of a traceback listed outermost first."""
        return next(
            (f for f in reversed(frames) if self.classifier.is_app(str(f.get("filename", "")))),
            None,
        )

    def _where(self, frame: Mapping[str, Any]) -> str:
        return f"{self.classifier.short(str(frame.get('filename')))}:{_int(frame.get('lineno'))}"


_MEASURES_CPU = frozenset({"requests", "all-threads"})
_PROFILE_ORDER = {"requests": 0, "before-trigger": 1, "all-threads": 2, "loop-blocked": 3}


# -- ranking ----------------------------------------------------------------------------


@dataclass
class _Candidate:
    kind: str
    what: str
    where: str | None
    detail: str
    evidence: list[str]
    score: float
    key: tuple[str, str] | None = None
    #: What it adds to another kind of evidence about the same function, in a few words.
    also: str = ""


def _rank(result: FindingsResult, weights: Mapping[str, float]) -> list[Suspect]:
    # Candidates about one app function (file, bare name) are grouped, strongest first.
    groups: list[list[_Candidate]] = []
    by_function: dict[tuple[str, str], list[_Candidate]] = {}

    def add(candidate: _Candidate) -> None:
        key = candidate.key
        group = by_function.get(key) if key is not None else None
        if group is None:
            group = [candidate]
            groups.append(group)
            if key is not None:
                by_function[key] = group
            return
        same = next((c for c in group if c.kind == candidate.kind), None)
        if same is None:
            group.append(candidate)
        else:
            same.score = max(same.score, candidate.score)
            same.evidence.extend(e for e in candidate.evidence if e not in same.evidence)

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
        add(_Candidate(
            "hot", function, f"{file}:{line}",
            f"hot: self {best.self_share:.0%}, total {best.total_share:.0%}{callee}",
            [h.profile for h in found], strength * weights.get("hot", 0.5),
            key=(file, function.rsplit(".", 1)[-1]), also=f"hot: self {best.self_share:.0%}",
        ))
    for profile in result.profiles:
        for h in profile.waits:
            add(_Candidate(
                "wait", h.function, h.where, f"waited under it {h.wait_share:.0%} of the time",
                [h.profile], h.wait_share * weights.get("wait", 0.5),
                key=(h.file, h.function.rsplit(".", 1)[-1]), also=f"waited {h.wait_share:.0%}",
            ))
    block = result.loop_block
    if block is not None:
        what = block.function or "event loop blocked"
        call = f" in {block.blocking_call}" if block.blocking_call else ""
        add(_Candidate(
            "loop", what, block.where, f"blocked the event loop {block.duration:.2f} s{call}",
            ["loop stack"], weights.get("loop", 0.5),
            key=(block.where.rsplit(":", 1)[0], what) if block.where and block.function else None,
            also=f"blocked the event loop {block.duration:.2f} s",
        ))
    for e in result.exceptions:
        add(_Candidate(
            "exception", e.function or e.type, e.where,
            f"raised {e.type.rsplit('.', 1)[-1]} {e.count}x: {_clip(e.message, 40)}",
            ["exceptions"], e.share * weights.get("exception", 0.5),
            key=(e.where.rsplit(":", 1)[0], e.function) if e.where and e.function else None,
            also=f"raised {e.type.rsplit('.', 1)[-1]} {e.count}x",
        ))
    for a in result.allocations:
        allocated = f"allocated {_bytes(a.size_diff, True)} in {a.count_diff:+d} blocks"
        add(_Candidate(
            "alloc", a.function or _clip(a.code, 40) or "allocation", a.where,
            allocated + (f": {_clip(a.code, 40)}" if a.function and a.code else ""),
            ["heap growth"], a.share * weights.get("alloc", 0.5),
            key=(a.file, a.function.rsplit(".", 1)[-1]) if a.function else None, also=allocated,
        ))
    for t in result.types:
        add(_Candidate(
            "type", t.type, None, f"grew {t.count_diff:+d} objects, {_bytes(t.bytes_diff, True)}",
            ["types grown"], t.share * weights.get("type", 0.5),
        ))
    for o in result.largest:
        held = f", held by {_clip(o.held_by, 40)}" if o.held_by else ""
        add(_Candidate(
            "largest", o.type, o.where, f"{_bytes(o.bytes)}{held}", ["largest objects"],
            o.share * weights.get("largest", 0.3),
        ))
    merged = [_merge(group) for group in groups]
    kept = sorted((c for c in merged if c.score >= MIN_SCORE), key=lambda c: -c.score)
    return [
        Suspect(rank=i, kind=c.kind, what=c.what, where=c.where, detail=c.detail,
                evidence=c.evidence, score=round(c.score, 3))
        for i, c in enumerate(kept[:MAX_SUSPECTS], 1)
    ]


def _merge(group: list[_Candidate]) -> _Candidate:
    """One suspect from the evidence about one function: the strongest leads (its kind,
    place and words), each other kind adds a few words and 0.1 to the score."""
    lead, *others = sorted(group, key=lambda c: -c.score)
    if not others:
        return lead
    return _Candidate(
        lead.kind, lead.what, lead.where,
        "; ".join([lead.detail, *(c.also or c.detail for c in others)]),
        list(dict.fromkeys(e for c in (lead, *others) for e in c.evidence)),
        lead.score + 0.1 * len(others),
    )


# -- helpers ----------------------------------------------------------------------------


def _types(grew_since: Mapping[str, Any]) -> list[TypeGrowth]:
    rows = [_as_mapping(t) for t in _as_list(grew_since.get("types"))]
    rows = [t for t in rows if _int(t.get("bytes_diff")) > 0 or _int(t.get("count_diff")) > 0]
    rows.sort(key=lambda t: (-_int(t.get("bytes_diff")), -_int(t.get("count_diff"))))
    total = sum(max(_int(t.get("bytes_diff")), 0) for t in rows) or 1
    return [
        TypeGrowth(type=str(t.get("type", "?")), count_diff=_int(t.get("count_diff")),
                   bytes_diff=_int(t.get("bytes_diff")),
                   share=max(_int(t.get("bytes_diff")), 0) / total)
        for t in rows[:ITEMS_PER_SECTION]
    ]


def _request(record: Any) -> RequestSummary:
    r = record if isinstance(record, Mapping) else vars(record)
    return RequestSummary(
        method=str(r.get("method", "")), path=str(r.get("path", "")), route=r.get("route"),
        status=r.get("status"), duration_s=r.get("duration_s"), cpu_s=r.get("cpu_s"),
        error=r.get("error"),
    )


def _fired_texts(trigger: Mapping[str, Any], fired: Sequence[Any]) -> list[str]:
    """The opening rule's description, then those of the other rules that fired."""
    texts = [str(trigger.get("description") or trigger.get("metric") or "")]
    opening = _same_firing(trigger)
    for item in fired:
        inner = getattr(item, "trigger", None)
        data = _as_mapping(inner if inner is not None else item)
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


def _callee_name(function: str, file: str) -> str:
    if file.startswith("<"):
        return function
    return f"{function} ({'/'.join(file.replace(os.sep, '/').split('/')[-2:])})"


def _as_mapping(value: Any) -> Mapping[str, Any]:
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


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _line_of(attributes: str) -> int | None:
    for attribute in attributes.split("\x01") if attributes else ():
        if attribute.startswith("l"):
            return _int(attribute[1:]) or None
    return None


def _class_of(attributes: str) -> str | None:
    for attribute in attributes.split("\x01") if attributes else ():
        if attribute.startswith("c"):
            return attribute[1:] or None
    return None


def _type_name(name: str) -> str:
    return name.removeprefix("builtins.")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _bytes(size: int, signed: bool = False) -> str:
    sign = ("+" if size >= 0 else "-") if signed else ("-" if size < 0 else "")
    value = float(abs(size))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{sign}{value:.1f} {unit}"
    return f"{sign}{value / 1024:.1f} TiB"
