"""A real S3-compatible server on 127.0.0.1 for the sink tests: moto's server (werkzeug, real
HTTP), run in this process so that it keeps its buckets when it is stopped and started again on
the same port, with a gate that can slow every PUT (to stop it in the middle of an upload)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3  # type: ignore[import-untyped]
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class _Gate:
    """WSGI wrapper: counts PUTs and delays each by :attr:`delay` seconds."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.delay = 0.0
        self.puts: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["REQUEST_METHOD"] == "PUT":
            self.puts.append(environ.get("PATH_INFO", ""))
            if self.delay:
                time.sleep(self.delay)
        return self.app(environ, start_response)


class S3Server:
    """``start()``, ``stop()``, ``start()`` again: same port, same buckets."""

    def __init__(self, bucket: str = "autoprof-test") -> None:
        self.bucket = bucket
        self.port = 0
        self.gate = _Gate(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What an app needs to reach this server through the standard AWS environment."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "2",  # botocore's own retries: keep the outage test short
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> None:
        server = make_server("127.0.0.1", self.port, self.gate, threaded=True,
                             request_handler=MotoRequestHandler)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def running(self) -> bool:
        return self._server is not None

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return found

    def get(self, key: str) -> bytes:
        body = self.client().get_object(Bucket=self.bucket, Key=key)["Body"]
        return bytes(body.read())

    def wait_for(self, keys: Callable[[], Iterable[str]] | str, timeout: float) -> bool:
        """Wait (bounded) until object ``keys`` exists (or the callable finds one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running:
                found = self.keys(keys) if isinstance(keys, str) else list(keys())
                if found:
                    return True
            time.sleep(0.1)
        return False
