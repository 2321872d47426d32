"""Spellings of the admin path under real servers (issue 12, finding 1).

Raw request targets (no client-side normalisation) go to uvicorn (FastAPI) and gunicorn
(Flask, whose ``after_request`` hook loosens every answer it can): a spelling the app's router
or Flask's ``request.path`` would put under the prefix (``//_autoprof/...``,
``/%2F_autoprof/...``, ``/%5Fautoprof/...``) is answered by the admin with its own headers,
never by the app and never profiled; other spellings (``/./_autoprof``, ``/_AUTOPROF``) are the
app's. tests/test_admin_paths.py checks the same agreement on generated spellings in-process.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Serve, Server
from tests.e2e.test_admin_e2e import ADMIN_ON, AUTH, TOKEN, raw_get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ADMIN_SPELLINGS = ["//_autoprof/status", "///_autoprof/", "/%2F_autoprof/status",
                   "/%5Fautoprof/status", "//_autoprof"]
APP_SPELLINGS = ["/./_autoprof/status", "/_AUTOPROF/status", "/_autoprofx/status",
                 "/x/../_autoprof/status"]


def parse(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split(" ", 2)[1]), headers, body


def assert_admin_answer(headers: dict[str, list[str]], target: str) -> None:
    assert headers.get("x-frame-options") == ["DENY"], (target, headers)
    assert headers.get("cache-control") == ["no-store"], (target, headers)
    csp = headers.get("content-security-policy", [])
    assert len(csp) == 1, (target, headers)
    assert "default-src 'none'" in csp[0]
    assert "frame-ancestors 'none'" in csp[0]
    assert not [k for k in headers if k.startswith("access-control-")], (target, headers)


@pytest.mark.parametrize("app", ["fastapi-admin", "flask-admin"])
def test_admin_path_spellings_under_real_servers(serve: Serve, app: str) -> None:
    server = serve(app, **ADMIN_ON)
    for target in ADMIN_SPELLINGS:
        raw = raw_get(server.port, target, {})[1]
        code, headers, _ = parse(raw)
        assert code == 401, (target, raw[:300])
        assert_admin_answer(headers, target)
        code, headers, body = parse(raw_get(server.port, target + "?format=json", AUTH)[1])
        assert code == 200, (target, body[:300])
        assert_admin_answer(headers, target)
    code, headers, body = parse(raw_get(server.port, "//_autoprof/hello", AUTH)[1])
    assert code == 404, body[:300]  # the prefix is autoprof's: the app's own route is not run
    assert b"owner" not in body
    assert_admin_answer(headers, "//_autoprof/hello")
    for target in APP_SPELLINGS:
        code, headers, body = parse(raw_get(server.port, target, AUTH)[1])
        assert code == 404, (target, body[:300])
        assert "default-src 'none'" not in " ".join(headers.get("content-security-policy", []))
    check_not_profiled(server)
    log = server.log()
    assert TOKEN not in log
    assert "Traceback" not in log, server.log_tail()


def check_not_profiled(server: Server) -> None:
    """Admin requests, however spelled, are never among a capture's profiled requests."""
    opened = server.client.post("/_autoprof/trigger", headers=AUTH)
    assert opened.status_code == 202, opened.text
    capture_id = opened.json()["capture"]
    for _ in range(12):  # gunicorn: spread over both workers (each connection is closed)
        for target in ("//_autoprof/status?format=json", "/%2F_autoprof/?format=json"):
            status, raw = raw_get(server.port, target, AUTH)
            assert status == 200, raw[:300]
    for _ in range(4):
        assert server.client.get("/").status_code == 200  # these may be profiled
    capture = server.wait_for_capture(lambda c: c.id == capture_id, timeout=20)
    assert capture is not None, server.log_tail()
    paths = [r["path"] for r in capture.requests]
    assert not [p for p in paths if "autoprof" in p.lower()], paths
