"""The Flask example plus ``/nap``, which sleeps and says which worker answered: calls made
at once land on different gunicorn workers (tests/e2e/test_workers_e2e.py)."""

from __future__ import annotations

import os
import time

from flask import Response, jsonify, request

from examples.flask_app.app import app, autoprof

__all__ = ["app", "autoprof"]


@app.get("/nap")
def nap() -> Response:
    time.sleep(min(max(request.args.get("s", 0.3, type=float), 0.0), 2.0))
    return jsonify(pid=os.getpid())
