"""A profiled async request's worker threads end up in its own profile (pyinstrument #257).

Sync endpoints run in anyio's threadpool (Starlette's ``run_in_threadpool``) or through
``asyncio.to_thread``; the request's profiler, on the event loop, only sees it awaiting them.
The capture's sampler follows the request into those threads and the handle grafts their
stacks under that await.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.session import Session
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from autoprof import AutoProf, AutoProfMiddleware
from autoprof.render import render_session
from autoprof.sampler import FOLLOWED, ThreadSampler, graft_thread_samples
from tests.conftest import only_capture, read_file


def crunch_in_the_threadpool(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(500))
    return total


def wait_in_the_threadpool(seconds: float) -> None:
    time.sleep(seconds)


def profiled_text(ap: AutoProf, app: Any, path: str) -> str:
    """Trigger a one-request capture, serve ``path`` through the middleware, return the
    request's text profile."""

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/warm")).status_code == 200  # starts the monitor
            assert ap.trigger() is not None
            assert (await client.get(path)).status_code == 200

    asyncio.run(main())
    info, manifest = only_capture(ap)
    [request] = manifest["requests"]
    assert request["problems"] == []
    return read_file(info, request["files"]["text"])


def quiet(make_autoprof: Any) -> AutoProf:
    ap: AutoProf = make_autoprof(requests=1, cpu_rule=None, mem_rule=None, loop_lag_rule=None,
                                 latency_rule=None, error_rate_rule=None)
    return ap


def test_a_sync_fastapi_endpoint_is_in_its_request_profile(make_autoprof: Any) -> None:
    ap = quiet(make_autoprof)
    app = FastAPI()
    app.add_middleware(AutoProfMiddleware, autoprof=ap)

    @app.get("/warm")
    async def warm() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/report")
    def sync_report_endpoint() -> dict[str, int]:
        wait_in_the_threadpool(0.1)
        return {"total": crunch_in_the_threadpool(0.3) % 7}

    text = profiled_text(ap, app, "/report")
    found = {
        name: re.search(rf"^\W*([\d.]+) [\w.<>]*\b{name}  ", text, re.M)
        for name in ("sync_report_endpoint", "crunch_in_the_threadpool", "wait_in_the_threadpool")
    }
    endpoint, crunch, wait = found.values()
    assert endpoint is not None, text
    assert crunch is not None, text
    assert wait is not None, text
    assert endpoint.start() < crunch.start(), text  # nested under the endpoint
    assert float(crunch[1]) >= 0.15, text  # counted once: the request took ~0.4 s
    assert float(wait[1]) >= 0.05, text
    assert "[await]" in text[wait.end():].splitlines()[1], text  # a sleeping thread waits


def test_asyncio_to_thread_is_followed_too(make_autoprof: Any) -> None:
    ap = quiet(make_autoprof)

    async def warm(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def offload(request: Any) -> JSONResponse:
        total = await asyncio.to_thread(crunch_in_the_threadpool, 0.3)
        await asyncio.sleep(0.1)  # the worker is idle meanwhile: nothing of it is grafted
        return JSONResponse({"total": total % 7})

    app = Starlette(routes=[Route("/warm", warm), Route("/offload", offload)])
    text = profiled_text(ap, AutoProfMiddleware(app, autoprof=ap), "/offload")
    assert "crunch_in_the_threadpool" in text, text
    assert "_worker" not in text, text  # the executor's idle loop is not the request's


def test_asgiref_sync_to_async_is_followed_too(make_autoprof: Any) -> None:
    # Django's sync views under ASGI and any sync_to_async call run this way.
    from asgiref.sync import sync_to_async

    ap = quiet(make_autoprof)

    async def warm(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def offload(request: Any) -> JSONResponse:
        total = await sync_to_async(crunch_in_the_threadpool)(0.3)
        return JSONResponse({"total": total % 7})

    app = Starlette(routes=[Route("/warm", warm), Route("/offload", offload)])
    text = profiled_text(ap, AutoProfMiddleware(app, autoprof=ap), "/offload")
    crunch = re.search(r"^\W*([\d.]+) [\w.<>]*\bcrunch_in_the_threadpool  ", text, re.M)
    assert crunch is not None, text
    assert float(crunch[1]) >= 0.15, text


class Collector:
    def __init__(self) -> None:
        self.samples: list[tuple[float, float, list[str]]] = []

    def add_thread_sample(self, wall: float, elapsed: float, stack: list[str]) -> None:
        self.samples.append((wall, elapsed, stack))


def test_an_idle_anyio_worker_is_not_charged_to_the_request_it_last_ran() -> None:
    sampler = ThreadSampler(interval=0.005)
    collector = Collector()

    async def main() -> None:
        token = FOLLOWED.set(collector)
        try:
            await anyio.to_thread.run_sync(crunch_in_the_threadpool, 0.2)
            ran = len(collector.samples)
            # The worker now waits for work, the request's Context still in its locals.
            await asyncio.sleep(0.2)
            assert len(collector.samples) == ran
        finally:
            FOLLOWED.reset(token)

    sampler.following.add(collector)
    sampler.start()
    try:
        asyncio.run(main())
    finally:
        sampler.session()
    assert len(collector.samples) >= 5
    for _, elapsed, stack in collector.samples:
        assert stack[0].startswith("crunch_in_the_threadpool\x00"), stack  # below the entry
        assert 0 < elapsed < 0.1


FIRST_FOLLOW = r"""
import asyncio, json, sys, threading, time
import anyio.to_thread
from autoprof.sampler import FOLLOWED, ThreadSampler

opened = []
def audit(event, args):
    # Under load every file-system call costs the sampler a wait for the GIL, behind the
    # very thread it follows: here a file opened by the sampler costs a second outright.
    if event == "open" and threading.current_thread().name == "autoprof-sampler":
        opened.append(str(args[0]))
        time.sleep(1.0)
sys.addaudithook(audit)

def crunch(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sum(i * i for i in range(500))

class Collector:
    def __init__(self):
        self.samples = []
    def add_thread_sample(self, wall, elapsed, stack):
        self.samples.append(stack)

async def main(request):
    token = FOLLOWED.set(request)
    try:
        await anyio.to_thread.run_sync(crunch, 0.4)
    finally:
        FOLLOWED.reset(token)

request = Collector()
sampler = ThreadSampler(interval=0.005)
sampler.following.add(request)
sampler.start()
asyncio.run(main(request))
sampler.following.discard(request)
sampler.session()
print(json.dumps({"samples": len(request.samples), "opened": opened}))
"""


def test_the_first_request_followed_in_a_process_gets_its_worker_samples() -> None:
    # The first pass that follows a request, in a fresh process, reads nothing from disk: a
    # pass that did (the source of anyio's worker, a module import) took longer than the
    # request under load, and the process's first profiled request got no worker stack.
    done = subprocess.run([sys.executable, "-c", FIRST_FOLLOW], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["samples"] >= 5, found
    assert found["opened"] == [], found


def test_graft_puts_worker_stacks_under_the_await_and_keeps_the_time() -> None:
    start = 1000.0
    awaiting = ["main\x00app.py\x001", "run_sync_in_worker_thread\x00anyio.py\x009"]
    records = [
        (["main\x00app.py\x001", "parse\x00app.py\x005"], 0.1),  # [1000.0, 1000.1]
        ([*awaiting, AWAIT_FRAME_IDENTIFIER], 0.2),  # [1000.1, 1000.3]
        ([*awaiting, AWAIT_FRAME_IDENTIFIER], 0.2),  # [1000.3, 1000.5]
        (["main\x00app.py\x001", "render\x00app.py\x007"], 0.1),
    ]
    session = Session(frame_records=records, start_time=start, duration=0.6, min_interval=0.001,
                      max_interval=0.001, sample_count=4, start_call_stack=[records[0][0][0]],
                      target_description="t", cpu_time=0.6, sys_path=[], sys_prefixes=[])
    endpoint = ["endpoint\x00app.py\x0020", "crunch\x00app.py\x0030"]
    samples = [(start + 0.15 + 0.1 * i, 0.1, endpoint) for i in range(3)]  # 0.3 s of 0.4
    samples.append((start + 5, 0.1, endpoint))  # long after: left out
    grafted = graft_thread_samples(session, samples)
    stacks = [(stack, round(t, 3)) for stack, t in grafted.frame_records]
    assert stacks == [
        (records[0][0], 0.1),
        ([*awaiting, AWAIT_FRAME_IDENTIFIER], 0.1),  # what the samples did not cover
        ([*awaiting, *endpoint], 0.1),
        ([*awaiting, *endpoint], 0.1),
        ([*awaiting, *endpoint], 0.1),
        (records[3][0], 0.1),
    ]
    assert sum(t for _, t in grafted.frame_records) == pytest.approx(0.6)
    text = render_session(grafted, "text")
    assert "crunch" in text
    assert graft_thread_samples(session, []) is session
