"""The capture-browsing views every admin serves, and :class:`BrowseApp`, the read-only admin.

The app's admin route (:class:`autoprof.admin.views.AdminApp`) and ``autoprof serve``
(:class:`BrowseApp`, over a directory or a sink bucket) answer the capture list, one capture,
a file, login and logout with the functions here, over any
:class:`~autoprof.admin.source.CaptureSource`.

:class:`BrowseApp` serves, below its base::

    GET  /                      captures, newest first (HTML, or JSON)
    GET  /captures/{id}          one capture
    GET  /captures/{id}/{name}   a file; ?download=1
    GET  /login, POST /login     with a token: the token form; POST /logout

It has no live status and opens no capture. With a token it lets in a valid Bearer header or
login cookie; without one it lets in only requests whose ``Host`` names the loopback
interface (a page on another site that rebinds its name to 127.0.0.1 is refused).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from autoprof.admin import files, pages
from autoprof.admin.guard import COOKIE_NAME, SESSION_TTL, Guard, Verdict, cross_site, same_origin
from autoprof.admin.http import (
    DUMP_FILE_CSP,
    DUMP_HTML_CSP,
    AdminRequest,
    AdminResponse,
    security_headers,
)
from autoprof.admin.responses import (
    error,
    html,
    json_response,
    not_allowed,
    redirect,
    summary,
    unauthorized,
)
from autoprof.admin.source import C, CaptureSource
from autoprof.errors import ErrorLog

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


# -- views shared with the app's admin route ---------------------------------------------------


def index(request: AdminRequest, source: CaptureSource[C]) -> AdminResponse:
    """The captures, newest first."""
    rows = [summary(request, c, source.manifest(c)) for c in source.captures()]
    usage = source.usage()
    if request.wants_json():
        return json_response(200, {"captures": rows, "bytes": usage[0], "count": len(rows)})
    return html(200, pages.index_page(request.base, rows, usage))


def capture(request: AdminRequest, source: CaptureSource[C], capture_id: str) -> AdminResponse:
    """One capture: its summary, evidence and manifest."""
    found = source.get(capture_id)
    if found is None:
        return error(request, 404, "No such capture.")
    manifest = source.manifest(found) or {}
    row = summary(request, found, manifest)
    if request.wants_json():
        return json_response(200, {**row, "manifest": manifest})
    return html(200, pages.capture_page(request.base, row, manifest))


def file(
    request: AdminRequest, source: CaptureSource[C], capture_id: str, name: str
) -> AdminResponse:
    """One file of a capture (pyinstrument HTML sandboxed); ``?download=1`` (and any binary
    file, pprof's) as an attachment."""
    found = source.get(capture_id)
    try:
        read = source.read(found, name) if found is not None else None
    except files.TooLarge:
        return error(request, 413, "This file is too large to serve here; copy it "
                                   "from the dump directory.")
    if read is None:
        return error(request, 404, "No such file.")
    name, data = read
    if "download" in request.query or files.download_only(name):
        headers = [
            *security_headers(DUMP_FILE_CSP),
            ("Content-Type", files.content_type(name)),
            ("Content-Disposition", f'attachment; filename="{name}"'),
        ]
        return AdminResponse(200, headers, data)
    csp = DUMP_FILE_CSP
    if name.endswith(".html"):
        csp, data = DUMP_HTML_CSP, files.with_storage_shim(data)
    headers = [*security_headers(csp), ("Content-Type", files.content_type(name)),
               ("Content-Disposition", f'inline; filename="{name}"')]
    return AdminResponse(200, headers, data)


def login(request: AdminRequest, guard: Guard) -> AdminResponse:
    """The token form (GET) and its post, which sets the session cookie."""
    if request.method != "POST":
        if not guard.has_token:
            return error(request, 404, "There is no login: this admin route is "
                                       "guarded by the app's authorize function.")
        return html(200, pages.login_page(request.base, None, has_token=True))
    if not guard.has_token:
        return error(request, 404, "There is no login here.")
    # Login is refused only to a request a browser marks as cross-site: logging in needs
    # the token, and an older browser's same-origin post may carry neither header.
    if cross_site(request):
        return error(request, 403, "Cross-site login refused.", nav=False)
    result = guard.attempt(request.client, request.form.get("token", ""))
    if not result.ok:
        return unauthorized(request, result, has_token=guard.has_token)
    cookie = (
        f"{COOKIE_NAME}={guard.new_session()}; Path={request.base or '/'}; "
        f"Max-Age={SESSION_TTL}; HttpOnly; SameSite=Strict{'; Secure' if request.secure else ''}"
    )
    response = redirect(f"{request.base}/")
    response.headers.append(("Set-Cookie", cookie))
    return response


def logout(request: AdminRequest) -> AdminResponse:
    """Ends the session (a same-origin post only)."""
    if not same_origin(request):
        return error(request, 403, "Cross-site request refused.")
    response = redirect(f"{request.base}/login")
    response.headers.append(
        ("Set-Cookie", f"{COOKIE_NAME}=; Path={request.base or '/'}; Max-Age=0; HttpOnly; "
                       "SameSite=Strict")
    )
    return response


def finish(request: AdminRequest, response: AdminResponse) -> AdminResponse:
    """Content-Length on every answer; no body for HEAD."""
    response.headers.append(("Content-Length", str(len(response.body))))
    if request.method == "HEAD":
        response.body = b""
    return response


def loopback_host(request: AdminRequest) -> bool:
    """Whether the request's ``Host`` header names the loopback interface."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the read-only admin -------------------------------------------------------------------------


class BrowseApp:
    """The admin pages over a :class:`~autoprof.admin.source.CaptureSource`, read-only.

    ``token``: required of every request when given (Bearer header or login cookie); without
    it only loopback ``Host`` names get in, so serve it on a loopback address only.
    ``base``: the URL path the pages live under (``""``: the server's root).
    """

    def __init__(
        self,
        source: CaptureSource[Any],
        *,
        token: str | None = None,
        base: str = "",
        errors: ErrorLog | None = None,
    ) -> None:
        self.source = source
        self.base = base.rstrip("/")
        self.errors = errors if errors is not None else ErrorLog()
        self.guard = Guard(
            token=token,
            authorize=None if token is not None else loopback_host,
            errors=self.errors,
        )

    def handle(self, request: AdminRequest) -> AdminResponse:
        """Answer one request; never raises (a failure is counted and answered 500)."""
        try:
            response = self._dispatch(request)
        except Exception as exc:
            self.errors.record("serve", exc)
            response = error(request, 500, "Reading the captures failed; see the server's "
                                           "output.")
        return finish(request, response)

    def _dispatch(self, request: AdminRequest) -> AdminResponse:
        method = "GET" if request.method == "HEAD" else request.method
        parts = request.path.split("/")[1:] if request.path.startswith("/") else []
        if parts and parts[-1] == "":
            parts.pop()
        if parts == ["login"]:
            if method not in ("GET", "POST"):
                return not_allowed(request, ("GET", "POST"))
            return login(request, self.guard)
        if parts == ["logout"]:
            return logout(request) if method == "POST" else not_allowed(request, ("POST",))
        verdict: Verdict = self.guard.check(request)
        if not verdict.ok:
            if not self.guard.has_token:
                return error(request, 403, "This read-only admin answers its loopback "
                                           "address only.", nav=False)
            return unauthorized(request, verdict, has_token=True)
        if parts in (["status"], ["trigger"]):
            return error(request, 404, "This is a read-only view of stored captures: live "
                                       "status and triggers are on each app's admin route.")
        if len(parts) in (0, 2, 3) and (not parts or parts[0] == "captures"):
            if method != "GET":
                return not_allowed(request, ("GET",))
            if not parts:
                return index(request, self.source)
            if len(parts) == 2:
                return capture(request, self.source, parts[1])
            return file(request, self.source, parts[1], parts[2])
        return error(request, 404, "Nothing here.")
