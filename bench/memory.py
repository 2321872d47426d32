"""5. autoprof's own memory: RSS added by importing autoprof and by running it idle.

Each repeat is a fresh process (``python -m bench.memory --child``) that serves a bare Starlette
hello app in-process, reads its RSS, imports autoprof and reads it again, then serves the same
app behind an idle ``AutoProfMiddleware`` whose monitor samples fast until its history ring is
full (its size after an hour at the default interval), and reads it a third time. RSS comes from
``/proc/self/statm`` so that measuring imports nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import SCOPE, asgi_discard, asgi_receive, median, progress

REQUESTS = 2000


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _serve(app: Any, count: int) -> None:
    for _ in range(count):
        await app(dict(SCOPE), asgi_receive, asgi_discard)


def child(dump_dir: str) -> dict[str, Any]:
    """The measurement itself, in a fresh process."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(_serve(Starlette(routes=[Route("/", hello)]), REQUESTS))
    gc.collect()
    modules0, rss0 = set(sys.modules), _rss()

    import autoprof
    from autoprof.monitor import HISTORY

    gc.collect()
    modules1, rss1 = set(sys.modules), _rss()

    ap = autoprof.AutoProf(dump_dir=dump_dir, collect_interval=0.005)
    factory: Any = autoprof.AutoProfMiddleware
    app = Starlette(routes=[Route("/", hello)], middleware=[Middleware(factory, autoprof=ap)])
    loop.run_until_complete(_serve(app, REQUESTS))
    deadline = time.monotonic() + 20
    while (ap.monitor is None or len(ap.monitor.history) < HISTORY) and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.run_until_complete(_serve(app, REQUESTS))
    gc.collect()
    rss2 = _rss()
    history = len(ap.monitor.history) if ap.monitor is not None else 0
    ap.stop()
    new = sorted({m.split(".")[0] for m in modules1 - modules0})
    return {
        "rss_bare": rss0,
        "rss_imported": rss1,
        "rss_running": rss2,
        "modules_imported": len(modules1 - modules0),
        "packages_imported": new,
        "history_samples": history,
    }


def run(repeats: int, workdir: Path) -> dict[str, Any]:
    """``repeats`` fresh processes; medians of the RSS added by each step, in MiB."""
    progress(f"memory: {repeats} fresh processes")
    results = []
    for index in range(repeats):
        dump_dir = workdir / f"dumps-memory-{index}"
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", str(dump_dir)],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")},
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    mib = 2**20
    imported = [(r["rss_imported"] - r["rss_bare"]) / mib for r in results]
    running = [(r["rss_running"] - r["rss_imported"]) / mib for r in results]
    total = [(r["rss_running"] - r["rss_bare"]) / mib for r in results]
    return {
        "repeats": repeats,
        "bare_mib": median([r["rss_bare"] / mib for r in results]),
        "import_mib": median(imported),
        "running_mib": median(running),
        "total_mib": median(total),
        "modules_imported": results[0]["modules_imported"],
        "packages_imported": results[0]["packages_imported"],
        "history_samples": results[0]["history_samples"],
        "runs": results,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(1, Path(tmp)), indent=2))
