"""The Django app: ``"autoprof.django"`` in ``INSTALLED_APPS`` registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]


class AutoProfConfig(AppConfig):  # type: ignore[misc]
    """autoprof's app config (label ``autoprof``): its checks run with ``manage.py check``,
    ``runserver`` and ``migrate``."""

    name = "autoprof.django"
    label = "autoprof"
    verbose_name = "autoprof"

    def ready(self) -> None:
        from autoprof.django.checks import check_autoprof

        checks.register(check_autoprof, "autoprof")
