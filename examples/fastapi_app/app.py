"""A FastAPI app that profiles itself with autoprof, with four routes that misbehave.

Run it (from the repository root)::

    uvicorn examples.fastapi_app.app:app --port 8000

then spike it: ``curl 'localhost:8000/mem?mb=200'`` a few times, ``curl localhost:8000/cpu``,
or stall its event loop: ``curl 'localhost:8000/stall?seconds=1'``.
Dumps land in the directory ``GET /`` shows. Every option can be overridden with
``AUTOPROF_*`` environment variables (``AUTOPROF_COLLECT_INTERVAL=0.5`` ...).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Query

from autoprof import AutoProf, AutoProfMiddleware, Rule

# Demo-friendly figures: a 1 s interval and a low memory floor, so that a few hundred MB on a
# big host is a spike. In production keep the defaults (10 s interval, Holmes's rules).
autoprof = AutoProf.from_env(
    collect_interval=1.0,
    window=5,
    mem_rule=Rule(min=1, diff=25, abs=80),
    requests=3,
    capture_timeout=30,
)

app = FastAPI(title="autoprof FastAPI example")
app.add_middleware(AutoProfMiddleware, autoprof=autoprof)

held: list[bytearray] = []
gate = asyncio.Lock()


@app.get("/")
async def index() -> dict[str, object]:
    """Where the dumps go and what has been captured so far."""
    captures = autoprof.store.captures()
    return {
        "dump_dir": str(autoprof.store.directory),
        "captures": [c.id for c in captures],
        "capturing": autoprof.capture is not None,
        "held_mb": sum(len(b) for b in held) >> 20,
    }


def allocate_buffer(mb: int) -> bytearray:
    return bytearray(mb * 2**20)  # the allocating line the heap report should name


@app.get("/mem")
async def memory_spike(mb: int = Query(100, ge=1, le=1024)) -> dict[str, int]:
    """Allocate ``mb`` MiB and keep it: memory climbs with every call."""
    held.append(allocate_buffer(mb))
    return {"held_mb": sum(len(b) for b in held) >> 20}


@app.post("/mem/release")
async def memory_release() -> dict[str, int]:
    held.clear()
    return {"held_mb": 0}


def burn_cpu(seconds: float) -> int:
    """A hot loop: the function a CPU profile should name."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2000))
    return total


@app.get("/cpu")
async def cpu_overload(seconds: float = Query(1.0, gt=0, le=30)) -> dict[str, int]:
    """Burn CPU on the event loop for ``seconds``."""
    return {"result": burn_cpu(seconds) % 1000}


@app.get("/block")
async def blocked(seconds: float = Query(2.0, gt=0, le=30)) -> dict[str, float]:
    """Hold a lock for ``seconds``; concurrent callers queue behind it."""
    start = time.perf_counter()
    async with gate:
        await asyncio.sleep(seconds)
    return {"waited_s": round(time.perf_counter() - start, 3)}


def fetch_report_synchronously(seconds: float) -> None:
    """A blocking call inside async code (a sync driver, requests, time.sleep): while it runs,
    the event loop serves nobody. The function a loop_lag capture should name."""
    time.sleep(seconds)


@app.get("/stall")
async def stall_the_loop(seconds: float = Query(0.6, gt=0, le=10)) -> dict[str, float]:
    """Block the event loop for ``seconds``."""
    fetch_report_synchronously(seconds)
    return {"stalled_s": seconds}
