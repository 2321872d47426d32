"""The checks of the sink and notification options (called by
:func:`autoprof.config_checks.validate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprof.notify import check_notify
from autoprof.option_text import check, is_number
from autoprof.sink.layout import host_name
from autoprof.sink.target import check_sink_url

if TYPE_CHECKING:
    from autoprof.config import Settings

__all__ = ["check_delivery"]


def check_delivery(settings: Settings) -> None:
    """Validate ``sink``, ``sink_keep_local``, ``sink_retry_max``, ``host``, ``on_capture``
    and ``on_capture_url`` (normalising ``sink``, ``host`` and the webhook URL in place)."""
    object.__setattr__(settings, "sink", check_sink_url(settings.sink))
    check(isinstance(settings.sink_keep_local, bool), "sink_keep_local must be True or False")
    retry = settings.sink_retry_max
    check(is_number(retry) and retry >= 1,
          f"sink_retry_max must be seconds >= 1 (the longest wait between attempts), got {retry!r}")
    host = settings.host
    if host is not None:
        check(isinstance(host, str), f"host must be a name such as web-1, got {host!r}")
        name = host_name({"AUTOPROF_HOST": host}) if host.strip() else None
        check(name != "host" or host.strip().lower() == "host",
              f"host must hold letters or digits (a name such as web-1), got {host!r}")
        object.__setattr__(settings, "host", name)
    check_notify(settings)
