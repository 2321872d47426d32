"""Streaming through a real server: the first chunk arrives before the body is finished, for
idle and for profiled requests alike."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.load.conftest import Launch

pytestmark = pytest.mark.e2e


def first_byte_gap(url: str) -> tuple[float, bytes]:
    """Seconds between the first chunk's arrival and the end of the body, and the body."""
    with httpx.stream("GET", url, timeout=30) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.perf_counter()
        body = first + b"".join(chunks)
    return time.perf_counter() - first_at, body


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_time_to_first_byte_is_unchanged_while_profiled(launch: Launch, tmp_path: Path, kind):
    dump_dir = tmp_path / "dumps"
    server = launch(kind, AUTOPROF_DUMP_DIR=str(dump_dir), AUTOPROF_REQUESTS="1",
                    AUTOPROF_PATH_FILTER="^/trickle$", AUTOPROF_COLLECT_INTERVAL="0.1",
                    AUTOPROF_WINDOW="1", AUTOPROF_CPU_RULE="off", AUTOPROF_MEM_RULE="off",
                    AUTOPROF_INFLIGHT_RULE="min=1,diff=-,abs=1")
    gaps: list[float] = []
    profiled = False
    for _ in range(20):
        # A request held in flight opens a capture; only /trickle requests are profiled.
        holder = threading.Thread(target=httpx.get, args=(server.url + "/hold",))
        holder.start()
        time.sleep(0.3)
        gap, body = first_byte_gap(server.url + "/trickle")
        holder.join()
        assert body == b"first\nsecond\n"
        gaps.append(gap)
        manifests = [json.loads(m.read_text()) for m in dump_dir.glob("*/*_manifest.json")]
        profiled = any(r["path"] == "/trickle" for m in manifests for r in m["requests"])
        if profiled and len(gaps) >= 2:
            break
    assert profiled
    # Not buffered: every first chunk arrived before the app's 1 s pause, not after it.
    assert min(gaps) >= 0.8, gaps
