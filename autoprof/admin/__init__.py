"""The guarded admin route: browse, view and download dumps, see live status, trigger a capture.

Off by default. Turn it on with ``admin=True`` and a guard (``admin_token`` and/or
``admin_authorize``); every adapter then serves it under ``admin_prefix``: the ASGI middleware
and the plain WSGI middleware themselves, Flask through a Blueprint.
"""

from autoprof.admin.http import AdminRequest, AdminResponse
from autoprof.admin.views import AdminApp

__all__ = ["AdminApp", "AdminRequest", "AdminResponse"]
