"""A Flask app for the load tests: fast, slow, streaming and failing routes.

Every body depends only on the request, so responses can be compared byte for byte with the
same requests served without autoprof (``AUTOPROF_ENABLED=0``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from flask import Flask, Response, jsonify, request

from autoprof import AutoProf

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("AUTOPROF_")})
autoprof = AutoProf(app)


def digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def index() -> int:
    return request.args.get("i", 0, type=int)


@app.get("/fast")
def fast() -> Response:
    i = index()
    return Response(f"fast {i} {digest(i)}", mimetype="text/plain")


@app.get("/slow")
def slow() -> Response:
    i = index()
    time.sleep(0.005)
    return Response(f"slow {i} " + digest(i) * 8, mimetype="text/plain")


@app.get("/sync")
def sync() -> Response:
    i = index()
    return Response(f"sync {i} {sum(range(i * 100))}", mimetype="text/plain")


@app.get("/stream")
def stream() -> Response:
    i = index()

    def chunks():  # type: ignore[no-untyped-def]
        for n in range(5):
            yield f"{i}:{n}:{digest(i + n)}\n"

    return Response(chunks(), mimetype="text/plain")


@app.get("/hold")
def hold() -> Response:
    time.sleep(0.5)
    return Response("held", mimetype="text/plain")


@app.get("/trickle")
def trickle() -> Response:
    """First chunk at once, the second a second later: time to first byte must stay short."""

    def chunks():  # type: ignore[no-untyped-def]
        yield "first\n"
        time.sleep(1.0)
        yield "second\n"

    return Response(chunks(), mimetype="text/plain")


@app.get("/fail")
def fail() -> tuple[Response, int]:
    return jsonify(error=f"failure {index()}"), 500


@app.get("/_state")
def state() -> Response:
    return jsonify(
        pid=os.getpid(),
        inflight=len(autoprof.inflight),
        captures_written=autoprof.captures_written,
        errors=autoprof.errors.snapshot(),
        enabled=autoprof.settings.enabled,
        monitors=[t.name for t in threading.enumerate() if t.name == "autoprof-monitor"],
    )
