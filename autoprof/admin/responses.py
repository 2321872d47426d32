"""The admin route's responses: pages, JSON, redirects and refusals, all with the security
headers."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from autoprof.admin import pages
from autoprof.admin.guard import Verdict
from autoprof.admin.http import AdminRequest, AdminResponse, security_headers
from autoprof.admin.source import Listed
from autoprof.capture.files import fired_of


def summary(
    request: AdminRequest, info: Listed, manifest: dict[str, Any] | None
) -> dict[str, Any]:
    manifest = manifest or {}
    trigger = pages.mapping(manifest.get("trigger"))
    requests = manifest.get("requests")
    return {
        "id": info.id,
        "created": info.created,
        "time": datetime.fromtimestamp(info.created, tz=timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        ),
        "pid": info.pid,
        "host": manifest.get("hostname"),
        "metric": info.metric,
        "reason": info.reason,
        "value": trigger.get("value"),
        "average": trigger.get("average"),
        "threshold": trigger.get("threshold"),
        "description": trigger.get("description"),
        "subject": trigger.get("subject"),
        "fired": fired_of(manifest),
        "requests": len(requests) if isinstance(requests, list) else 0,
        "close_reason": manifest.get("close_reason"),
        "size": info.size,
        "files": list(info.files),
        "url": pages.capture_url(request.base, info.id),
    }

def unauthorized(request: AdminRequest, verdict: Verdict, *, has_token: bool) -> AdminResponse:
    if verdict.retry_after is not None:
        wait = max(1, round(verdict.retry_after))
        response = error(
            request, 429, f"Too many wrong tokens: try again in {wait} s.", nav=False
        )
        response.headers.append(("Retry-After", str(wait)))
        return response
    message = "Wrong token." if verdict.presented else "Log in to see autoprof's dumps."
    if request.wants_json() or "authorization" in request.headers:
        response = json_response(401, {"error": "unauthorized", "detail": message})
    else:
        page = pages.login_page(
            request.base, message if verdict.presented else None,
            has_token=has_token,
        )
        response = html(401, page)
    if has_token:
        response.headers.append(("WWW-Authenticate", 'Bearer realm="autoprof"'))
    return response

def conflict(request: AdminRequest, text: str, wait: float | None) -> AdminResponse:
    response = error(request, 409, text)
    if wait is not None:
        response.headers.append(("Retry-After", str(max(1, round(wait)))))
    return response

def not_allowed(request: AdminRequest, methods: tuple[str, ...]) -> AdminResponse:
    response = error(request, 405, f"Use {' or '.join(methods)} here.")
    allow = ", ".join(("HEAD", *methods) if "GET" in methods else methods)
    response.headers.append(("Allow", allow))
    return response

def error(
    request: AdminRequest, status: int, text: str, *, nav: bool = True
) -> AdminResponse:
    title = HTTPStatus(status).phrase
    if request.wants_json() or "authorization" in request.headers:
        return json_response(status, {"error": title.lower(), "detail": text})
    return html(status, pages.message_page(request.base, title, text, nav=nav))


def html(status: int, body: bytes) -> AdminResponse:
    return AdminResponse(
        status, [*security_headers(), ("Content-Type", "text/html; charset=utf-8")], body
    )


def json_response(status: int, obj: Any) -> AdminResponse:
    body = json.dumps(obj, indent=1, default=str).encode("utf-8")
    return AdminResponse(status, [*security_headers(), ("Content-Type", "application/json")], body)


def redirect(location: str) -> AdminResponse:
    return AdminResponse(303, [*security_headers(), ("Location", location)])
