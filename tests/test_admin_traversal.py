"""Path traversal, table-driven: no request to the admin route returns a byte from outside the
store's listing, whatever the encoding, through every adapter.

A secret file is planted next to the dump directory, a sibling directory whose name shares the
dump directory's prefix (``dumps-evil``) holds a capture-shaped copy of it, and symlinks to
both are planted inside the dump directory: as a file of a real capture, as a capture
directory, and as the manifest of a fake capture. Temp files and staging directories hold the
secret too. The payloads are raw request targets, decoded here as uvicorn (ASGI) and gunicorn
(WSGI) decode them; tests/e2e/test_admin_e2e.py sends the same table to the real servers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import anyio
import pytest
from werkzeug.test import EnvironBuilder

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware, CaptureInfo
from tests.test_admin_paths import call_asgi
from tests.test_admin_views import TOKEN, flask_app, plain_wsgi, starlette_app, write_capture

PREFIX = "/_autoprof"


@dataclass
class Planted:
    """What was planted around a dump directory holding the real capture ``real``."""

    secret: bytes
    secret_path: Path
    real: CaptureInfo
    evil_id: str
    link_id: str
    fake_id: str
    stage_id: str

    def listed_bytes(self) -> set[bytes]:
        return {(self.real.path / name).read_bytes() for name in self.real.files}


def plant(dump_dir: Path, real: CaptureInfo) -> Planted:
    """Plant the secret outside ``dump_dir`` and the traps inside it."""
    root = dump_dir.parent
    secret = b"TOP-SECRET-" + secrets.token_hex(16).encode()
    secret_path = root / "secret.txt"
    secret_path.write_bytes(secret)
    evil_id = "20250101T000000.000Z-p1-cpu-diff-beef"
    link_id = "20250101T000001.000Z-p1-cpu-diff-cafe"
    fake_id = "20250101T000002.000Z-p1-cpu-diff-f00d"
    stage_id = "20250101T000003.000Z-p1-cpu-diff-dead"

    sibling = root / f"{dump_dir.name}-evil" / evil_id
    sibling.mkdir(parents=True)
    (sibling / f"{evil_id}_manifest.json").write_bytes(b'{"secret": "' + secret + b'"}')
    (sibling / f"{evil_id}_heap.txt").write_bytes(secret)
    (sibling / f"{link_id}_manifest.json").write_bytes(b'{"secret": "' + secret + b'"}')
    (sibling / f"{link_id}_heap.txt").write_bytes(secret)

    os.symlink(secret_path, real.path / f"{real.id}_evil.txt")
    os.symlink(secret_path, real.path / f"{real.id}_link.html")
    (real.path / ".tmp-abc123").write_bytes(secret)
    os.symlink(sibling, dump_dir / link_id)
    fake = dump_dir / fake_id
    fake.mkdir()
    os.symlink(secret_path, fake / f"{fake_id}_manifest.json")
    (fake / f"{fake_id}_heap.txt").write_bytes(secret)
    staging = dump_dir / f".staging-{stage_id}"
    staging.mkdir()
    (staging / f"{stage_id}_manifest.json").write_bytes(b"{}")
    (staging / f"{stage_id}_heap.txt").write_bytes(secret)
    os.symlink(secret_path, dump_dir / "secret.txt")
    return Planted(secret, secret_path, real, evil_id, link_id, fake_id, stage_id)


ALLOWED_200 = {"query smuggling", "real file, download"}


def payloads(p: Planted) -> list[tuple[str, str]]:
    """(label, raw request target) pairs; only the labels in ALLOWED_200 may answer 200."""
    c, evil, link, fake = p.real.id, p.evil_id, p.link_id, p.fake_id
    secret_abs = str(p.secret_path)
    enc_abs = quote(secret_abs, safe="")
    cap = f"{PREFIX}/captures/{c}"
    table = [
        ("dotdot in file name", f"{cap}/../../secret.txt"),
        ("dotdot encoded slash", f"{cap}/..%2F..%2Fsecret.txt"),
        ("dotdot encoded lowercase", f"{cap}/..%2f..%2fsecret.txt"),
        ("dots encoded", f"{cap}/%2e%2e/%2e%2e/secret.txt"),
        ("all encoded", f"{cap}/%2e%2e%2f%2e%2e%2fsecret.txt"),
        ("double encoded", f"{cap}/%252e%252e%252f%252e%252e%252fsecret.txt"),
        ("double encoded slash", f"{cap}/..%252f..%252fsecret.txt"),
        ("dotdot as capture id", f"{PREFIX}/captures/../secret.txt"),
        ("dotdot encoded as capture id", f"{PREFIX}/captures/..%2f..%2fsecret.txt"),
        ("dotdot in id and name", f"{PREFIX}/captures/%2e%2e/secret.txt"),
        ("dotdot before captures", f"{PREFIX}/../captures/{c}/{c}_heap.txt"),
        ("dotdot after prefix", f"{PREFIX}/..%2fsecret.txt"),
        ("dotdot at prefix", f"{PREFIX}/../secret.txt"),
        ("dotdot encoded at prefix", f"{PREFIX}/%2e%2e%2fsecret.txt"),
        ("dotdot after status", f"{PREFIX}/status/../../secret.txt"),
        ("dotdot after file", f"{cap}/{c}_heap.txt/../../../secret.txt"),
        ("dotdot encoded after file", f"{cap}/{c}_heap.txt/..%2f..%2f..%2fsecret.txt"),
        ("dot name", f"{cap}/."),
        ("dotdot name", f"{cap}/.."),
        ("dotdot then id", f"{cap}/../{c}/{c}_heap.txt"),
        ("backslash", f"{cap}/..\\..\\secret.txt"),
        ("backslash encoded", f"{cap}/..%5c..%5csecret.txt"),
        ("backslash in id", f"{PREFIX}/captures/{c}\\..\\..\\secret.txt"),
        ("backslash and dots encoded", f"{cap}/%2e%2e%5c%2e%2e%5csecret.txt"),
        ("NUL after name", f"{cap}/{c}_heap.txt%00"),
        ("NUL then dotdot", f"{cap}/{c}_heap.txt%00/../../secret.txt"),
        ("NUL only", f"{cap}/%00"),
        ("NUL in id", f"{PREFIX}/captures/{c}%00/{c}_heap.txt"),
        ("absolute path as name", f"{cap}/{secret_abs}"),
        ("absolute path encoded", f"{cap}/{enc_abs}"),
        ("absolute path as id", f"{PREFIX}/captures/{enc_abs}"),
        ("absolute dir as id", f"{PREFIX}/captures/{quote(str(p.secret_path.parent), safe='')}"
                               "/secret.txt"),
        ("double slash", f"{PREFIX}//captures/{c}/..//..//secret.txt"),
        ("sibling dir via dotdot", f"{cap}/../../dumps-evil/{evil}/{evil}_heap.txt"),
        ("sibling dir encoded", f"{cap}/..%2f..%2fdumps-evil%2f{evil}%2f{evil}_heap.txt"),
        ("sibling dir as id", f"{PREFIX}/captures/..%2Fdumps-evil%2F{evil}/{evil}_heap.txt"),
        ("sibling capture id", f"{PREFIX}/captures/{evil}/{evil}_heap.txt"),
        ("sibling capture page", f"{PREFIX}/captures/{evil}"),
        ("symlinked file in capture", f"{cap}/{c}_evil.txt"),
        ("symlinked file download", f"{cap}/{c}_evil.txt?download=1"),
        ("symlinked html in capture", f"{cap}/{c}_link.html"),
        ("symlinked capture dir", f"{PREFIX}/captures/{link}"),
        ("symlinked capture dir file", f"{PREFIX}/captures/{link}/{link}_heap.txt"),
        ("symlinked capture dir manifest", f"{PREFIX}/captures/{link}/{link}_manifest.json"),
        ("symlinked manifest capture", f"{PREFIX}/captures/{fake}"),
        ("symlinked manifest capture file", f"{PREFIX}/captures/{fake}/{fake}_heap.txt"),
        ("symlink at dump root", f"{PREFIX}/captures/secret.txt"),
        ("temp file", f"{cap}/.tmp-abc123"),
        ("staging dir", f"{PREFIX}/captures/.staging-{p.stage_id}/{p.stage_id}_heap.txt"),
        ("overlong utf-8 dots", f"{cap}/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt"),
        ("unicode two-dot leader", f"{cap}/%e2%80%a5/secret.txt"),
        ("semicolon", f"{cap}/..;/..;/secret.txt"),
        ("four dots", f"{cap}/....//....//secret.txt"),
        ("tilde", f"{cap}/~/secret.txt"),
        ("upper-case id", f"{PREFIX}/captures/{c.upper()}/{c.upper()}_heap.txt"),
        ("query smuggling", f"{cap}/{c}_heap.txt?name=../../secret.txt&path={enc_abs}"),
        ("real file, download", f"{cap}/{c}_heap.txt?download=../../secret.txt"),
    ]
    return table


def check(p: Planted, label: str, status: int, body: bytes) -> None:
    assert p.secret not in body, f"{label}: the secret leaked (status {status})"
    if label in ALLOWED_200:
        assert status == 200, (label, status)
        assert body in p.listed_bytes(), label
    else:
        assert 400 <= status < 500, (label, status, body[:200])


# -- the adapters, fed raw targets decoded the way real servers decode them -------------------

def asgi_get(app: Any, targets: Iterable[str]) -> list[tuple[int, bytes]]:
    """uvicorn: ``path`` is the %-decoded (UTF-8) raw path; the query stays raw."""

    async def one(target: str) -> tuple[int, bytes]:
        raw_path, _, query = target.encode("latin-1").partition(b"?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "root_path": "",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query,
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {TOKEN}".encode())],
            "client": ("10.0.0.7", 50000), "server": ("testserver", 80),
        }
        answer = await call_asgi(app, scope)
        return answer.status, answer.body

    async def run() -> list[tuple[int, bytes]]:
        return [await one(t) for t in targets]

    return anyio.run(run)


def wsgi_get(app: Callable[..., Any], targets: Iterable[str]) -> list[tuple[int, bytes]]:
    """gunicorn: ``PATH_INFO`` is the %-decoded raw path as latin-1 text (PEP 3333)."""
    results = []
    for target in targets:
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)  # noqa: B023 -- called before the loop moves on
            return lambda data: None

        raw_path, _, query = target.partition("?")
        environ = EnvironBuilder(path="/", headers={"Authorization": f"Bearer {TOKEN}"},
                                 environ_overrides={"REMOTE_ADDR": "10.0.0.7"}).get_environ()
        environ["PATH_INFO"] = unquote_to_bytes(raw_path).decode("latin-1")
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = environ["REQUEST_URI"] = target
        body_iter = app(environ, start_response)
        try:
            body = b"".join(body_iter)
        finally:
            close = getattr(body_iter, "close", None)
            if close is not None:
                close()
        results.append((int(statuses[-1].split()[0]), body))
    return results


@pytest.fixture
def planted(make_autoprof: Callable[..., AutoProf], tmp_path: Path) -> tuple[AutoProf, Planted]:
    ap = make_autoprof(admin=True, admin_token=TOKEN, admin_max_failures=1000)
    real = write_capture(ap.store)
    return ap, plant(tmp_path / "dumps", real)


def test_the_table_is_big_and_the_traps_are_real(planted):
    ap, p = planted
    table = payloads(p)
    assert len(table) >= 40
    assert len({label for label, _ in table}) == len(table)
    assert p.secret_path.read_bytes() == p.secret
    assert (p.real.path / f"{p.real.id}_evil.txt").read_bytes() == p.secret  # a working link
    assert ap.store.directory.name == "dumps"
    assert (ap.store.directory.parent / "dumps-evil").is_dir()
    assert [c.id for c in ap.store.captures()] == [p.real.id]  # the traps are not listed
    assert ap.store.file_path(p.real.id, f"{p.real.id}_evil.txt") is None


@pytest.mark.parametrize("kind", ["asgi", "flask", "wsgi"])
def test_no_payload_returns_a_byte_from_outside_the_listing(planted, kind):
    ap, p = planted
    table = payloads(p)
    targets = [target for _, target in table]
    if kind == "asgi":
        app = starlette_app()
        app.add_middleware(AutoProfMiddleware, autoprof=ap)
        results = asgi_get(app, targets)
    elif kind == "flask":
        flask = flask_app()
        ap.init_app(flask)
        results = wsgi_get(flask, targets)
    else:
        results = wsgi_get(AutoProfWSGIMiddleware(plain_wsgi, autoprof=ap), targets)
    for (label, _), (status, body) in zip(table, results, strict=True):
        check(p, label, status, body)
    ok = [label for (label, _), (status, _) in zip(table, results, strict=True) if status == 200]
    assert sorted(ok) == sorted(ALLOWED_200)


def test_the_core_never_opens_what_the_listing_does_not_name(planted, monkeypatch):
    """Below the adapters: every path ``AdminApp`` opens is one the store listed."""
    import autoprof.admin.files as files

    ap, p = planted
    opened: list[Path] = []
    real_read = files.read_regular

    def spy(path: Path, limit: int = files.MAX_FILE) -> bytes | None:
        opened.append(path)
        return real_read(path, limit)

    monkeypatch.setattr(files, "read_regular", spy)
    app = starlette_app()
    app.add_middleware(AutoProfMiddleware, autoprof=ap)
    asgi_get(app, [target for _, target in payloads(p)])
    listed = {p.real.path / name for name in p.real.files}
    assert opened
    assert set(opened) <= listed
