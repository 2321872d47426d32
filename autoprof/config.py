"""Settings and rules, validated when they are made, from keywords, the environment or app.config.

Every option has a default a production app can rely on (see the table in README.md). Options
given as strings (environment variables ``AUTOPROF_*``, Flask ``app.config`` keys) go through
:meth:`Settings.options_from_mapping`, which parses and names the key in every error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprof.option_text import (
    ENV_PREFIX,
    ConfigError,
    check,
    check_names,
    is_number,
    parse_duration,
    parse_options,
    parse_size,
)
from autoprof.redact import Redactor, redact_default, redact_option
from autoprof.rule_text import rule_changes
from autoprof.secret import SECRET_OPTIONS, Secret, hide_secrets

if TYPE_CHECKING:
    from autoprof.admin.http import AdminRequest

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

METRICS = ("cpu", "mem", "rss", "rss_growth", "inflight", "threads", "error_rate", "loop_lag")
"""Process-wide metrics, one rule each (``<metric>_rule``), judged every ``collect_interval``."""
MEMORY_METRICS = ("mem", "rss", "rss_growth")
"""Metrics about memory: captures they open (or join) trace allocations with tracemalloc."""
ROUTE_METRICS = ("latency",)
"""Per-route metrics: one rule, judged for each route (path template) on its own history."""
UNITS = {
    "cpu": "%",
    "mem": "%",
    "rss": " MiB",
    "rss_growth": "%",
    "error_rate": "%",
    "latency": " ms",
    "loop_lag": " ms",
}
RSS_GROWTH_FLOOR_MIB = 32.0
"""``rss_growth`` counts no growth smaller than this (MiB) over the settled baseline, so a small
app filling its caches (30 -> 45 MB is +50 %) stays quiet."""
PROFILE_FORMATS = ("html", "speedscope", "text")
ADMIN_TOKEN_MIN = 16
_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


@dataclass(frozen=True)
class Rule:
    """When a metric's newest sample opens a capture (Holmes's ``WithMemDump(min, diff, abs)``).

    :param min: floor: never fire below this value (for cpu and mem, a percentage).
    :param diff: fire on a sudden rise of this many percent over the average of the window.
        ``None`` disables the rise test.
    :param abs: fire whenever the value reaches this absolute level. ``None`` disables it.
    :param cooldown: seconds after a firing during which this rule stays quiet; ``None`` means
        the global ``cooldown`` setting.
    :param rise: (keyword only) fire on a rise of this much, in the metric's own unit, over the
        average of the window: ``Rule(min=0, diff=None, rise=200)`` on ``rss`` fires when the
        RSS is 200 MiB above its recent average. ``None`` (the default) disables it.

    ``Rule(3, 25, 80)`` is the seed article's memory rule: floor 3 %, a 25 % jump over the
    recent average, or 80 % of the memory limit. The value that fires is
    ``max(min, min(abs, avg * (1 + diff/100), avg + rise))`` over the tests that are set.
    """

    min: float = 0.0
    diff: float | None = 25.0
    abs: float | None = None
    cooldown: float | None = None
    rise: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not is_number(self.min) or self.min < 0:
            raise ConfigError(f"Rule min must be a number >= 0, got {self.min!r}")
        if self.diff is None and self.abs is None and self.rise is None:
            raise ConfigError(
                "Rule needs diff, abs or rise (any of them): with none it can never fire"
            )
        for name in ("diff", "abs", "cooldown", "rise"):
            value = getattr(self, name)
            if value is not None and (not is_number(value) or value < 0):
                raise ConfigError(f"Rule {name} must be a number >= 0 or None, got {value!r}")

    @classmethod
    def parse(cls, text: str, metric: str | None = None) -> Rule | None:
        """The rule a string describes for ``metric``, on top of that metric's default (a
        partial string changes only the parts it names), or None for ``"off"``.

        ``"3,25,80"``, ``"min=500"``, ``"10,25,70,5m"``, ``"rise=300MiB,cooldown=10m"``,
        ``"diff=-"`` (unset a part), ``"off"``; see :mod:`autoprof.rule_text` for the units.
        Without ``metric`` the base is ``Rule()`` and levels are plain numbers.
        """
        changes = rule_changes(text, UNITS.get(metric or "", "").strip())
        if changes is None:
            return None
        base = RULE_DEFAULTS.get(metric or "") or cls()
        values: dict[str, Any] = dict(changes)  # min is never None: rule_changes refuses it
        try:
            return dataclasses.replace(base, **values)
        except ConfigError as exc:
            raise ConfigError(f"rule {text!r}: {exc}") from None


CPU_DEFAULT = Rule(min=10, diff=25, abs=70)
MEM_DEFAULT = Rule(min=10, diff=25, abs=80)
RSS_DEFAULT = Rule(min=0, diff=None, abs=None, rise=200)
# rise 200 MiB, not 256: a one-off 256 MiB allocation must fire even when the window's average
# sits a little above the RSS it started from (noise, a cache still filling).
RSS_GROWTH_DEFAULT = Rule(min=0, diff=None, abs=50)
LATENCY_DEFAULT = Rule(min=200, diff=100, abs=None)
ERROR_RATE_DEFAULT = Rule(min=5, diff=100, abs=50)
LOOP_LAG_DEFAULT = Rule(min=100, diff=200, abs=1000)
RULE_DEFAULTS: dict[str, Rule | None] = {
    "cpu": CPU_DEFAULT,
    "mem": MEM_DEFAULT,
    "rss": RSS_DEFAULT,
    "rss_growth": RSS_GROWTH_DEFAULT,
    "inflight": None,
    "threads": None,
    "latency": LATENCY_DEFAULT,
    "error_rate": ERROR_RATE_DEFAULT,
    "loop_lag": LOOP_LAG_DEFAULT,
}
"""Each metric's default rule: what a rule string changes (None: off, and ``Rule()`` is the
base a string changes)."""


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
    profile_formats: tuple[str, ...] = PROFILE_FORMATS
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
    redact: Redactor = redact_default

    def __post_init__(self) -> None:
        check(isinstance(self.enabled, bool), "enabled must be True or False")
        for name in (
            "collect_interval",
            "capture_timeout",
            "profiler_interval",
            "sampler_interval",
            "flight_recorder_interval",
            "loop_check_interval",
            "captures_window",
        ):
            value = getattr(self, name)
            check(is_number(value) and value > 0, f"{name} must be seconds > 0, got {value!r}")
        for name in ("cooldown", "flight_recorder"):
            value = getattr(self, name)
            check(is_number(value) and value >= 0, f"{name} must be seconds >= 0, got {value!r}")
        for name in ("window", "requests", "max_captures", "max_bytes", "heap_frames",
                     "rule_min_requests", "captures_per_window", "admin_max_failures"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name} must be a whole number >= 1, got {value!r}",
            )
        check(self.max_bytes >= 2**16, f"max_bytes must be at least 64 KiB, got {self.max_bytes}")
        check(
            is_number(self.flight_recorder_budget) and self.flight_recorder_budget > 0,
            "flight_recorder_budget must be a percentage of one core > 0, got "
            f"{self.flight_recorder_budget!r}",
        )
        check(
            self.cpu_max is None or (is_number(self.cpu_max) and self.cpu_max > 0),
            f"cpu_max must be a percentage > 0 or None (no ceiling), got {self.cpu_max!r}",
        )
        for metric in METRICS + ROUTE_METRICS:
            rule = getattr(self, f"{metric}_rule")
            check(
                rule is None or isinstance(rule, Rule),
                f"{metric}_rule must be autoprof.Rule(min, diff, abs) or None, got {rule!r}",
            )
        formats = self.profile_formats
        if isinstance(formats, str):
            formats = tuple(f.strip() for f in formats.split(",") if f.strip())
            object.__setattr__(self, "profile_formats", formats)
        unknown = set(formats) - set(PROFILE_FORMATS)
        check(not unknown, f"profile_formats {sorted(unknown)} unknown; use {PROFILE_FORMATS}")
        if self.path_filter is not None:
            try:
                re.compile(self.path_filter)
            except re.error as exc:
                raise ConfigError(
                    f"path_filter {self.path_filter!r} is not a valid regular expression: {exc}"
                ) from None
        object.__setattr__(self, "dump_dir", os.fspath(self.dump_dir))
        check(
            os.path.isabs(self.dump_dir),
            f"dump_dir must be an absolute path, got {self.dump_dir!r}: a relative one would "
            "depend on the directory the server happens to start in; write it in full, e.g. "
            "/var/tmp/autoprof",
        )
        self._check_admin()
        object.__setattr__(self, "redact", redact_option(self.redact))

    def _check_admin(self) -> None:
        check(isinstance(self.admin, bool), "admin must be True or False")
        prefix = self.admin_prefix
        check(
            isinstance(prefix, str) and _PREFIX_RE.fullmatch(prefix) is not None,
            f"admin_prefix must be a path like /_autoprof: starting with '/', no trailing '/', "
            f"segments of letters, digits and . _ ~ - (not starting with '.'), got {prefix!r}",
        )
        token = self.admin_token
        if isinstance(token, str):
            token = Secret(token)
            object.__setattr__(self, "admin_token", token)
        if token is not None:
            text = token.reveal() if isinstance(token, Secret) else None
            check(
                isinstance(text, str)
                and len(text) >= ADMIN_TOKEN_MIN
                and text.isascii()
                and text.isprintable()
                and not any(c.isspace() for c in text),
                f"admin_token must be at least {ADMIN_TOKEN_MIN} printable ASCII characters "
                "without spaces; make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        check(
            self.admin_authorize is None or callable(self.admin_authorize),
            "admin_authorize must be a function taking the admin request and returning a bool",
        )
        check(
            is_number(self.admin_lockout) and self.admin_lockout > 0,
            f"admin_lockout must be seconds > 0, got {self.admin_lockout!r}",
        )

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
