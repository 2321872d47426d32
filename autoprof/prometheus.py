"""autoprof's own metrics for Prometheus (the ``[prometheus]`` extra: ``prometheus_client``).

Call :func:`register` once per controller; the app's own ``/metrics`` then serves them next to
its other metrics, and the admin route serves them alone at ``{admin_prefix}/metrics``::

    import autoprof.prometheus
    autoprof.prometheus.register(ap)

Everything is read from :meth:`autoprof.AutoProf.snapshot` and the monitor's samples, never on
a request: each figure autoprof watches and its rule's threshold (in base units: ratios,
bytes, seconds), each route's p95 latency (the ``max_routes`` worst routes), captures opened by
metric and reason, captures written, rule firings skipped by why, autoprof's internal errors by
place, whether a capture is open, the sink's queue and uploads.

In one process, a collector reads the snapshot at each scrape. Under gunicorn's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set, as prometheus_client documents), a collector would only
speak for the worker that answers the scrape: each worker's monitor thread then writes the
figures after every sample into prometheus_client's multiprocess metrics instead (gauges per
worker with a ``pid`` label, counters summed over workers), which the app's
``MultiProcessCollector`` aggregates.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from autoprof.admin.http import AdminResponse, security_headers
from autoprof.config import ConfigError, Rule

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import REGISTRY, Collector
except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
    raise ConfigError(
        "autoprof.prometheus needs prometheus_client: pip install 'autoprof-web[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from autoprof.controller import AutoProf
    from autoprof.metrics import Sample
    from autoprof.status import Status

__all__ = [
    "AutoProfCollector",
    "MultiprocessWriter",
    "admin_response",
    "exposition",
    "multiprocess",
    "register",
]

PREFIX = "autoprof_"
MAX_ROUTES = 20
"""Routes whose p95 latency is exported at most (the worst first): a bounded label set."""
MIB = 2**20

Kind = Literal["gauge", "counter"]
Mode = Literal["liveall", "livesum", "livemax"]


@dataclass(frozen=True)
class _Watched:
    metric: str
    """autoprof's name: the Sample field and the rule."""
    stem: str
    unit: str
    value_scale: float
    """From the sample's unit to the base unit."""
    rule_scale: float
    """From the rule's unit to the base unit."""
    doc: str

    @property
    def value_name(self) -> str:
        return f"{PREFIX}{self.stem}{'_' + self.unit if self.unit else ''}"

    @property
    def threshold_name(self) -> str:
        return f"{PREFIX}{self.stem}_threshold{'_' + self.unit if self.unit else ''}"


WATCHED = (
    _Watched("cpu", "cpu", "ratio", 0.01, 0.01,
             "CPU used over the last interval, as a ratio of the CPU the process may use"),
    _Watched("mem", "memory", "ratio", 0.01, 0.01,
             "Resident memory as a ratio of the memory limit (cgroup, else host RAM)"),
    _Watched("rss", "rss", "bytes", 1.0, MIB, "Resident set size"),
    _Watched("rss_growth", "rss_growth", "ratio", 0.01, 0.01,
             "Growth of the RSS over its settled baseline, as a ratio"),
    _Watched("inflight", "inflight", "requests", 1.0, 1.0, "Requests in flight"),
    _Watched("threads", "threads", "", 1.0, 1.0, "OS threads of the process"),
    _Watched("error_rate", "error", "ratio", 0.01, 0.01,
             "5xx responses among the last interval's requests, as a ratio"),
    _Watched("loop_lag", "loop_lag", "seconds", 0.001, 0.001,
             "The event loop's worst lag over the last interval"),
)


@dataclass
class Family:
    """One metric family, independent of how it is exported."""

    name: str
    kind: Kind
    doc: str
    labels: tuple[str, ...] = ()
    #: prometheus_client's multiprocess_mode of a gauge (a counter is summed over workers).
    mode: Mode = "liveall"
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float | None, *labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def families(
    status: Status, max_routes: int = MAX_ROUTES, rules: Mapping[str, Rule] | None = None
) -> list[Family]:
    """Every family autoprof exports, from one snapshot; ``rules`` (the settings' rules by
    metric) give the captures counter its zeros."""
    found: list[Family] = []
    sample = status.sample
    for watched in WATCHED:
        value = getattr(sample, watched.metric) if sample is not None else None
        family = Family(watched.value_name, "gauge", watched.doc)
        family.add(None if value is None else value * watched.value_scale)
        found.append(family)
        rule = status.rules.get(watched.metric)
        threshold = rule.threshold if rule is not None else None
        family = Family(watched.threshold_name, "gauge",
                        f"The value that fires the {watched.metric} rule now (after warm-up)")
        family.add(None if threshold is None else threshold * watched.rule_scale)
        found.append(family)
    limits = status.limits
    family = Family(f"{PREFIX}cpu_limit_cores", "gauge", "CPU the process may use")
    family.add(limits.cpu_cores if limits is not None else None)
    found.append(family)
    family = Family(f"{PREFIX}memory_limit_bytes", "gauge", "Memory the process may use")
    family.add(limits.mem_bytes if limits is not None else None)
    found.append(family)
    found += _routes(status, max_routes)
    found += _counters(status, rules or {})
    state = Family(f"{PREFIX}capture_open", "gauge", "Whether a capture is open (1) or not",
                   mode="livesum")
    state.add(1.0 if status.capture is not None else 0.0)
    paused = Family(f"{PREFIX}capturing_paused", "gauge",
                    "Whether capturing is paused after repeated failures (circuit breaker)",
                    mode="livemax")
    paused.add(1.0 if status.breaker.get("state") == "open" else 0.0)
    running = Family(f"{PREFIX}monitor_running", "gauge", "Whether the monitor thread runs")
    running.add(1.0 if status.running else 0.0)
    return [*found, state, paused, running, *_sink(status)]


def _sink(status: Status) -> list[Family]:
    """The uploads to the sink (no samples without one) and the on_capture notifications."""
    sink, notify = status.sink, status.notify
    queued = Family(f"{PREFIX}sink_queued_captures", "gauge",
                    "Captures this process is uploading to the sink or will retry",
                    mode="livesum")
    waiting = Family(f"{PREFIX}sink_waiting_captures", "gauge",
                     "Captures of any process in the dump directory not yet uploaded",
                     mode="livemax")
    uploaded = Family(f"{PREFIX}sink_uploads_total", "counter", "Captures uploaded to the sink")
    failed = Family(f"{PREFIX}sink_failed_attempts_total", "counter",
                    "Upload attempts that failed (retried later)")
    lost = Family(f"{PREFIX}sink_lost_total", "counter",
                  "Captures deleted locally before they could be uploaded")
    if sink is not None:
        queued.add(sink.queued)
        waiting.add(sink.waiting_on_disk)
        uploaded.add(sink.uploaded)
        failed.add(sink.failed_attempts)
        lost.add(sink.lost)
    notified = Family(f"{PREFIX}notifications_total", "counter",
                      "on_capture notifications by outcome (sent, failed, dropped)", ("outcome",))
    if notify is not None:
        for outcome, count in (("sent", notify.sent), ("failed", notify.failed),
                               ("dropped", notify.dropped)):
            notified.add(count, outcome)
    return [queued, waiting, uploaded, failed, lost, notified]


def _routes(status: Status, max_routes: int) -> list[Family]:
    labels = ("method", "route")
    p95 = Family(f"{PREFIX}route_latency_p95_seconds", "gauge",
                 "p95 latency of the route's recent requests (the worst routes)", labels)
    threshold = Family(f"{PREFIX}route_latency_threshold_seconds", "gauge",
                       "The p95 that fires the latency rule for the route now", labels)
    for row in status.routes[:max_routes]:
        method, _, route = str(row["route"]).partition(" ")
        for family, key in ((p95, "p95_ms"), (threshold, "threshold_ms")):
            value = row.get(key)
            family.add(None if value is None else value / 1000.0, method, route)
    return [p95, threshold]


def _counters(status: Status, rules: Mapping[str, Rule]) -> list[Family]:
    opened = Family(f"{PREFIX}captures_opened_total", "counter",
                    "Captures opened, by the metric and reason of the rule that opened them "
                    "(manual: a manual trigger)", ("metric", "reason"))
    known = {("manual", "manual"): 0}
    for metric, rule in rules.items():  # zeros first, so that increase() sees the first one
        for reason, setting in (("abs", rule.abs), ("diff", rule.diff), ("rise", rule.rise)):
            if setting is not None:
                known[(metric, reason)] = 0
    for metric, reasons in status.captures_opened.items():
        for reason, count in reasons.items():
            known[(metric, reason)] = count
    for (metric, reason), count in sorted(known.items()):
        opened.add(count, metric, reason)
    written = Family(f"{PREFIX}captures_written_total", "counter",
                     "Captures written to the dump directory")
    written.add(status.captures_written)
    skipped = Family(f"{PREFIX}firings_skipped_total", "counter",
                     "Rule firings that opened no capture, by why", ("why",))
    for why, count in sorted(status.skipped.items()):
        skipped.add(count, why)
    errors = Family(f"{PREFIX}errors_total", "counter",
                    "autoprof's own failures (counted, never raised), by place", ("place",))
    for place, count in sorted(status.errors.items()):
        errors.add(count, place)
    return [opened, written, skipped, errors]


class AutoProfCollector(Collector):
    """A collector that reads ``ap.snapshot()`` at each scrape (one process)."""

    def __init__(self, ap: AutoProf, *, max_routes: int = MAX_ROUTES) -> None:
        self._ap = ap
        self._max_routes = max_routes

    def collect(self) -> Iterator[Metric]:
        try:
            ap = self._ap
            found = families(ap.snapshot(), self._max_routes, ap.settings.rules)
        except Exception as exc:
            self._ap.errors.record("prometheus.collect", exc)
            return
        for family in found:
            metric: Metric
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.doc, labels=family.labels)
            else:
                metric = GaugeMetricFamily(family.name, family.doc, labels=family.labels)
            for labels, value in family.samples:
                metric.add_metric(list(labels), value)
            yield metric


class MultiprocessWriter:
    """Writes the families into prometheus_client's multiprocess metrics after each sample
    (on the monitor thread): gauges with their ``multiprocess_mode``, counters by their rise
    since the last write. A labelled gauge keeps every label set it ever wrote (the
    multiprocess files cannot drop one): a route no longer among the worst reads NaN."""

    def __init__(self, ap: AutoProf, *, max_routes: int = MAX_ROUTES) -> None:
        self._ap = ap
        self._max_routes = max_routes
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._written: dict[str, set[tuple[str, ...]]] = {}
        self._counted: dict[tuple[str, tuple[str, ...]], float] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def write(self, sample: Sample | None = None) -> None:
        """Write the current figures (``sample`` is unused: the snapshot holds it); a failure
        is counted, never raised (this runs on the monitor thread, before the rules)."""
        try:
            self._write()
        except Exception as exc:
            self._ap.errors.record("prometheus.write", exc)

    def _write(self) -> None:
        status = self._ap.snapshot()
        with self._lock:
            if os.getpid() != self._pid:  # a forked child counts from its own zero
                self._pid, self._counted = os.getpid(), {}
            for family in families(status, self._max_routes, self._ap.settings.rules):
                if family.kind == "counter":
                    self._count(family)
                else:
                    self._set(family)

    def _count(self, family: Family) -> None:
        metric = self._counters.get(family.name)
        if metric is None:
            metric = Counter(family.name, family.doc, family.labels, registry=None)
            self._counters[family.name] = metric
        for labels, value in family.samples:
            key = (family.name, labels)
            last = self._counted.get(key)
            rise = value - (last or 0.0)
            self._counted[key] = value
            if last is None or rise > 0:
                (metric.labels(*labels) if labels else metric).inc(max(0.0, rise))

    def _set(self, family: Family) -> None:
        written = self._written.setdefault(family.name, set())
        if not family.samples and not written:
            return  # never known: no series at all rather than a made-up 0
        metric = self._gauges.get(family.name)
        if metric is None:
            metric = Gauge(family.name, family.doc, family.labels, registry=None,
                           multiprocess_mode=family.mode)
            self._gauges[family.name] = metric
        values = dict(family.samples)
        for labels, _ in family.samples:
            if labels in written or len(written) < max(1, self._max_routes):
                written.add(labels)
        for labels in written:
            (metric.labels(*labels) if labels else metric).set(values.get(labels, math.nan))


_registered: weakref.WeakKeyDictionary[AutoProf, AutoProfCollector | MultiprocessWriter] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def multiprocess() -> bool:
    """Whether prometheus_client runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def register(
    ap: AutoProf,
    registry: CollectorRegistry | None = None,
    *,
    max_routes: int = MAX_ROUTES,
) -> AutoProfCollector | MultiprocessWriter:
    """Export ``ap``'s metrics to Prometheus; once per controller (a second call returns the
    first's exporter).

    In one process, an :class:`AutoProfCollector` joins ``registry`` (default: the
    prometheus_client default registry, which ``make_asgi_app()`` / ``make_wsgi_app()``
    serve). In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set), a
    :class:`MultiprocessWriter` writes them from each worker's monitor thread after every
    sample; ``registry`` is not used (serve a registry with a ``MultiProcessCollector``).
    ``max_routes``: the worst routes whose p95 latency is exported."""
    with _lock:
        found = _registered.get(ap)
        if found is not None:
            return found
        exporter: AutoProfCollector | MultiprocessWriter
        if multiprocess():
            exporter = MultiprocessWriter(ap, max_routes=max_routes)
            ap.dispatcher.sample_listeners.append(exporter.write)
        else:
            exporter = AutoProfCollector(ap, max_routes=max_routes)
            (REGISTRY if registry is None else registry).register(exporter)
        _registered[ap] = exporter
        return exporter


class _Ours(Collector):
    """Only autoprof's families of another collector."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterable[Metric]:
        return [m for m in self._collector.collect() if m.name.startswith(PREFIX)]


def exposition(ap: AutoProf) -> tuple[bytes, str]:
    """autoprof's metrics in the text exposition format, and its content type: every worker's
    when this controller writes them in multiprocess mode, else this process's."""
    registry = CollectorRegistry(auto_describe=False)
    if isinstance(_registered.get(ap), MultiprocessWriter) and multiprocess():
        registry.register(_Ours(MultiProcessCollector(None)))  # type: ignore[no-untyped-call]
    else:
        registry.register(AutoProfCollector(ap))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def admin_response(ap: AutoProf) -> AdminResponse:
    """The admin route's ``/metrics`` answer (:func:`exposition`)."""
    body, content_type = exposition(ap)
    return AdminResponse(200, [*security_headers(), ("Content-Type", content_type)], body)
