"""The FastAPI example plus a route of its own under the admin prefix (``/_autoprof/hello``):
with the admin route off it must answer; with it on, the prefix is autoprof's."""

from __future__ import annotations

from examples.fastapi_app.app import app, autoprof

__all__ = ["app", "autoprof"]


@app.get("/_autoprof/hello")
async def own_route() -> dict[str, str]:
    return {"owner": "app"}
