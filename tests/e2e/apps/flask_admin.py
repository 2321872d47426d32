"""The Flask example plus a route of its own under the admin prefix (``/_autoprof/hello``):
with the admin route off it must answer; with it on, the prefix is autoprof's.

Its ``after_request`` hook loosens every answer it can (framing, caching, CORS): admin answers
must leave with the admin's own headers anyway (issue 12, finding 1)."""

from __future__ import annotations

from flask import Response, jsonify

from examples.flask_app.app import app, autoprof

__all__ = ["app", "autoprof"]


@app.get("/_autoprof/hello")
def own_route() -> Response:
    return jsonify(owner="app")


@app.after_request
def loosen(response: Response) -> Response:
    if "Content-Security-Policy" in response.headers:  # the app's own pages set none
        response.headers["Content-Security-Policy"] = "frame-ancestors *"
    response.headers["X-Frame-Options"] = "ALLOWALL"
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["Access-Control-Allow-Origin"] = "https://evil.example"
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["X-App-Hook"] = "ran"
    return response
