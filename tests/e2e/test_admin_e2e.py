"""The admin route under real servers: uvicorn (FastAPI) and gunicorn with two workers (Flask).

Off by default, then on: the auth matrix, the login cookie (valid in every gunicorn worker),
a manual capture that then shows in the index, viewing and downloading each file kind, the
status page's SVG, the traversal table sent as raw request targets, and the lockout. Request
counts and waits are bounded; the token must never reach the server's log.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from autoprof import DumpStore
from tests.e2e.conftest import Serve, Server
from tests.test_admin_traversal import ALLOWED_200, Planted, check, payloads, plant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TOKEN = "e2e-admin-token-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_FAILURES = 6
ADMIN_ON = {
    "AUTOPROF_ADMIN": "true",
    "AUTOPROF_ADMIN_TOKEN": TOKEN,
    "AUTOPROF_ADMIN_MAX_FAILURES": str(MAX_FAILURES),
    "AUTOPROF_CPU_RULE": "off",  # only manual captures: nothing else may appear
    "AUTOPROF_MEM_RULE": "off",
    "AUTOPROF_CAPTURE_TIMEOUT": "4",
}
APPS = ["fastapi-admin", "flask-admin"]


def assert_secure(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["cache-control"] == "no-store", response.url
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]


def raw_get(port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send ``target`` exactly as given (no client-side normalisation); (status, raw response).

    Status 0: the server closed the connection without answering."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(received) < 2**24:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    if not received.startswith(b"HTTP/"):
        return 0, received
    return int(received.split(b" ", 2)[1]), received


@pytest.mark.parametrize("app", APPS)
def test_off_by_default_the_app_keeps_its_paths(serve: Serve, app: str) -> None:
    server = serve(app)
    for path in ("/_autoprof", "/_autoprof/", "/_autoprof/status", "/_autoprof/login"):
        response = server.client.get(path, headers=AUTH)
        assert response.status_code == 404, (path, response.text)
        assert "content-security-policy" not in response.headers
    own = server.client.get("/_autoprof/hello")
    assert own.status_code == 200
    assert own.json() == {"owner": "app"}
    assert server.client.post("/_autoprof/trigger", headers=AUTH).status_code in (404, 405)
    assert server.captures() == []


@pytest.mark.parametrize("app", APPS)
def test_admin_route_end_to_end(serve: Serve, app: str) -> None:
    server = serve(app, **ADMIN_ON)
    check_auth_matrix(server)
    cookie = check_login(server)
    capture_id = check_manual_trigger(server)
    check_browse(server, capture_id, cookie)
    check_status(server, capture_id)
    check_traversal(server, capture_id)
    check_lockout(server, cookie, single_process=app.startswith("fastapi"))
    log = server.log()
    assert TOKEN not in log
    assert "Traceback" not in log, server.log_tail()


def check_auth_matrix(server: Server) -> None:
    client = server.client
    matrix: list[tuple[dict[str, Any], int]] = [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
        ({"Authorization": "Bearer " + TOKEN[:-1]}, 401),
        ({"Authorization": "Bearer tökén-ñon-ascii".encode()}, 401),
        ({"Authorization": "Bearer"}, 401),
        (AUTH, 200),
    ]
    for headers, status in matrix:
        response = client.get("/_autoprof/?format=json", headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert_secure(response)
    status, raw = raw_get(server.port, "/_autoprof/", {"Authorization": "Bearer "})
    assert status == 401, raw[:300]
    # Unicode digits (str.isdigit() is true, int() fails) in the cookie's expiry: no login.
    for stamp in ("\u00b2", "1\u00b2", "\u00b9\u00b2\u00b3"):
        cookie = {"Cookie": f"autoprof_admin={stamp}.{'ab' * 32}"}
        status, raw = raw_get(server.port, "/_autoprof/status", cookie)
        assert status == 401, raw[:300]
        assert b'action="/_autoprof/login"' in raw
    html = client.get("/_autoprof/status")
    assert html.status_code == 401
    assert 'action="/_autoprof/login"' in html.text
    assert client.get("/_autoprof/hello", headers=AUTH).status_code == 404  # the prefix is ours
    assert client.get("/").status_code == 200


def check_login(server: Server) -> str:
    client = server.client
    wrong = client.post("/_autoprof/login", data={"token": "nope"},
                        headers={"Sec-Fetch-Site": "same-origin"})
    assert wrong.status_code == 401
    cross = client.post("/_autoprof/login", data={"token": TOKEN},
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    response = client.post("/_autoprof/login", data={"token": TOKEN},
                           headers={"Origin": server.base_url})
    client.cookies.clear()
    assert response.status_code == 303, response.text
    set_cookie = response.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert TOKEN not in set_cookie
    cookie = set_cookie.split(";", 1)[0]
    for _ in range(6):  # gunicorn: whichever worker answers accepts it
        response = client.get("/_autoprof/status?format=json", headers={"Cookie": cookie})
        assert response.status_code == 200
    return cookie


def check_manual_trigger(server: Server) -> str:
    client = server.client
    assert client.get("/_autoprof/trigger", headers=AUTH).status_code == 405
    opened = client.post("/_autoprof/trigger", headers=AUTH)
    assert opened.status_code == 202, opened.text
    capture_id = opened.json()["capture"]
    assert "-manual-manual-" in capture_id

    conflicts = []
    for _ in range(3):  # gunicorn: the other worker may open one of its own first
        response = client.post("/_autoprof/trigger", headers=AUTH)
        conflicts.append(response.status_code)
        if response.status_code == 409:
            assert_secure(response)
            break
    assert 409 in conflicts, conflicts

    deadline = time.monotonic() + 15
    ids: list[str] = []
    while time.monotonic() < deadline:
        client.get("/")  # profiled requests close the capture (or its 4 s deadline does)
        index = client.get("/_autoprof/?format=json", headers=AUTH).json()
        ids = [c["id"] for c in index["captures"]]
        if capture_id in ids:
            break
        time.sleep(0.2)
    assert capture_id in ids, server.diagnose("the manual capture never appeared")
    entry = next(c for c in index["captures"] if c["id"] == capture_id)
    assert entry["reason"] == "manual"
    assert entry["host"] == socket.gethostname()
    assert entry["size"] > 0
    return str(capture_id)


def check_browse(server: Server, capture_id: str, cookie: str) -> None:
    client = server.client
    index = client.get("/_autoprof/", headers={"Cookie": cookie})
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert capture_id in index.text
    assert_secure(index)

    page = client.get(f"/_autoprof/captures/{capture_id}", headers={"Cookie": cookie})
    assert page.status_code == 200
    assert "manual trigger" in page.text
    capture_dir = server.dump_dir / capture_id
    names = sorted(p.name for p in capture_dir.iterdir())
    kinds = {n.split("_", 1)[1] for n in names}
    assert {"heap.txt", "heap.json", "threads.txt", "manifest.json"} <= kinds
    assert any(k.endswith(".html") for k in kinds), kinds
    assert any(k.endswith(".speedscope.json") for k in kinds), kinds
    types = {".html": "text/html", ".json": "application/json", ".txt": "text/plain"}
    for name in names:
        assert f"/_autoprof/captures/{capture_id}/{name}" in page.text
        url = f"/_autoprof/captures/{capture_id}/{name}"
        on_disk = (capture_dir / name).read_bytes()
        expected = next(v for k, v in types.items() if name.endswith(k))
        view = client.get(url, headers=AUTH)
        assert view.status_code == 200, name
        assert view.headers["content-type"].startswith(expected)
        assert_secure(view)
        if name.endswith(".html"):
            assert view.headers["content-security-policy"].startswith("sandbox allow-scripts")
            assert b"pyinstrumentHTMLRenderer" in view.content
            assert len(view.content) > len(on_disk)  # the storage stand-in was added
        else:
            assert view.content == on_disk
        download = client.get(url, params={"download": "1"}, headers={"Cookie": cookie})
        assert download.status_code == 200
        assert download.content == on_disk
        assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
    manifest = json.loads((capture_dir / f"{capture_id}_manifest.json").read_text())
    assert manifest["trigger"]["reason"] == "manual"


def check_status(server: Server, capture_id: str) -> None:
    client = server.client
    # Each worker shows its own monitor's samples: one that has just served its first request
    # has none yet, so ask again (a new connection may reach another worker) for a few seconds.
    deadline = time.monotonic() + 10
    while True:
        page = client.get("/_autoprof/status", headers=AUTH)
        data = client.get("/_autoprof/status", params={"format": "json"}, headers=AUTH).json()
        mine = any(t["label"].startswith(capture_id) for t in data["triggers"])
        if '<polyline class="cpu"' in page.text and data["history"] and mine:
            break  # the worker that opened the capture, with samples
        assert time.monotonic() < deadline, "no samples in the status history: " + page.text
        time.sleep(0.2)
    assert page.status_code == 200
    assert_secure(page)
    assert "<svg" in page.text
    assert "<script" not in page.text
    assert data["running"] is True
    assert isinstance(data["errors"], dict)


def check_traversal(server: Server, capture_id: str) -> None:
    real = DumpStore(server.dump_dir).get(capture_id)
    assert real is not None
    planted: Planted = plant(server.dump_dir, real)
    table = payloads(planted)
    statuses = {}
    for label, target in table:
        status, raw = raw_get(server.port, target, AUTH)
        body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
        assert planted.secret not in raw, f"{label}: the secret leaked"
        check(planted, label, status or 400, body)
        statuses[label] = status
    assert {label for label, s in statuses.items() if s == 200} == ALLOWED_200


def check_lockout(server: Server, cookie: str, *, single_process: bool) -> None:
    client = server.client
    wrong = {"Authorization": "Bearer wrong-token-for-lockout"}
    locked = None
    # gunicorn counts per worker: within 2 * MAX_FAILURES + 1 attempts one worker locks.
    for _ in range(2 * MAX_FAILURES + 1):
        response = client.get("/_autoprof/", headers=wrong)
        if response.status_code == 429:
            locked = response
            break
        assert response.status_code == 401
    assert locked is not None, "no lockout"
    assert_secure(locked)
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    assert client.get("/_autoprof/", headers=wrong).status_code in ((429,) if single_process
                                                                   else (401, 429))
    assert client.get("/_autoprof/", headers=AUTH).status_code == 200  # never locked out
    assert client.get("/_autoprof/", headers={"Cookie": cookie}).status_code == 200
