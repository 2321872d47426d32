"""Profiles to files, with pyinstrument's own renderers (HTML view, speedscope JSON, text) and
autoprof's pprof export (:mod:`autoprof.pprof`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer, SpeedscopeRenderer
from pyinstrument.renderers.html import JSONForHTMLRenderer

from autoprof.pprof import PprofRenderer

HTML_MAX_SAMPLES = 100_000
"""Above this, pyinstrument's HTMLRenderer resamples the session itself: left to it."""


@functools.lru_cache(maxsize=1)
def _html_resources() -> tuple[str, str] | None:
    """pyinstrument's HTML view (app.js, app.css), read once: HTMLRenderer reads both files
    at every render, and each read lets the GIL go (under a CPU spike, a switch interval to
    get it back, several times per profile)."""
    import pyinstrument.renderers.html as html

    resources = Path(html.__file__).parent / "html_resources"
    try:
        js = (resources / "app.js").read_text(encoding="utf-8")
        css = (resources / "app.css").read_text(encoding="utf-8")
    except OSError:
        return None
    return js, css


class CachedHTMLRenderer(HTMLRenderer):
    """pyinstrument's HTMLRenderer, the same page, with its resources read once."""

    def render(self, session: Any) -> str:
        resources = _html_resources()
        if resources is None or len(session.frame_records) > HTML_MAX_SAMPLES:
            return str(super().render(session))
        json_renderer = JSONForHTMLRenderer()
        json_renderer.processors = self.preprocessors
        json_renderer.processor_options = self.preprocessor_options
        session_json = json_renderer.render(session)
        js, css = resources
        return f"""<!DOCTYPE html>
            <html>
            <head>
                <meta charset="utf-8">
            </head>
            <body>
                <div id="app"></div>

                <script>{js}</script>
                <style>{css}</style>

                <script>
                    const sessionData = {session_json};
                    pyinstrumentHTMLRenderer.render(document.getElementById('app'), sessionData);
                </script>
            </body>
            </html>
        """


# format -> (file extension, renderer factory)
FORMATS: dict[str, tuple[str, Any]] = {
    "html": ("html", CachedHTMLRenderer),
    "speedscope": ("speedscope.json", SpeedscopeRenderer),
    "text": ("txt", lambda: ConsoleRenderer(unicode=True, color=False, short_mode=False)),
    "pprof": ("pb.gz", PprofRenderer),
}


def render_session(session: Any, fmt: str) -> str | bytes:
    """Render a pyinstrument Session in one of :data:`FORMATS`: text, except pprof's bytes."""
    rendered = FORMATS[fmt][1]().render(session)
    return rendered if isinstance(rendered, bytes) else str(rendered)


def extension(fmt: str) -> str:
    """The file extension of a format."""
    return str(FORMATS[fmt][0])


def warm_up() -> None:
    """Read what rendering needs from disk now (call it from a thread with time to spare)."""
    _html_resources()
