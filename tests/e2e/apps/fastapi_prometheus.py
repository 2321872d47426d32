"""The FastAPI example with autoprof's metrics on the app's own ``/metrics`` (prometheus_client's
ASGI app over its default registry), as README's Prometheus section shows."""

from __future__ import annotations

from prometheus_client import make_asgi_app

import autoprof.prometheus
from examples.fastapi_app.app import app
from examples.fastapi_app.app import autoprof as ap

__all__ = ["ap", "app"]

autoprof.prometheus.register(ap)
app.mount("/metrics", make_asgi_app())
