"""Profile rendering: autoprof's HTML is pyinstrument's page, with its resources read once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pyinstrument import Profiler
from pyinstrument.renderers import HTMLRenderer

from autoprof import render


def _session() -> Any:
    profiler = Profiler(interval=0.0001)
    profiler.start()
    deadline = time.perf_counter() + 0.02
    while time.perf_counter() < deadline:
        sum(i * i for i in range(500))
    return profiler.stop()


def test_html_is_pyinstruments_page_and_reads_its_resources_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _session()
    expected = HTMLRenderer().render(session)
    render._html_resources.cache_clear()
    reads: list[str] = []
    real_read_text = Path.read_text

    def counting_read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(self.name)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    render.warm_up()
    pages = [render.render_session(session, "html") for _ in range(3)]
    assert pages == [expected] * 3
    assert sorted(reads) == ["app.css", "app.js"]
    assert "pyinstrumentHTMLRenderer.render" in pages[0]


def test_html_falls_back_to_pyinstrument_without_its_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _session()
    render._html_resources.cache_clear()
    monkeypatch.setattr(render, "_html_resources", lambda: None)
    assert render.render_session(session, "html") == HTMLRenderer().render(session)
