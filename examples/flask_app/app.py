"""A Flask app that profiles itself with autoprof, with three routes that misbehave.

Run it (from the repository root)::

    gunicorn -w 2 -b 127.0.0.1:8000 examples.flask_app.app:app

then spike it: ``curl '127.0.0.1:8000/mem?mb=200'`` a few times, or
``curl 127.0.0.1:8000/cpu``. The app is made by a factory, :func:`create_app`, as Flask
recommends; one controller, made at import, serves every app the factory makes (its tests make
one per test: see ``tests/``). Settings: the figures below, overridden by ``AUTOPROF_*`` keys
of the ``config`` handed to the factory, overridden by ``AUTOPROF_*`` environment variables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, jsonify, request

from autoprof import AutoProf, Rule

# Demo-friendly figures; in production keep the defaults (10 s interval, Holmes's rules).
autoprof = AutoProf(
    collect_interval=1.0,
    window=5,
    mem_rule=Rule(min=1, diff=25, abs=80),
    requests=3,
    capture_timeout=30,
)
routes = Blueprint("demo", __name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A new app; ``config`` (e.g. ``{"TESTING": True}``) goes into ``app.config``."""
    app = Flask(__name__)
    app.config.update(config or {})
    app.register_blueprint(routes)
    autoprof.init_app(app)  # attaches nothing when AUTOPROF_ENABLED is false for this app
    return app


held: list[bytearray] = []
gate = threading.Lock()


@routes.get("/")
def index():  # type: ignore[no-untyped-def]
    """Where the dumps go and what has been captured so far."""
    return jsonify(
        dump_dir=str(autoprof.store.directory),
        captures=[c.id for c in autoprof.store.captures()],
        held_mb=sum(len(b) for b in held) >> 20,
        pid=os.getpid(),
    )


def allocate_buffer(mb: int) -> bytearray:
    return bytearray(mb * 2**20)  # the allocating line the heap report should name


@routes.get("/mem")
def memory_spike():  # type: ignore[no-untyped-def]
    """Allocate ``mb`` MiB and keep it: memory climbs with every call."""
    mb = min(max(request.args.get("mb", 100, type=int), 1), 1024)
    held.append(allocate_buffer(mb))
    return jsonify(held_mb=sum(len(b) for b in held) >> 20, pid=os.getpid())


@routes.post("/mem/release")
def memory_release():  # type: ignore[no-untyped-def]
    held.clear()
    return jsonify(held_mb=0)


def burn_cpu(seconds: float) -> int:
    """A hot loop: the function a CPU profile should name."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2000))
    return total


@routes.get("/cpu")
def cpu_overload():  # type: ignore[no-untyped-def]
    """Burn CPU for ``seconds``."""
    seconds = min(max(request.args.get("seconds", 1.0, type=float), 0.01), 30.0)
    return jsonify(result=burn_cpu(seconds) % 1000, pid=os.getpid())


@routes.get("/block")
def blocked():  # type: ignore[no-untyped-def]
    """Hold a lock for ``seconds``; concurrent callers (threads) queue behind it."""
    seconds = min(max(request.args.get("seconds", 2.0, type=float), 0.01), 30.0)
    start = time.perf_counter()
    with gate:
        time.sleep(seconds)
    return jsonify(waited_s=round(time.perf_counter() - start, 3))


app = create_app()
