"""The README's first command, run as a user runs it: ``python examples/demo.py``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_writes_its_three_captures_and_shows_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for title in ("memory capture", "event-loop capture", "CPU capture"):
        assert f"=== {title} " in result.stdout, output
    dump_dir = Path(re.search(r"dump directory: (\S+)", result.stdout)[1])  # type: ignore[index]
    assert dump_dir.is_relative_to(tmp_path)
    manifests = list(dump_dir.glob("*/*_manifest.json"))
    assert len(manifests) >= 3, output
    # what it prints comes from the files: the blocking and the allocating lines
    assert "fetch_report_synchronously" in result.stdout
    assert "bytearray(mb * 2**20)" in result.stdout
    assert "burn_cpu" in result.stdout
    # The commands it suggests work as printed, on what it wrote.
    suggested = re.findall(r"^  (\S+ (?:ls|show) .+)$", result.stdout, re.M)
    assert len(suggested) == 2, output
    listed = subprocess.run(shlex.split(suggested[0]), capture_output=True, text=True,
                            timeout=60, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert all(m.parent.name in listed.stdout for m in manifests), listed.stdout
    shown = subprocess.run(shlex.split(suggested[1]), capture_output=True, text=True,
                           timeout=60, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Why:" in shown.stdout, shown.stdout
