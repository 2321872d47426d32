"""AutoProfWSGIMiddleware and the Flask extension, in-process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client, EnvironBuilder

from autoprof import AutoProf, AutoProfWSGIMiddleware, ConfigError, Rule
from tests.conftest import only_capture, read_file
from tests.test_asgi import spin


class Body:
    """A response iterable that records whether the server closed it."""

    def __init__(self, chunks: list[bytes], work: float = 0.0) -> None:
        self.chunks = chunks
        self.work = work
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.work:
                stream_work(self.work)
            yield chunk

    def close(self) -> None:
        self.closed = True


def stream_work(seconds: float) -> int:
    return spin(seconds)


def environ(path: str = "/x", query: str = "") -> dict[str, Any]:
    return EnvironBuilder(path=path, query_string=query).get_environ()


def call(app: Any, env: dict[str, Any]) -> tuple[list[str], Iterable[bytes]]:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    return statuses, app(env, start_response)


def test_in_flight_lasts_until_the_server_closes_the_body(make_autoprof):
    ap = make_autoprof()
    body = Body([b"a", b"b"])

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    statuses, result = call(AutoProfWSGIMiddleware(app, autoprof=ap), environ())
    assert statuses == ["200 OK"]
    assert len(ap.inflight) == 1  # returned, but the body has not been sent yet
    assert b"".join(result) == b"ab"
    assert len(ap.inflight) == 1
    result.close()  # type: ignore[attr-defined]
    assert body.closed
    assert ap.inflight == {}


def test_a_body_closed_twice_is_one_request_and_a_late_start_response_fails(make_autoprof):
    ap = make_autoprof()
    starts: list[Any] = []

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        starts.append(start_response)
        start_response("200 OK", [])
        return [b"x"]

    _, result = call(AutoProfWSGIMiddleware(app, autoprof=ap), environ("/twice"))
    assert b"".join(result) == b"x"
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert ap.inflight == {}
    assert ap.requests is not None
    assert [(e.path, e.status) for e in ap.requests.pending()] == [("/twice", "200 OK")]
    with pytest.raises(RuntimeError, match="after the response was closed"):
        starts[0]("500 Internal Server Error", [])


def test_an_app_exception_is_one_failed_request_in_the_log(make_autoprof):
    ap = make_autoprof()

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        raise ValueError("app bug")

    with pytest.raises(ValueError, match="app bug"):
        call(AutoProfWSGIMiddleware(app, autoprof=ap), environ("/boom"))
    assert ap.inflight == {}
    assert ap.requests is not None
    assert [(e.path, e.status) for e in ap.requests.pending()] == [("/boom", 0)]
    assert ap.requests.drain().errors == 1
    (kept,) = ap.requests.recent_exceptions()
    assert kept["path"] == "/boom"


def test_app_exception_passes_through_unchanged(make_autoprof):
    ap = make_autoprof(requests=1)
    raised = KeyError("app bug")

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        raise raised

    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    for _ in range(2):  # idle, then profiled
        with pytest.raises(KeyError) as info:
            call(middleware, environ())
        assert info.value is raised
        ap.trigger()
    _, manifest = only_capture(ap)
    assert manifest["requests"][0]["error"] == "KeyError"
    assert ap.inflight == {}


def test_profiled_request_covers_body_iteration_and_thread_cpu(make_autoprof):
    ap = make_autoprof(requests=1)

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        start_response("201 Created", [])
        spin(0.05)
        return Body([b"1", b"2"], work=0.05)

    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    ap.trigger()
    _, result = call(middleware, environ("/stream", "password=hunter2"))
    assert b"".join(result) == b"12"
    assert ap.capture is not None  # still open: the body has not been closed yet
    result.close()  # type: ignore[attr-defined]
    info, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert record["path"] == "/stream"
    assert record["status"] == 201
    assert record["cpu_s"] > 0.05  # thread CPU time of the app call and the body
    assert record["duration_s"] >= 0.15
    text = read_file(info, record["files"]["text"])
    assert "stream_work" in text  # the body's work is in the profile
    assert "hunter2" not in json.dumps(manifest)


def test_profiles_are_per_thread(make_autoprof):
    ap = make_autoprof(requests=3)

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        spin(0.05)
        return [b"ok"]

    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    ap.trigger()
    client = Client(middleware)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with client.get("/t") as response:  # closing it ends the request
                assert response.data == b"ok"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _, manifest = only_capture(ap)
    assert len({r["thread"] for r in manifest["requests"]}) == 3
    assert all(not r["problems"] for r in manifest["requests"])


def make_flask() -> Flask:
    app = Flask("flask_test")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        spin(0.03)
        return {"id": item_id}

    return app


def test_flask_extension_reads_config_and_records_route(tmp_path):
    app = make_flask()
    app.config.update(
        AUTOPROF_DUMP_DIR=str(tmp_path / "d"),
        AUTOPROF_REQUESTS="1",
        AUTOPROF_WINDOW=3,
        AUTOPROF_MEM_RULE="3,25,80",
        AUTOPROF_COLLECT_INTERVAL="1h",
    )
    ap = AutoProf(app, requests=9, window=8)
    try:
        assert app.extensions["autoprof"] is ap
        assert ap.settings.requests == 1
        assert ap.settings.window == 3
        assert ap.settings.mem_rule == Rule(3, 25, 80)
        client = app.test_client()
        assert client.get("/items/1").json == {"id": 1}
        ap.trigger()
        with client.get("/items/2") as response:  # the server closes the body
            assert response.json == {"id": 2}
        info, manifest = only_capture(ap)
        record = manifest["requests"][0]
        assert record["route"] == "/items/<int:item_id>"
        assert record["path"] == "/items/2"
        assert "item" in read_file(info, record["files"]["text"])
    finally:
        ap.stop()


def test_flask_init_app_factory_pattern_and_bad_config(tmp_path):
    ap = AutoProf(dump_dir=str(tmp_path / "d"), collect_interval=3600)
    app = make_flask()
    ap.init_app(app)
    ap.init_app(app)  # idempotent for the same app
    assert app.extensions["autoprof"] is ap
    assert app.test_client().get("/items/3").status_code == 200
    ap.stop()

    bad = make_flask()
    bad.config["AUTOPROF_COLLECT_INTERVL"] = 1
    with pytest.raises(ConfigError, match="did you mean 'AUTOPROF_COLLECT_INTERVAL'"):
        AutoProf(bad, dump_dir=str(tmp_path / "d"))
    other = make_flask()
    other.extensions["autoprof"] = object()
    with pytest.raises(RuntimeError, match="already has an autoprof controller"):
        AutoProf(other, dump_dir=str(tmp_path / "d"))
