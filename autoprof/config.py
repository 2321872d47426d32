"""Settings and rules, validated when they are made, from keywords, the environment or app.config.

Every option has a default a production app can rely on (see the table in README.md). Options
given as strings (environment variables ``AUTOPROF_*``, Flask ``app.config`` keys) go through
:meth:`Settings.options_from_mapping`, which parses and names the key in every error.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprof.config_checks import (
    ADMIN_TOKEN_MIN,
    DEFAULT_PROFILE_FORMATS,
    PROFILE_FORMATS,
    validate,
)
from autoprof.option_text import (
    ENV_PREFIX,
    ConfigError,
    check_names,
    parse_duration,
    parse_options,
    parse_size,
)
from autoprof.redact import Redactor, redact_default
from autoprof.rule import (
    CPU_DEFAULT,
    ERROR_RATE_DEFAULT,
    LATENCY_DEFAULT,
    LOOP_LAG_DEFAULT,
    MEM_DEFAULT,
    MEMORY_METRICS,
    METRICS,
    ROUTE_METRICS,
    RSS_DEFAULT,
    RSS_GROWTH_DEFAULT,
    RSS_GROWTH_FLOOR_MIB,
    RULE_DEFAULTS,
    UNITS,
    Rule,
)
from autoprof.secret import SECRET_OPTIONS, Secret, hide_secrets

if TYPE_CHECKING:
    from autoprof.admin.http import AdminRequest
    from autoprof.notify import CaptureEvent

__all__ = [
    "ADMIN_TOKEN_MIN",
    "CPU_DEFAULT",
    "ENV_PREFIX",
    "ERROR_RATE_DEFAULT",
    "LATENCY_DEFAULT",
    "LOOP_LAG_DEFAULT",
    "MEMORY_METRICS",
    "MEM_DEFAULT",
    "METRICS",
    "PROFILE_FORMATS",
    "ROUTE_METRICS",
    "RSS_DEFAULT",
    "RSS_GROWTH_DEFAULT",
    "RSS_GROWTH_FLOOR_MIB",
    "RULE_DEFAULTS",
    "SECRET_OPTIONS",
    "UNITS",
    "ConfigError",
    "Rule",
    "Settings",
    "parse_duration",
    "parse_size",
]

def _default_dump_dir() -> str:
    return str(Path(tempfile.gettempdir()) / f"autoprof-{os.getuid()}")


@dataclass(frozen=True)
class Settings:
    """Everything autoprof can be told. All keyword-only; see README.md for the table.

    Durations are seconds; rules are :class:`Rule` or ``None`` (off). ``mem_rule`` judges the
    RSS in percent of the memory limit (a container's cgroup limit, else host RAM);
    ``rss_rule`` the RSS in MiB (default: 200 MiB above the window's average, a one-off big
    allocation); ``rss_growth_rule`` the RSS growth in percent over the process's own settled
    baseline (the mean RSS of the ``window`` samples after the first ``window``; moved up to
    the RSS of each firing acted on; growth under 32 MiB counts as none), which catches a
    steady leak on a host without a memory limit. ``latency_rule`` judges
    each route's p95 in milliseconds, ``error_rate_rule`` the share of 5xx responses in percent
    and ``loop_lag_rule`` the event loop's worst lag in milliseconds, each over one
    ``collect_interval``; intervals with fewer than ``rule_min_requests`` requests (of that route,
    for latency) are not judged. While the process CPU is above ``cpu_max`` (percent, ``None``
    for no ceiling) a capture keeps to the cheap evidence (thread stacks, the all-threads
    profile) and profiles no request; no more than ``captures_per_window`` rule-opened captures
    open in any ``captures_window`` seconds. ``heap_growth`` applies to captures opened by a
    memory rule (mem, rss, rss_growth): tracemalloc slows allocation-heavy code several
    times over, which would distort the CPU profiles of other captures. The ``admin_*``
    options turn on and guard the admin route (:mod:`autoprof.admin`); ``admin=True`` needs
    ``admin_token`` or ``admin_authorize`` (checked when the process starts serving, see
    :attr:`admin_unguarded`), and the token never appears in a repr or an error. ``redact``
    masks exception messages before they go into dumps (:mod:`autoprof.redact`).
    ``profile_formats`` picks from html, speedscope, text and pprof (a gzipped profile.proto for
    ``go tool pprof``, Pyroscope, Grafana, Parca; :mod:`autoprof.pprof`), default the first three.
    ``server_timing`` adds ``Server-Timing: autoprof;desc="<capture id>"`` to the responses of
    profiled requests (:mod:`autoprof.tracing`).
    ``sink`` (an fsspec URL: ``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``,
    ``memory://``; credentials only from the provider's environment) uploads every capture
    there from the "autoprof-uploader" thread, retrying up to ``sink_retry_max`` seconds
    apart, and keeps the local copy unless ``sink_keep_local`` is off (:mod:`autoprof.sink`);
    ``host`` names this host there (default: ``POD_NAME``, ``HOSTNAME``, the machine's name).
    ``on_capture`` (a function taking a :class:`autoprof.notify.CaptureEvent`) and
    ``on_capture_url`` (a webhook, JSON POST; hidden like a token) hear of every capture once
    it is written and uploaded (:mod:`autoprof.notify`).
    ``fleet`` (on by default): the worker processes sharing ``dump_dir`` (gunicorn, uvicorn
    ``--workers``) publish their status in ``dump_dir/.workers/``, the admin status page lists
    them all, and a manual trigger opens a capture in every one (:mod:`autoprof.fleet`).
    """

    enabled: bool = True
    collect_interval: float = 10.0
    window: int = 10
    cooldown: float = 60.0
    cpu_rule: Rule | None = CPU_DEFAULT
    mem_rule: Rule | None = MEM_DEFAULT
    rss_rule: Rule | None = RSS_DEFAULT
    rss_growth_rule: Rule | None = RSS_GROWTH_DEFAULT
    inflight_rule: Rule | None = None
    threads_rule: Rule | None = None
    latency_rule: Rule | None = LATENCY_DEFAULT
    error_rate_rule: Rule | None = ERROR_RATE_DEFAULT
    loop_lag_rule: Rule | None = LOOP_LAG_DEFAULT
    rule_min_requests: int = 5
    loop_check_interval: float = 0.1
    cpu_max: float | None = 95.0
    captures_per_window: int = 10
    captures_window: float = 3600.0
    requests: int = 5
    path_filter: str | None = None
    capture_timeout: float = 60.0
    profiler_interval: float = 0.001
    dump_dir: str = field(default_factory=_default_dump_dir)
    max_bytes: int = 200 * 2**20
    max_captures: int = 50
    profile_formats: tuple[str, ...] = DEFAULT_PROFILE_FORMATS
    heap_census: bool = True
    heap_growth: bool = True
    heap_frames: int = 10
    thread_stacks: bool = True
    thread_profile: bool = True
    sampler_interval: float = 0.02
    flight_recorder: float = 30.0
    flight_recorder_interval: float = 0.1
    flight_recorder_budget: float = 0.5
    admin: bool = False
    admin_prefix: str = "/_autoprof"
    admin_token: Secret | None = field(default=None, repr=False)
    admin_authorize: Callable[[AdminRequest], bool] | None = None
    admin_max_failures: int = 5
    admin_lockout: float = 300.0
    server_timing: bool = False
    sink: str | None = None
    sink_keep_local: bool = True
    sink_retry_max: float = 60.0
    host: str | None = None
    on_capture: Callable[[CaptureEvent], object] | None = None
    on_capture_url: Secret | str | None = field(default=None, repr=False)
    fleet: bool = True
    redact: Redactor = redact_default

    def __post_init__(self) -> None:
        validate(self)

    @property
    def admin_unguarded(self) -> str | None:
        """Why the admin route, turned on, lets nobody in (no token, no ``admin_authorize``), or
        None. Not an error at construction: a command that serves no request (``flask init-db``)
        needs no token; the controller reports it, once, when it starts serving."""
        if not self.admin or self.admin_token is not None or self.admin_authorize is not None:
            return None
        return (
            "admin=True needs a guard: set admin_token (AUTOPROF_ADMIN_TOKEN, at least "
            f"{ADMIN_TOKEN_MIN} characters) or admin_authorize=a function(request) -> bool; "
            "until then the admin route refuses every request"
        )

    @property
    def rules(self) -> dict[str, Rule]:
        """The enabled rules by metric name."""
        return {
            metric: rule
            for metric in METRICS + ROUTE_METRICS
            if (rule := getattr(self, f"{metric}_rule")) is not None
        }

    @classmethod
    def build(cls, **options: Any) -> Settings:
        """Like ``Settings(**options)`` but an unknown name gets a did-you-mean message."""
        options = hide_secrets(options)
        check_names(options, {f.name for f in fields(cls)})
        return cls(**options)

    def replace(self, **options: Any) -> Settings:
        """A copy with some options changed (validated like the original)."""
        options = hide_secrets(options)
        check_names(options, {f.name for f in fields(self)})
        return dataclasses.replace(self, **options)

    @classmethod
    def options_from_mapping(
        cls, mapping: Mapping[str, Any], *, prefix: str = ENV_PREFIX, source: str = "environment"
    ) -> dict[str, Any]:
        """Parse the ``AUTOPROF_*`` keys of a mapping (os.environ, Flask app.config) to options.

        Values may be strings (``"10"``, ``"1m"``, ``"200MiB"``, ``"10,25,70"``, ``"off"``) or, in
        app.config, already typed values. Unknown ``AUTOPROF_*`` keys are an error, since a typo
        would otherwise be silently ignored.
        """
        types = {f.name: str(f.type) for f in fields(cls)}
        return parse_options(
            mapping, types, prefix=prefix, source=source,
            parse_rule=lambda text, name: Rule.parse(text, name.removesuffix("_rule")),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Settings:
        """Settings from keyword defaults overridden by ``AUTOPROF_*`` environment variables."""
        env = os.environ if environ is None else environ
        return cls.build(**{**options, **cls.options_from_mapping(env)})
