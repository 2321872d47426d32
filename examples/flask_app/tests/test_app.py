"""The example app's own tests: a new app per test, autoprof attached by the factory."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient

from examples.flask_app.app import autoprof


def test_index_lists_the_dump_dir(client: FlaskClient, autoprof_dumps) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/")
    assert response.status_code == 200
    assert response.json["dump_dir"] == str(autoprof_dumps)


def test_cpu_route(client: FlaskClient) -> None:
    assert client.get("/cpu?seconds=0.01").status_code == 200


def test_memory_routes(client: FlaskClient) -> None:
    assert client.get("/mem?mb=1").json["held_mb"] >= 1
    assert client.post("/mem/release").json == {"held_mb": 0}


def test_a_capture_opened_in_a_test_is_written(client: FlaskClient) -> None:
    client.get("/")  # the first request starts autoprof in this process
    capture = autoprof.trigger("from-a-test")
    assert capture is not None
    for _ in range(autoprof.settings.requests):
        with client.get("/cpu?seconds=0.01") as response:
            assert response.status_code == 200
    assert autoprof.flush(timeout=30)
    [info] = [c for c in autoprof.store.captures() if c.id == capture.id]
    manifest = next(name for name in info.files if name.endswith("_manifest.json"))
    assert json.loads((info.path / manifest).read_text())["reason"] == "from-a-test"


def test_autoprof_can_be_off_for_a_test(app_without_autoprof: Flask) -> None:
    app = app_without_autoprof
    assert app.wsgi_app.__self__ is app  # type: ignore[attr-defined]  # not wrapped
    assert app.test_client().get("/cpu?seconds=0.01").status_code == 200
