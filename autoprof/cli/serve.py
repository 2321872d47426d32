"""``autoprof serve``: the admin pages, read-only, over a dump directory or a sink.

A standard-library threading HTTP server hands each request to
:class:`autoprof.admin.browse.BrowseApp`. It binds 127.0.0.1 by default; any other address
needs a token (``AUTOPROF_ADMIN_TOKEN``, never on the command line), which every request must
then present (Bearer header or the login form's cookie). Without a token only requests whose
``Host`` is a loopback name are answered.
"""

from __future__ import annotations

import ipaddress
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import AF_INET6
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from autoprof.admin.browse import BrowseApp
from autoprof.admin.http import AdminRequest, BodyReader
from autoprof.admin.source import CaptureSource, StoreSource
from autoprof.cli.base import EXIT_OK, Source, UsageError
from autoprof.cli.sources import DirSource
from autoprof.config_checks import ADMIN_TOKEN_MIN


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(host: str, token: str | None) -> str | None:
    """The token to require (None: loopback without one); UsageError when it cannot serve."""
    if token is not None and len(token) < ADMIN_TOKEN_MIN:
        raise UsageError(f"AUTOPROF_ADMIN_TOKEN must have at least {ADMIN_TOKEN_MIN} characters")
    if token is None and not is_loopback(host):
        raise UsageError(f"serving on {host} needs a token: set AUTOPROF_ADMIN_TOKEN (at least "
                         f"{ADMIN_TOKEN_MIN} characters); without one, serve on 127.0.0.1")
    return token


def make_handler(app: BrowseApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "autoprof"
        sys_version = ""

        def do_GET(self) -> None:
            self._answer(b"")

        def do_HEAD(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            reader = BodyReader(self.headers.get("Content-Length"))
            if reader.wanted:
                reader.add(self.rfile.read(reader.wanted), more=False)
            if reader.refused is not None:
                self.send_error(reader.refused)
                return
            self._answer(reader.body)

        def _answer(self, body: bytes) -> None:
            target = urlsplit(self.path)
            request = AdminRequest.build(
                method=self.command,
                path=unquote(target.path),
                base=app.base,
                query_string=target.query,
                headers=[(k, v) for k, v in self.headers.items()],
                body=body,
                client=self.client_address[0],
            )
            response = app.handle(request)
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


class _Server6(ThreadingHTTPServer):
    address_family = AF_INET6


def browse_source(source: Source) -> CaptureSource[Any]:
    """A dump directory is served with the app's own store reader; a sink as it is."""
    if isinstance(source, DirSource):
        return StoreSource(source.store)
    return source


def serve(source: Source, err: IO[str], *, host: str, port: int, token: str | None) -> int:
    """Serve until interrupted; prints the URL on stderr once listening."""
    token = check_token(host, token)
    app = BrowseApp(browse_source(source), token=token)
    server_class = _Server6 if ":" in host else ThreadingHTTPServer
    server = server_class((host.strip("[]"), port), make_handler(app))
    server.daemon_threads = True
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    err.write(f"serving {source.name} read-only on http://{shown}:{bound_port}/"
              f"{' (token required)' if token else ''}; Ctrl-C stops\n")
    err.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK
