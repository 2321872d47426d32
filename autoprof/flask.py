"""Flask extension: ``AutoProf(app)`` or ``AutoProf().init_app(app)``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, got_request_exception, request
from werkzeug.exceptions import HTTPException

from autoprof.admin import AdminApp
from autoprof.admin.http import SECURITY_HEADER_NAMES, security_headers
from autoprof.config import Settings
from autoprof.routes import NO_ROUTE, EnvironRoutes
from autoprof.wsgi import AutoProfWSGIMiddleware, admin_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from autoprof.controller import AutoProf

BLUEPRINT = "autoprof_admin"
#: environ key where the admin view leaves the security headers of its answer.
HEADERS_KEY = "autoprof.admin_headers"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def init_flask(autoprof: AutoProf, app: Flask) -> None:
    """Attach ``autoprof`` to a Flask app (what ``AutoProf.init_app`` does for Flask).

    ``AUTOPROF_*`` keys of ``app.config`` override the controller's keyword options. The
    controller is stored as ``app.extensions["autoprof"]``; ``app.wsgi_app`` is wrapped by
    :class:`autoprof.AutoProfWSGIMiddleware`, so the profile covers the whole request. With
    ``AUTOPROF_ADMIN`` on, the admin route is the Blueprint ``autoprof_admin`` under the
    prefix; its ``admin_authorize`` function runs inside Flask's request context.
    """
    existing = app.extensions.get("autoprof")
    if existing is autoprof:
        return
    if existing is not None:
        raise RuntimeError(f"Flask app {app.name!r} already has an autoprof controller")
    options = Settings.options_from_mapping(app.config, source=f"config of Flask app {app.name!r}")
    if options:
        autoprof.configure(**options)
    app.extensions["autoprof"] = autoprof
    middleware = _FlaskMiddleware(app.wsgi_app, autoprof=autoprof, flask_app=app)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    if middleware.admin is not None:
        app.register_blueprint(admin_blueprint(middleware.admin))


def admin_blueprint(admin: AdminApp) -> Blueprint:
    """The admin route as a Blueprint: one view translating ``flask.request``."""
    blueprint = Blueprint(BLUEPRINT, __name__, url_prefix=admin.prefix)

    def admin_view(sub: str = "") -> Response:
        sub_path = admin.sub_path(request.path)
        assert sub_path is not None  # every rule, and _claim_prefix, is below the prefix
        adapted, refused = admin_request(admin, sub_path, request.environ, request.stream)
        answer = admin.handle(adapted) if refused is None else admin.refuse_body(adapted, refused)
        request.environ[HEADERS_KEY] = [
            (k, v) for k, v in answer.headers if k.lower() in SECURITY_HEADER_NAMES
        ]
        response = Response(answer.body, status=answer.status, headers=answer.headers)
        response.content_length = int(answer.header("Content-Length") or 0)  # HEAD: no body
        return response

    @blueprint.before_app_request
    def _claim_prefix() -> Response | None:
        # The prefix is autoprof's: an app route under it, or no route at all, still gets here.
        if request.blueprint != BLUEPRINT and admin.sub_path(request.path) is not None:
            return admin_view()
        return None

    for rule in ("", "/", "/<path:sub>"):
        blueprint.add_url_rule(
            rule,
            view_func=admin_view,
            methods=_METHODS,
            provide_automatic_options=False,
            strict_slashes=False,
            merge_slashes=False,
        )
    return blueprint


class FlaskRoutes(EnvironRoutes):
    """Routes of a Flask app's environs. A finished request's route is matched against the
    app's url_map off the request path, on the monitor thread: Flask forgets the matched rule
    before the middleware sees the response, and a per-request hook would cost every request.

    Matching costs a few microseconds, so at most ``budget`` new paths are matched per second
    (a flood of distinct paths leaves the rest unresolved, not the monitor busy) and at most
    ``size`` answers are kept."""

    def __init__(self, app: Flask, *, size: int = 10_000, budget: int = 2_000) -> None:
        self.app = app
        self.size = size
        self.budget = budget
        self._cache: dict[tuple[str, str], str] = {}
        self._spent = (0.0, 0)

    def routed(self, native: Any) -> str | None:
        # Flask drops its request from the environ when its context ends: match again then.
        route = super().routed(native)
        if route is not None:
            return route
        try:
            rule, _ = self.app.url_map.bind_to_environ(native).match(return_rule=True)
        except Exception:  # not found, a redirect, a framework quirk: the path will do
            return None
        return str(rule.rule)

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        found = self._cache.get((method, path))
        if found is not None:
            return found
        now = time.monotonic()
        start, spent = self._spent
        if now - start >= 1.0:
            start, spent = now, 0
        if spent >= self.budget:
            return None
        self._spent = (start, spent + 1)
        try:
            rule, _ = self.app.url_map.bind("localhost").match(
                path, method=method, return_rule=True
            )
            found = str(rule.rule)
        except HTTPException:  # 404, 405, a redirect: no route of the app answered it
            found = NO_ROUTE
        except Exception:  # host matching and other set-ups this cannot replay
            return None
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[(method, path)] = found
        return found


class _FlaskMiddleware(AutoProfWSGIMiddleware):
    """Admin paths go to the app (its Blueprint serves them), not profiled nor counted in
    flight, and leave with the admin's security headers whatever the app's hooks did."""

    def __init__(self, app: Any, *, autoprof: AutoProf, flask_app: Flask) -> None:
        super().__init__(app, autoprof=autoprof)
        self.flask_app = flask_app
        self.routes = FlaskRoutes(flask_app)
        if autoprof.requests is not None:
            got_request_exception.connect(self._exception, flask_app, weak=False)

    def _exception(self, sender: Flask, exception: BaseException, **extra: Any) -> None:
        log = self.autoprof.requests
        if log is not None:
            log.record_exception(request.method, request.path, exception)

    def _serve_admin(
        self,
        admin: AdminApp,
        sub_path: str,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            wanted = environ.get(HEADERS_KEY) or security_headers()
            kept = [(k, v) for k, v in headers if k.lower() not in SECURITY_HEADER_NAMES]
            return start_response(status, [*kept, *wanted], exc_info)

        return self.app(environ, start)
