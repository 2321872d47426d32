"""The Flask example plus a route of its own under the admin prefix (``/_autoprof/hello``):
with the admin route off it must answer; with it on, the prefix is autoprof's."""

from __future__ import annotations

from flask import Response, jsonify

from examples.flask_app.app import app, autoprof

__all__ = ["app", "autoprof"]


@app.get("/_autoprof/hello")
def own_route() -> Response:
    return jsonify(owner="app")
