"""A FastAPI app for the load tests: fast, slow, streaming and failing routes.

Every body depends only on the request, so responses can be compared byte for byte with the
same requests served without autoprof (``AUTOPROF_ENABLED=0``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from autoprof import AutoProf, AutoProfMiddleware

autoprof = AutoProf.from_env()
app = FastAPI()
app.add_middleware(AutoProfMiddleware, autoprof=autoprof)


def digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@app.get("/fast")
async def fast(i: int) -> PlainTextResponse:
    return PlainTextResponse(f"fast {i} {digest(i)}")


@app.get("/slow")
async def slow(i: int) -> PlainTextResponse:
    await asyncio.sleep(0.005)
    return PlainTextResponse(f"slow {i} " + digest(i) * 8)


@app.get("/sync")
def sync(i: int) -> PlainTextResponse:
    return PlainTextResponse(f"sync {i} {sum(range(i * 100))}")


@app.get("/stream")
async def stream(i: int) -> StreamingResponse:
    async def chunks():
        for n in range(5):
            await asyncio.sleep(0)
            yield f"{i}:{n}:{digest(i + n)}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/hold")
async def hold() -> PlainTextResponse:
    await asyncio.sleep(0.5)
    return PlainTextResponse("held")


@app.get("/trickle")
async def trickle() -> StreamingResponse:
    """First chunk at once, the second a second later: time to first byte must stay short."""

    async def chunks():
        yield b"first\n"
        await asyncio.sleep(1.0)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/fail")
async def fail(i: int) -> JSONResponse:
    return JSONResponse({"error": f"failure {i}"}, status_code=500)


@app.get("/_state")
async def state() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "inflight": len(autoprof.inflight),
        "captures_written": autoprof.captures_written,
        "errors": autoprof.errors.snapshot(),
        "enabled": autoprof.settings.enabled,
        "monitors": [t.name for t in threading.enumerate() if t.name == "autoprof-monitor"],
    }
