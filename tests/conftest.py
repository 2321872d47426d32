"""Shared fixtures: a controller writing into tmp_path, stopped after the test."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprof import AutoProf, CaptureInfo


@pytest.fixture(autouse=True)
def _no_autoprof_environment() -> Iterator[None]:
    # The environment wins over code: a developer's AUTOPROF_* must not steer unit tests.
    # A MonkeyPatch of its own: the shared one would be undone after the test's fixtures.
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("AUTOPROF_")]:
            patch.delenv(name)
        yield


@pytest.fixture
def make_autoprof(tmp_path: Path) -> Iterator[Callable[..., AutoProf]]:
    """Build controllers with a private dump dir and a monitor that never samples on its own."""
    made: list[AutoProf] = []

    def make(**options: Any) -> AutoProf:
        options.setdefault("dump_dir", str(tmp_path / "dumps"))
        options.setdefault("collect_interval", 3600.0)
        ap = AutoProf(**options)
        made.append(ap)
        return ap

    yield make
    for ap in made:
        ap.stop(timeout=10)


def only_capture(ap: AutoProf) -> tuple[CaptureInfo, dict[str, Any]]:
    """Wait for pending writes, then return the single capture on disk and its manifest."""
    assert ap.flush(timeout=30), "dump writes did not finish"
    captures = ap.store.captures()
    assert len(captures) == 1, ([c.id for c in captures], ap.status())
    info = captures[0]
    manifest_name = next(f for f in info.files if f.endswith("_manifest.json"))
    manifest = json.loads((info.path / manifest_name).read_text())
    return info, manifest


def read_file(info: CaptureInfo, name: str) -> str:
    return (info.path / name).read_text()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
