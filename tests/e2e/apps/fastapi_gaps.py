"""A FastAPI app whose problems only autoprof's newer evidence can name (test_gaps_e2e.py).

Each misbehaviour hides in a uniquely named function, so a test can check that the dump names it:

- ``GET /sync-cpu``: a *sync* endpoint (FastAPI runs it in its threadpool) burning CPU in
  :func:`crunch_numbers_in_threadpool`; a request's async profiler on the event loop cannot see
  into the threadpool, the capture's all-threads profile can.
- ``GET /async-sleep``: an ``async def`` endpoint that calls :func:`doze_on_the_event_loop`,
  a blocking ``time.sleep``: the whole loop stalls (the loop-lag rule and watchdog).
- ``GET /items/{item_id}``: fast until ``POST /items/slow``, then slow in
  :func:`slow_inventory_lookup` (the per-route latency rule); ``GET /health`` stays fast.
- ``GET /orders/{order_id}``: fine until ``POST /orders/break``, then every call raises in
  :func:`charge_card` (an unhandled exception: a 500); ``GET /payments/{payment_id}`` answers
  an explicit 503 after ``POST /payments/break``, having waited for
  :func:`ask_payment_backend` (the error-rate rule).

autoprof comes from the environment only (``AUTOPROF_*``, set by the e2e ``serve`` fixture).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from autoprof import AutoProf, AutoProfMiddleware

autoprof = AutoProf.from_env()

app = FastAPI(title="autoprof e2e: the gaps")
app.add_middleware(AutoProfMiddleware, autoprof=autoprof)

broken = {"items": False, "orders": False, "payments": False}


class CardDeclined(RuntimeError):
    """What the payment backend raises once it is broken."""


@app.get("/")
async def index() -> dict[str, object]:
    """Where the dumps go (the e2e fixture checks it) and the captures so far."""
    return {
        "dump_dir": str(autoprof.store.directory),
        "captures": [c.id for c in autoprof.store.captures()],
        "broken": broken,
    }


@app.get("/autoprof-status")
async def autoprof_status() -> dict[str, object]:
    """autoprof's own failures (counted, never raised), the firings it skipped and what the
    latency rule sees of each route."""
    status = autoprof.status()
    return {
        "errors": status["errors"],
        "skipped": status["skipped"],
        "loop_watchdog": status["loop_watchdog"],
        "routes": status["routes"],
    }


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def crunch_numbers_in_threadpool(seconds: float) -> int:
    """A hot loop run by a sync endpoint, i.e. on a threadpool thread."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2000))
    return total


@app.get("/sync-cpu")
def sync_cpu(seconds: float = Query(0.5, gt=0, le=10)) -> dict[str, int]:
    return {"result": crunch_numbers_in_threadpool(seconds) % 1000}


def doze_on_the_event_loop(seconds: float) -> None:
    """The classic mistake: a blocking sleep called from a coroutine."""
    time.sleep(seconds)


@app.get("/async-sleep")
async def async_sleep_endpoint(seconds: float = Query(0.5, gt=0, le=10)) -> dict[str, float]:
    doze_on_the_event_loop(seconds)
    return {"slept_s": seconds}


async def slow_inventory_lookup(item_id: int) -> dict[str, int]:
    """The slow dependency of ``/items/{item_id}`` once it is broken."""
    await asyncio.sleep(0.3)
    return {"item_id": item_id, "stock": 0}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    if broken["items"]:
        return await slow_inventory_lookup(item_id)
    return {"item_id": item_id, "stock": 7}


@app.post("/items/slow")
async def make_items_slow() -> dict[str, bool]:
    broken["items"] = True
    return broken


async def charge_card(order_id: int) -> None:
    """The payment call of ``/orders/{order_id}``; once broken, it raises after 20 ms (long
    enough for the request's profiler to sample it)."""
    if broken["orders"]:
        await asyncio.sleep(0.02)
        raise CardDeclined(f"card declined for order {order_id}")


@app.get("/orders/{order_id}")
async def read_order(order_id: int) -> dict[str, object]:
    await charge_card(order_id)
    return {"order_id": order_id, "paid": True}


@app.post("/orders/break")
async def break_orders() -> dict[str, bool]:
    broken["orders"] = True
    return broken


async def ask_payment_backend(payment_id: int) -> bool:
    """The backend of ``/payments/{payment_id}``: unavailable (after 20 ms) once broken."""
    if broken["payments"]:
        await asyncio.sleep(0.02)
        return False
    return True


@app.get("/payments/{payment_id}", response_model=None)
async def read_payment(payment_id: int) -> dict[str, object] | JSONResponse:
    if not await ask_payment_backend(payment_id):
        return JSONResponse({"detail": "payment backend unavailable"}, status_code=503)
    return {"payment_id": payment_id, "state": "settled"}


@app.post("/payments/break")
async def break_payments() -> dict[str, bool]:
    broken["payments"] = True
    return broken
