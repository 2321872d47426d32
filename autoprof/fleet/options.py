"""The check of the ``fleet`` option (called from :func:`autoprof.config_checks.validate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprof.option_text import check

if TYPE_CHECKING:
    from autoprof.config import Settings


def check_options(settings: Settings) -> None:
    """``fleet`` is a bool."""
    check(isinstance(settings.fleet, bool), f"fleet must be True or False, got {settings.fleet!r}")
