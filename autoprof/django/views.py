"""The admin view: the admin route's pages served through the project's ``urls.py``.

It serves exactly the requests :class:`autoprof.django.AutoProfMiddleware` took as admin
requests (marked in ``request.META``): a path the middleware let through to the app is never
answered here, whatever Django's URL resolver makes of it. The pages, the guard and the
actions are those of every adapter (:class:`autoprof.admin.AdminApp`); ``admin_authorize``
gets an :class:`autoprof.admin.AdminRequest` whose ``native`` is Django's ``HttpRequest``
(``request.native.user`` once the authentication middleware has run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from django.http import Http404, HttpResponse  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from autoprof.admin import AdminApp
from autoprof.admin.http import SECURITY_HEADER_NAMES
from autoprof.django.middleware import ADMIN_KEY, HEADERS_KEY
from autoprof.wsgi import admin_request


def _admin_view(request: Any, sub: str = "") -> HttpResponse:
    """Answer one admin request (any method); 404 for a request the middleware did not mark."""
    meta = request.META
    marked = meta.get(ADMIN_KEY)
    if not (isinstance(marked, tuple) and len(marked) == 2 and isinstance(marked[0], AdminApp)):
        raise Http404()
    admin, sub_path = marked
    adapted, refused = admin_request(admin, sub_path, meta, request)
    adapted = dataclasses.replace(adapted, native=request, secure=request.is_secure())
    answer = admin.handle(adapted) if refused is None else admin.refuse_body(adapted, refused)
    meta[HEADERS_KEY] = [(k, v) for k, v in answer.headers if k.lower() in SECURITY_HEADER_NAMES]
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        response.headers[name] = value
    return response


#: The view of ``autoprof.django.urls``. Exempt from Django's CSRF middleware: the admin checks
#: its own forms (same origin, login token) as under every adapter.
admin_view: Callable[..., HttpResponse] = csrf_exempt(_admin_view)
