"""The checks every :class:`~autoprof.config.Settings` passes when it is made: each failure is
a :class:`~autoprof.option_text.ConfigError` that says what to write instead."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from autoprof import tracing
from autoprof.fleet.options import check_options as check_fleet
from autoprof.option_text import ConfigError, check, is_number
from autoprof.redact import redact_option
from autoprof.rule import METRICS, ROUTE_METRICS, Rule
from autoprof.secret import Secret
from autoprof.sink.options import check_delivery

if TYPE_CHECKING:
    from autoprof.config import Settings

PROFILE_FORMATS = ("html", "speedscope", "text", "pprof")
"""Every profile format (:data:`autoprof.render.FORMATS`); pprof is a gzipped profile.proto."""
DEFAULT_PROFILE_FORMATS = ("html", "speedscope", "text")
ADMIN_TOKEN_MIN = 16
_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")

def validate(settings: Settings) -> None:
    """Check every option of ``settings`` (normalising a few in place); raise ConfigError
    saying what to do."""
    check(isinstance(settings.enabled, bool), "enabled must be True or False")
    for name in (
        "collect_interval",
        "capture_timeout",
        "profiler_interval",
        "sampler_interval",
        "flight_recorder_interval",
        "loop_check_interval",
        "captures_window",
    ):
        value = getattr(settings, name)
        check(is_number(value) and value > 0, f"{name} must be seconds > 0, got {value!r}")
    for name in ("cooldown", "flight_recorder"):
        value = getattr(settings, name)
        check(is_number(value) and value >= 0, f"{name} must be seconds >= 0, got {value!r}")
    for name in ("window", "requests", "max_captures", "max_bytes", "heap_frames",
                 "rule_min_requests", "captures_per_window", "admin_max_failures"):
        value = getattr(settings, name)
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{name} must be a whole number >= 1, got {value!r}",
        )
    check(
        settings.max_bytes >= 2**16, f"max_bytes must be at least 64 KiB, got {settings.max_bytes}"
    )
    check(
        is_number(settings.flight_recorder_budget) and settings.flight_recorder_budget > 0,
        "flight_recorder_budget must be a percentage of one core > 0, got "
        f"{settings.flight_recorder_budget!r}",
    )
    check(
        settings.cpu_max is None or (is_number(settings.cpu_max) and settings.cpu_max > 0),
        f"cpu_max must be a percentage > 0 or None (no ceiling), got {settings.cpu_max!r}",
    )
    for metric in METRICS + ROUTE_METRICS:
        rule = getattr(settings, f"{metric}_rule")
        check(
            rule is None or isinstance(rule, Rule),
            f"{metric}_rule must be autoprof.Rule(min, diff, abs) or None, got {rule!r}",
        )
    formats = settings.profile_formats
    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(",") if f.strip())
        object.__setattr__(settings, "profile_formats", formats)
    unknown = set(formats) - set(PROFILE_FORMATS)
    check(not unknown, f"profile_formats {sorted(unknown)} unknown; use {PROFILE_FORMATS}")
    if settings.path_filter is not None:
        try:
            re.compile(settings.path_filter)
        except re.error as exc:
            raise ConfigError(
                f"path_filter {settings.path_filter!r} is not a valid regular expression: {exc}"
            ) from None
    object.__setattr__(settings, "dump_dir", os.fspath(settings.dump_dir))
    check(
        os.path.isabs(settings.dump_dir),
        f"dump_dir must be an absolute path, got {settings.dump_dir!r}: a relative one would "
        "depend on the directory the server happens to start in; write it in full, e.g. "
        "/var/tmp/autoprof",
    )
    _check_admin(settings)
    tracing.check_options(settings)
    check_delivery(settings)
    check_fleet(settings)
    object.__setattr__(settings, "redact", redact_option(settings.redact))

def _check_admin(settings: Settings) -> None:
    check(isinstance(settings.admin, bool), "admin must be True or False")
    prefix = settings.admin_prefix
    check(
        isinstance(prefix, str) and _PREFIX_RE.fullmatch(prefix) is not None,
        f"admin_prefix must be a path like /_autoprof: starting with '/', no trailing '/', "
        f"segments of letters, digits and . _ ~ - (not starting with '.'), got {prefix!r}",
    )
    token = settings.admin_token
    if isinstance(token, str):
        token = Secret(token)
        object.__setattr__(settings, "admin_token", token)
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
        settings.admin_authorize is None or callable(settings.admin_authorize),
        "admin_authorize must be a function taking the admin request and returning a bool",
    )
    check(
        is_number(settings.admin_lockout) and settings.admin_lockout > 0,
        f"admin_lockout must be seconds > 0, got {settings.admin_lockout!r}",
    )
