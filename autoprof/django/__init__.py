"""Django integration (extra ``autoprof-web[django]``).

In ``settings.py``::

    INSTALLED_APPS = [..., "autoprof.django"]          # system checks
    MIDDLEWARE = ["autoprof.django.AutoProfMiddleware", ...]   # first
    AUTOPROF = {"dump_dir": "/var/tmp/autoprof"}       # AutoProf's keyword options

and, for the admin route (``"admin": True`` and a guard), in ``urls.py``::

    path("_autoprof/", include("autoprof.django.urls"))

:func:`get_autoprof` returns the process's controller (``status()``, ``trigger()``).
"""

from __future__ import annotations

from autoprof.django.conf import get_autoprof
from autoprof.django.middleware import AutoProfMiddleware

__all__ = ["AutoProfMiddleware", "get_autoprof"]
