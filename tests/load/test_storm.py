"""A trigger storm: four workers share one small dump directory and capture nonstop while a
reader polls it. The caps hold at every moment and no reader ever sees a partial file."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.load.conftest import Launch
from tests.load.test_load import fetch_all

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_BYTES = 1024 * 1024
MAX_CAPTURES = 4
STORM = {
    "AUTOPROF_COLLECT_INTERVAL": "0.05",
    "AUTOPROF_WINDOW": "1",
    "AUTOPROF_COOLDOWN": "0",
    "AUTOPROF_CPU_RULE": "off",
    "AUTOPROF_MEM_RULE": "off",
    "AUTOPROF_INFLIGHT_RULE": "min=1,diff=-,abs=1",
    "AUTOPROF_REQUESTS": "2",
    "AUTOPROF_CAPTURE_TIMEOUT": "0.5",
    "AUTOPROF_MAX_BYTES": str(MAX_BYTES),
    "AUTOPROF_MAX_CAPTURES": str(MAX_CAPTURES),
}


class Reader:
    """Polls the dump directory like an admin page or a CLI would, and keeps score."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.polls = 0
        self.peak_bytes = 0
        self.peak_captures = 0
        self.files_read = 0
        self.problems: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()

    def poll(self) -> None:
        self.polls += 1
        self.measure()
        captures = [e for e in os.scandir(self.directory) if not e.name.startswith(".")]
        for entry in captures:
            self.check_capture(Path(entry.path))

    def measure(self) -> None:
        """Bytes and captures on disk, read under a shared lock on the store's lock file.

        Writers change the directory only under the exclusive lock, so this sees real moments;
        a walk without it could count a capture being deleted plus the files that replace it,
        which never stand on disk together. (The content checks take no lock.)"""
        lock_path = self.directory / ".lock"
        if not lock_path.exists():
            return
        with open(lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            total = 0
            for root, _dirs, files in os.walk(self.directory):
                for name in files:
                    with contextlib.suppress(FileNotFoundError):
                        total += os.lstat(os.path.join(root, name)).st_size
            count = sum(1 for e in os.scandir(self.directory) if not e.name.startswith("."))
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_captures = max(self.peak_captures, count)

    def check_capture(self, path: Path) -> None:
        try:
            manifest = json.loads((path / f"{path.name}_manifest.json").read_text())
            for name in manifest["files"]:
                data = (path / name).read_bytes()
                self.files_read += 1
                if name.endswith(".json"):
                    json.loads(data)
                elif name.endswith(".html") and not data.rstrip().endswith(b"</html>"):
                    self.problems.append(f"truncated {name}")
                elif not data:
                    self.problems.append(f"empty {name}")
        except FileNotFoundError:
            if path.exists():  # only retention (which renames the whole capture away) may
                self.problems.append(f"{path.name}: a listed file is missing")
        except ValueError as exc:
            self.problems.append(f"{path.name}: {exc}")


def test_storm_keeps_caps_and_never_shows_a_partial_file(launch: Launch, tmp_path: Path):
    dump_dir = tmp_path / "dumps"
    server = launch(
        "flask", extra_args="--workers 4", AUTOPROF_DUMP_DIR=str(dump_dir), **STORM
    )
    reader = Reader(dump_dir)
    thread = threading.Thread(target=reader.run)
    thread.start()
    started = time.monotonic()
    try:
        urls = [f"/{('slow', 'fast', 'stream')[k % 3]}?i={k % 50}" for k in range(4000)]
        answers = asyncio.run(fetch_all(server.url, urls))
    finally:
        reader.stop.set()
        thread.join()
    assert [a for a in answers if isinstance(a, BaseException)] == []
    assert all(a[0] == 200 for a in answers)  # type: ignore[index]
    print(
        f"storm: {len(urls)} requests in {time.monotonic() - started:.1f}s, {reader.polls} polls, "
        f"{reader.files_read} files read, peak {reader.peak_bytes} bytes of {MAX_BYTES}, "
        f"peak {reader.peak_captures} captures of {MAX_CAPTURES}"
    )
    assert reader.problems == []
    assert reader.polls > 50
    assert reader.files_read > 0
    assert reader.peak_bytes <= MAX_BYTES
    assert reader.peak_captures <= MAX_CAPTURES
    # Under the storm, in-progress captures may evict every finished one; once the last
    # captures close (capture_timeout 0.5 s), some must be on disk.
    pids: set[int] = set()
    for _ in range(100):
        pids = {json.loads((p / f"{p.name}_manifest.json").read_text())["pid"]
                for p in dump_dir.iterdir() if not p.name.startswith(".")}
        if pids:
            break
        time.sleep(0.1)
    assert pids
    assert "Traceback" not in server.log()
