"""The findings' result types and their plain-text rendering (``summary.txt``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ITEMS_PER_SECTION = 3
#: A suspect's line (before its ``[evidence]`` tag) is kept to this many characters by
#: shortening its trailing detail only.
SUSPECT_WIDTH = 150
#: The summary lists the traces of at most this many profiled requests.
MAX_TRACE_LINES = 20


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
class Holder:
    """What holds some of the census's largest objects (those with one holder together).

    ``kind`` is ``"local"`` (a variable of a function a thread is running, or of a suspended
    coroutine or generator), ``"global"`` (a module's global), ``"other"`` (an object's
    attribute, a class, a closure...) or ``"unknown"``.
    """

    kind: str
    #: The variable's or global's name (None when the census did not say); for "other" and
    #: "unknown", the census's own words.
    name: str | None
    #: The function whose frame holds them ("local").
    function: str | None
    #: file:line of that frame ("local").
    where: str | None
    #: The module of the global ("global").
    module: str | None
    #: The app file of the function or module, when it is the app's own code (else None).
    app_file: str | None
    #: The containers between the holder and the objects, e.g. "inside list".
    via: str
    count: int
    bytes: int
    #: type name -> how many of the objects are of that type.
    types: dict[str, int]
    share: float

    @property
    def label(self) -> str:
        """The holder in a few words, its name never shortened."""
        if self.kind == "local":
            variable = f"local '{self.name}'" if self.name else "the frame"
            return f"{variable} of {self.function}"
        if self.kind == "global":
            return f"global {self.name} of {self.module}"
        return self.name or "holder unknown"

    @property
    def objects(self) -> str:
        """``bytearray``, ``5 bytearray`` or ``4 bytearray, 1 bytes``."""
        if self.count == 1:
            return next(iter(self.types), "object")
        return ", ".join(f"{n} {t}" for t, n in self.types.items())


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
    index: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    trace_source: str | None = None
    request_id: str | None = None

    def trace_line(self) -> str | None:
        """Its trace and request id on one line, or None if it named neither."""
        parts = []
        if self.trace_id is not None:
            parts.append(f"trace {self.trace_id} span {self.span_id} ({self.trace_source})")
        if self.request_id is not None:
            parts.append(f"request id {self.request_id}")
        number = "" if self.index is None else f" {self.index}"
        head = f"  request{number} {self.method} {self.route or self.path}: "
        return head + ", ".join(parts) if parts else None


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

    def line(self, width: int = SUSPECT_WIDTH) -> str:
        """The suspect on one line: rank, what and where in full, then as much of the detail
        as fits in ``width`` (see :func:`fit`), then the evidence it comes from."""
        head = f"  {self.rank}. {self.what}" + (f"  {self.where}" if self.where else "")
        return f"{head}  {fit(self.detail, width - len(head) - 2)} [{', '.join(self.evidence)}]"


@dataclass
class FindingsResult:
    """The findings of one capture (see the package docstring)."""

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
    #: The largest objects by what holds them, most bytes first.
    holders: list[Holder] = field(default_factory=list)

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
        out.extend(s.line() for s in self.suspects)
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
        traces = [line for r in self.requests if (line := r.trace_line()) is not None]
        if traces:
            out += ["", "Traces of the profiled requests:", *traces[:MAX_TRACE_LINES]]
            if len(traces) > MAX_TRACE_LINES:
                out.append(f"  ... and {len(traces) - MAX_TRACE_LINES} more (see the manifest)")
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
            out.append(f"  {e.count}x {type_name(e.type)}: {clip(e.message, 60)}{place}"
                       f"{requests}")
        if len(self.exceptions) > ITEMS_PER_SECTION:
            out.append(f"  ... and {len(self.exceptions) - ITEMS_PER_SECTION} more places")
        return out

    def _render_heap(self) -> list[str]:
        out: list[str] = []
        if self.allocations or self.growth_bytes is not None:
            net = fmt_bytes(self.growth_bytes, True) if self.growth_bytes is not None else "?"
            out += ["", f"Heap growth during the capture (net {net}), by app line:"]
            if not self.allocations:
                out.append("  none in the app's own code")
            for a in self.allocations[:ITEMS_PER_SECTION]:
                code = f": {clip(a.code, 50)}" if a.code else ""
                function = f" in {a.function}" if a.function else ""
                out.append(f"  {fmt_bytes(a.size_diff, True)} in {a.count_diff:+d} blocks"
                           f"{function}  {a.where}{code}")
        if self.types:
            out += ["", "Types that grew:"]
            out.extend(f"  {t.type}: {t.count_diff:+d} objects, {fmt_bytes(t.bytes_diff, True)}"
                       for t in self.types[:ITEMS_PER_SECTION])
        if self.holders:
            out += ["", "Largest objects, by what holds them:"]
            for h in self.holders[:ITEMS_PER_SECTION]:
                via = f" ({h.via})" if h.via else ""
                where = f"  {h.where}" if h.where else ""
                out.append(f"  {fmt_bytes(h.bytes)} in {h.objects}, held by {h.label}{via}"
                           f"{where}")
        return out


# -- helpers --------------------------------------------------------------------------


def type_name(name: str) -> str:
    return name.removeprefix("builtins.")


def clip(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: max(width - 3, 0)]
    if " " in cut and len(cut) > 10:
        cut = cut.rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "..."


def fit(detail: str, width: int) -> str:
    """As many whole ``"; "``-separated parts of ``detail`` as fit in ``width``: only the
    first part (when even it does not fit) or the last one is shortened, by words; a middle
    part that does not fit is left out with the rest (``"; ..."``)."""
    detail = " ".join(detail.split())
    if len(detail) <= width:
        return detail
    first, *rest = detail.split("; ")
    if len(first) + 5 > width:
        return clip(first, max(width, 50))
    kept = first
    for i, part in enumerate(rest):
        room = width - len(kept) - 2
        if len(part) <= room:
            kept += "; " + part
        elif i == len(rest) - 1 and room >= 20 and " " in part[: room - 3]:
            return f"{kept}; {clip(part, room)}"
        else:
            return kept + "; ..."
    return kept


def fmt_bytes(size: int, signed: bool = False) -> str:
    sign = ("+" if size >= 0 else "-") if signed else ("-" if size < 0 else "")
    value = float(abs(size))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{sign}{value:.1f} {unit}"
    return f"{sign}{value / 1024:.1f} TiB"
