"""Views of the e2e Django project.

``GET /items/<pk>/`` is fast until ``POST /items/slow/``, then slow in
:func:`slow_item_lookup`; ``GET /health/`` and ``GET /shop/orders/<code>/`` stay fast. The
switch is a file next to the dump directory, so every worker sees it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from autoprof.django import get_autoprof


def _switch() -> Path:
    return Path(get_autoprof().settings.dump_dir).parent / "items-slow"


def index(request: HttpRequest) -> JsonResponse:
    """Where the dumps go (the e2e fixture checks it) and what autoprof was told."""
    ap = get_autoprof()
    settings = ap.settings
    return JsonResponse({
        "dump_dir": settings.dump_dir,
        "pid": os.getpid(),
        "collect_interval": settings.collect_interval,
        "admin": settings.admin,
        "running": ap.running,
    })


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def slow_item_lookup(pk: int) -> dict[str, int]:
    """The slow dependency of ``/items/<pk>/`` once it is switched on."""
    time.sleep(0.3)
    return {"pk": pk, "stock": 0}


def read_item(request: HttpRequest, pk: int) -> JsonResponse:
    if _switch().exists():
        return JsonResponse(slow_item_lookup(pk))
    return JsonResponse({"pk": pk, "stock": 7})


@csrf_exempt
@require_POST
def make_items_slow(request: HttpRequest) -> JsonResponse:
    _switch().touch()
    return JsonResponse({"slow": True, "pid": os.getpid()})


def read_order(request: HttpRequest, code: str) -> JsonResponse:
    return JsonResponse({"code": code})


class CardDeclined(RuntimeError):
    """What ``/boom/`` raises (Django answers 500)."""


def boom(request: HttpRequest) -> JsonResponse:
    raise CardDeclined("card 4242 declined")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(f"part {n}\n" for n in range(3))
