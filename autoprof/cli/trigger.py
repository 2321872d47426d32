"""``autoprof trigger URL``: open a capture on a running app through its admin route.

Posts to ``{URL}{prefix}/trigger`` (``URL`` may also be the admin root itself) with the token
from ``AUTOPROF_ADMIN_TOKEN`` as a Bearer header: a token is never read from the command line,
where other users see it in the process list and shells keep it in their history.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit

from autoprof.cli.base import EXIT_NOTHING, EXIT_OK, SourceError, UsageError

TIMEOUT = 30.0


def admin_root(url: str, prefix: str) -> str:
    """The admin route's URL: ``url`` itself if its path ends with ``prefix``, else
    ``url`` + ``prefix``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"expected the app's http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"give the app's URL without a query or fragment: {url!r}")
    path = parts.path.rstrip("/")
    prefix = "/" + prefix.strip("/")
    if not path.endswith(prefix):
        path += prefix
    return f"{parts.scheme}://{parts.netloc}{path}"


def call(method: str, url: str, token: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one admin request."""
    request = urllib.request.Request(
        url, method=method, data=b"" if method == "POST" else None,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                 "User-Agent": "autoprof-cli"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach {url}: {reason}") from exc
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {"body": body}


def trigger(url: str, out: IO[str], err: IO[str], *, prefix: str, wait: float | None,
            as_json: bool, environ: Mapping[str, str] | None = None) -> int:
    """Open a capture now; with ``wait``, poll the admin index until it is written."""
    env = os.environ if environ is None else environ
    token = env.get("AUTOPROF_ADMIN_TOKEN")
    if not token:
        raise SourceError("set AUTOPROF_ADMIN_TOKEN to the app's admin token (it is never "
                          "taken from the command line)")
    root = admin_root(url, prefix)
    status, body = call("POST", f"{root}/trigger", token, TIMEOUT)
    detail = body.get("detail") or body.get("error") or f"HTTP {status}"
    if status in (401, 403, 429):
        raise SourceError(f"{root} refused the token: {detail}")
    if status == 404:
        raise SourceError(f"no admin route at {root} (is admin on, and the prefix "
                          f"{prefix!r}?)")
    if status in (409, 503):
        err.write(f"no capture opened: {detail}\n")
        return EXIT_NOTHING
    if status != 202 or "capture" not in body:
        raise SourceError(f"{root}/trigger answered {status}: {detail}")
    capture = str(body["capture"])
    if wait is not None:
        body["written"] = _wait_written(root, token, capture, wait)
    if as_json:
        json.dump(body, out, indent=1)
        out.write("\n")
    else:
        out.write(f"{capture}\n")
        err.write(f"capture {capture} opened: profiling the next {body.get('requests')} "
                  f"requests (at most {body.get('timeout')} s)\n")
        if wait is not None:
            err.write("written\n" if body["written"] else f"not written within {wait:g} s\n")
    if wait is not None and not body["written"]:
        return EXIT_NOTHING
    return EXIT_OK


def _wait_written(root: str, token: str, capture: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        status, body = call("GET", f"{root}/?format=json", token, TIMEOUT)
        if status == 200 and any(
            isinstance(c, dict) and c.get("id") == capture for c in body.get("captures") or []
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

