"""The manifest's schema, checked against manifests a real capture wrote."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from autoprof import AutoProf
from autoprof.capture.schema import MANIFEST_SCHEMA, field_table
from autoprof.wsgi import AutoProfWSGIMiddleware

_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool,
                          "null": type(None), "integer": int, "number": (int, float)}


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """The schema's complaints about ``value`` (the subset of JSON Schema it uses)."""
    found = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        bad_bool = isinstance(value, bool) and "boolean" not in kinds
        if bad_bool or not any(isinstance(value, _TYPES[k]) for k in kinds):
            return [f"{where}: {type(value).__name__} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        found += [f"{where}: {k} missing" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            found += [f"{where}: {k} is not in the schema" for k in value if k not in props]
        for key, sub in props.items():
            if key in value:
                found += problems(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    return found


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    sum(range(20_000))
    return [environ["PATH_INFO"].encode()]


def real_manifest(tmp_path: Path) -> dict[str, Any]:
    ap = AutoProf(dump_dir=str(tmp_path), requests=2, capture_timeout=20, collect_interval=0.2)
    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    try:
        ap.ensure_started()
        capture = ap.trigger()
        assert capture is not None
        capture.take_census()
        first = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/first"}, lambda *a: None)
        second = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/second"}, lambda *a: None)
        for body in (second, first):  # the second to start finishes first
            assert b"".join(body)
            body.close()  # type: ignore[attr-defined]
        assert ap.flush(20)
        assert capture.info is not None
        name = next(f for f in capture.info.files if f.endswith("_manifest.json"))
        return dict(json.loads((capture.info.path / name).read_text()))
    finally:
        ap.stop()


def test_a_real_manifest_matches_the_schema(tmp_path: Path):
    manifest = real_manifest(tmp_path)
    assert problems(manifest, MANIFEST_SCHEMA) == []
    # Requests in start order, whatever order they finished in.
    assert [(r["index"], r["path"]) for r in manifest["requests"]] == [(1, "/first"),
                                                                        (2, "/second")]
    # ISO 8601 UTC beside every epoch time, naming the same moment.
    for epoch, text in ((manifest["opened_at"], manifest["opened_at_iso"]),
                        (manifest["closed_at"], manifest["closed_at_iso"]),
                        (manifest["trigger"]["time"], manifest["trigger"]["time_iso"]),
                        (manifest["requests"][0]["started_at"],
                         manifest["requests"][0]["started_at_iso"])):
        assert text.endswith("Z")
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert abs(moment.timestamp() - epoch) < 0.001
    assert manifest["fired"] == [{"metric": "manual", "subject": None, "value": 0.0,
                                  "unit": None, "text": "manual"}]
    assert manifest["requests"][0]["cpu_s"] is not None  # WSGI: the request's own thread


def test_the_schema_refuses_what_it_does_not_describe(tmp_path: Path):
    manifest = real_manifest(tmp_path)
    manifest["mystery"] = 1
    manifest["requests"][0]["duration_s"] = "slow"
    del manifest["trigger"]["unit"]
    assert sorted(problems(manifest, MANIFEST_SCHEMA)) == sorted([
        "$: mystery is not in the schema",
        "$.requests[0].duration_s: str is not ['number', 'null']",
        "$.trigger: unit missing",
    ])


def test_the_readme_table_names_every_field_with_its_meaning():
    table = field_table()
    for name in MANIFEST_SCHEMA["properties"]:
        assert f"| `{name}` |" in table
    assert "| `requests[].cpu_s` | number or null | CPU time of its thread, seconds; null under " \
           "ASGI" in table
