"""Profiles to files, with pyinstrument's own renderers (HTML view, speedscope JSON, text)."""

from __future__ import annotations

from typing import Any

from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer, SpeedscopeRenderer

# format -> (file extension, renderer factory)
FORMATS: dict[str, tuple[str, Any]] = {
    "html": ("html", HTMLRenderer),
    "speedscope": ("speedscope.json", SpeedscopeRenderer),
    "text": ("txt", lambda: ConsoleRenderer(unicode=True, color=False, short_mode=False)),
}


def render_session(session: Any, fmt: str) -> str:
    """Render a pyinstrument Session in one of :data:`FORMATS`."""
    return str(FORMATS[fmt][1]().render(session))


def extension(fmt: str) -> str:
    """The file extension of a format."""
    return str(FORMATS[fmt][0])
