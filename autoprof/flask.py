"""Flask extension: ``AutoProf(app)`` or ``AutoProf().init_app(app)``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, got_request_exception, request
from werkzeug.exceptions import HTTPException, NotFound

from autoprof.admin import AdminApp
from autoprof.admin.http import SECURITY_HEADER_NAMES, security_headers
from autoprof.routes import NO_ROUTE, EnvironRoutes
from autoprof.wsgi import AutoProfWSGIMiddleware, admin_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from autoprof.controller import AutoProf

BLUEPRINT = "autoprof_admin"
#: environ key where the admin view leaves the security headers of its answer.
HEADERS_KEY = "autoprof.admin_headers"
#: environ key where the middleware leaves the path below the prefix of a request it took as
#: an admin request; the Blueprint serves nothing else.
ADMIN_PATH_KEY = "autoprof.admin_path"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def init_flask(autoprof: AutoProf, app: Flask) -> None:
    """Attach ``autoprof`` to a Flask app (what ``AutoProf.init_app`` does for Flask).

    The app's settings are the controller's keyword options, overridden by the app's
    ``AUTOPROF_*`` config keys, overridden by the ``AUTOPROF_*`` environment variables. One
    controller may serve any number of apps (an app factory, an app per test) with one set of
    background threads; once they run, every app must come to the same settings.

    With ``enabled`` False for this app (``AUTOPROF_ENABLED = False`` in its config, or in the
    environment) its settings are still checked, the controller is still found at
    ``app.extensions["autoprof"]``, but nothing is wrapped, registered or started. Otherwise
    ``app.wsgi_app`` is wrapped by :class:`autoprof.AutoProfWSGIMiddleware`, so the profile
    covers the whole request. With ``AUTOPROF_ADMIN`` on, the admin route is the Blueprint
    ``autoprof_admin`` under the prefix; its ``admin_authorize`` function runs inside Flask's
    request context.
    """
    existing = app.extensions.get("autoprof")
    if existing is autoprof:
        return
    if existing is not None:
        raise RuntimeError(f"Flask app {app.name!r} already has an autoprof controller")
    settings = autoprof.layers.settings(app.config, source=f"config of Flask app {app.name!r}")
    app.extensions["autoprof"] = autoprof
    if not settings.enabled:
        return
    autoprof.adopt(settings, who=f"Flask app {app.name!r}")
    middleware = _FlaskMiddleware(app.wsgi_app, autoprof=autoprof, flask_app=app)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    if middleware.admin is not None:
        app.register_blueprint(admin_blueprint(middleware.admin))


def admin_blueprint(admin: AdminApp) -> Blueprint:
    """The admin route as a Blueprint: one view translating ``flask.request``.

    It serves exactly the requests autoprof's middleware took as admin requests
    (:func:`autoprof.admin.http.admin_sub_path`, marked in the environ): a path the middleware
    let through to the app is never answered by the admin view, whatever werkzeug's router
    makes of it.
    """
    blueprint = Blueprint(BLUEPRINT, __name__, url_prefix=admin.prefix)

    def admin_view(sub: str = "") -> Response:
        sub_path = request.environ.get(ADMIN_PATH_KEY)
        if not isinstance(sub_path, str):  # not taken by the middleware: not served here
            raise NotFound()
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
        if request.blueprint != BLUEPRINT and ADMIN_PATH_KEY in request.environ:
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

    def names(self, hint: Any) -> bool:
        return False  # matched from the path


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
        # The app's hooks run (authorize may use flask.session), but cannot loosen the answer:
        # the admin's security headers replace theirs and no CORS header of theirs is sent.
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            wanted = environ.get(HEADERS_KEY) or security_headers()
            kept = [
                (k, v) for k, v in headers
                if k.lower() not in SECURITY_HEADER_NAMES
                and not k.lower().startswith("access-control-")
            ]
            return start_response(status, [*kept, *wanted], exc_info)

        environ[ADMIN_PATH_KEY] = sub_path
        return self.app(environ, start)
