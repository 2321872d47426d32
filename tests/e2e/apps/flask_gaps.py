"""The Flask side of tests/e2e/apps/fastapi_gaps.py (run by gunicorn with two sync workers).

- ``GET /items/<int:item_id>``: fast until ``POST /items/slow``, then slow in
  :func:`slow_inventory_lookup`; ``GET /health`` stays fast (the latency rule);
- ``GET /orders/<int:order_id>``: fine until ``POST /orders/break``, then every call raises in
  :func:`charge_card` (Flask answers 500 and sends ``got_request_exception``; the error-rate
  rule).

The switches are files next to the dump directory (private to a test run), so that both
workers see them whichever one served the POST. autoprof's settings are the ``AUTOPROF_*``
environment variables, copied into ``app.config``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Flask, jsonify

from autoprof import AutoProf

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("AUTOPROF_")})
autoprof = AutoProf(app)

STATE_DIR = Path(autoprof.store.directory).parent


class CardDeclined(RuntimeError):
    """What the payment backend raises once it is broken."""


def broken(name: str) -> bool:
    return (STATE_DIR / f"broken-{name}").exists()


def breaks(name: str):  # type: ignore[no-untyped-def]
    (STATE_DIR / f"broken-{name}").touch()
    return jsonify(broken=name, pid=os.getpid())


@app.get("/")
def index():  # type: ignore[no-untyped-def]
    """Where the dumps go (the e2e fixture checks it), the captures so far, this worker."""
    return jsonify(
        dump_dir=str(autoprof.store.directory),
        captures=[c.id for c in autoprof.store.captures()],
        pid=os.getpid(),
    )


@app.get("/autoprof-status")
def autoprof_status():  # type: ignore[no-untyped-def]
    status = autoprof.status()
    return jsonify(pid=os.getpid(), errors=status["errors"], skipped=status["skipped"],
                   routes=status["routes"])


@app.get("/health")
def health():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


def slow_inventory_lookup(item_id: int) -> dict[str, int]:
    """The slow dependency of ``/items/<item_id>`` once it is broken."""
    time.sleep(0.3)
    return {"item_id": item_id, "stock": 0}


@app.get("/items/<int:item_id>")
def read_item(item_id: int):  # type: ignore[no-untyped-def]
    if broken("items"):
        return jsonify(slow_inventory_lookup(item_id))
    return jsonify(item_id=item_id, stock=7)


@app.post("/items/slow")
def make_items_slow():  # type: ignore[no-untyped-def]
    return breaks("items")


def charge_card(order_id: int) -> None:
    """The payment call of ``/orders/<order_id>``; once broken, it raises after 20 ms."""
    if broken("orders"):
        time.sleep(0.02)
        raise CardDeclined(f"card declined for order {order_id}")


@app.get("/orders/<int:order_id>")
def read_order(order_id: int):  # type: ignore[no-untyped-def]
    charge_card(order_id)
    return jsonify(order_id=order_id, paid=True)


@app.post("/orders/break")
def break_orders():  # type: ignore[no-untyped-def]
    return breaks("orders")
