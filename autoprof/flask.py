"""Flask extension: ``AutoProf(app)`` or ``AutoProf().init_app(app)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, request

from autoprof.config import Settings
from autoprof.wsgi import ROUTE_KEY, AutoProfWSGIMiddleware

if TYPE_CHECKING:
    from autoprof.controller import AutoProf


def init_flask(autoprof: AutoProf, app: Flask) -> None:
    """Attach ``autoprof`` to a Flask app (what ``AutoProf.init_app`` does for Flask).

    ``AUTOPROF_*`` keys of ``app.config`` override the controller's keyword options. The
    controller is stored as ``app.extensions["autoprof"]``; ``app.wsgi_app`` is wrapped by
    :class:`autoprof.AutoProfWSGIMiddleware`, so the profile covers the whole request.
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
    app.wsgi_app = AutoProfWSGIMiddleware(app.wsgi_app, autoprof=autoprof)  # type: ignore[method-assign]

    @app.before_request
    def _autoprof_note_route() -> None:
        # Only a profiled request needs its route template; the idle path stays a flag check.
        if autoprof.capture is not None and request.url_rule is not None:
            request.environ[ROUTE_KEY] = request.url_rule.rule
