"""Forking servers: one monitor per worker, none in the master, dumps tagged by worker pid."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psutil
import pytest

from tests.load.conftest import Launch
from tests.load.test_load import states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {
    "AUTOPROF_COLLECT_INTERVAL": "0.1",
    "AUTOPROF_WINDOW": "2",
    "AUTOPROF_CPU_RULE": "off",
    "AUTOPROF_MEM_RULE": "off",
    "AUTOPROF_INFLIGHT_RULE": "min=1,diff=-,abs=1",
    "AUTOPROF_REQUESTS": "2",
    "AUTOPROF_CAPTURE_TIMEOUT": "1",
    "PYTHONWARNINGS": "always",
}


@pytest.mark.parametrize(
    ("kind", "extra_args", "workers"),
    [
        ("flask", "--workers 2", 2),
        ("flask", "--workers 2 --preload", 2),
        ("fastapi", "--workers 2", 2),
    ],
)
def test_one_monitor_per_worker_none_in_the_master(
    launch: Launch, tmp_path: Path, kind: str, extra_args: str, workers: int
) -> None:
    dump_dir = tmp_path / "dumps"
    server = launch(kind, extra_args=extra_args, AUTOPROF_DUMP_DIR=str(dump_dir), **FAST)
    master = psutil.Process(server.process.pid)
    worker_pids = set(states(server, workers))
    assert len(worker_pids) == workers
    # (uvicorn's spawned workers sit beside multiprocessing's resource tracker)
    assert worker_pids <= {child.pid for child in master.children()}

    # Keep requests in flight in every worker until each has written a capture.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(60):
            with httpx.Client(base_url=server.url, timeout=30) as other:
                for _ in range(10):
                    other.get("/slow", params={"i": 1})
                    client.get("/fast", params={"i": 2})
            pids = {json.loads((p / f"{p.name}_manifest.json").read_text())["pid"]
                    for p in dump_dir.iterdir() if not p.name.startswith(".")}
            if pids >= worker_pids:
                break
    assert pids <= worker_pids  # every dump comes from a worker, none from the master
    assert pids, "no capture written"

    seen = states(server, workers)
    assert set(seen) == worker_pids
    for state in seen.values():
        assert state["monitors"] == ["autoprof-monitor"]  # exactly one monitor per worker
    assert master.num_threads() == 1  # the master runs no monitor (nor anything else)
    log = server.log()
    assert "fork" not in log.lower() or "DeprecationWarning" not in log
    assert "Traceback" not in log
