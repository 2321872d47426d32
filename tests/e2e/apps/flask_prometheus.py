"""The Flask example with autoprof's metrics on the app's own ``/metrics`` in prometheus_client's
multiprocess mode (gunicorn, ``PROMETHEUS_MULTIPROC_DIR``; the config in
``gunicorn_prometheus.py`` marks dead workers), as README's Prometheus section shows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import autoprof.prometheus
from examples.flask_app.app import app
from examples.flask_app.app import autoprof as ap

__all__ = ["ap", "app"]

autoprof.prometheus.register(ap)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, {"/metrics": make_wsgi_app(registry)}
)
