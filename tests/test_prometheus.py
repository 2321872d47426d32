"""autoprof.prometheus without a server: the multiprocess writer's bounded, sticky route series
and its counters (in a child process that runs prometheus_client in multiprocess mode), and the
admin route's answer when the extra is not installed. The real servers are in
tests/e2e/test_prometheus_e2e.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoprof import AutoProf
from autoprof.admin import AdminApp, AdminRequest

TOKEN = "unit-prometheus-token-0123456789abcdef"

WRITER = textwrap.dedent("""
    import dataclasses, json, os, sys, types
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from autoprof import AutoProf
    from autoprof.prometheus import MultiprocessWriter

    ap = AutoProf(environ={}, dump_dir=sys.argv[1])
    base = ap.snapshot()
    current = {"status": base}
    stub = types.SimpleNamespace(snapshot=lambda: current["status"], settings=ap.settings)
    writer = MultiprocessWriter(stub, max_routes=2)

    def route(key, p95):
        return {"route": key, "p95_ms": p95, "threshold_ms": None}

    def write(routes, errors):
        current["status"] = dataclasses.replace(base, routes=routes, errors=errors)
        writer.write()

    write([route("GET /a", 100.0), route("GET /b", 200.0)], {"monitor.sample": 2})
    write([route("GET /c", 300.0), route("GET /a", 150.0)], {"monitor.sample": 5, "x": 1})
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(json.dumps([os.getpid(), [[s.name, s.labels, s.value] for m in registry.collect()
                                    for s in m.samples]], default=str))
""")


def test_multiprocess_writer_bounds_routes_and_counts_rises(tmp_path: Path) -> None:
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    env = {k: v for k, v in env.items() if not k.startswith("AUTOPROF_")}
    out = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "dumps")], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    pid, samples = json.loads(out.stdout.strip().splitlines()[-1])
    p95 = {s[1]["route"]: s[2] for s in samples
           if s[0] == "autoprof_route_latency_p95_seconds"}
    # at most two routes ever: /c came third and is left out; /b, gone from the worst, is NaN
    assert set(p95) == {"/a", "/b"}, p95
    assert p95["/a"] == pytest.approx(0.15)
    assert math.isnan(p95["/b"])
    assert {s[1]["pid"] for s in samples  # per worker
            if s[0] == "autoprof_route_latency_p95_seconds"} == {str(pid)}
    errors = {s[1]["place"]: s[2] for s in samples if s[0] == "autoprof_errors_total"}
    assert errors == {"monitor.sample": 5, "x": 1}  # the rises, added up: 2 + 3, then 1
    # a threshold never known is no series at all (not a made-up 0)
    assert not [s for s in samples if s[0] == "autoprof_route_latency_threshold_seconds"]
    assert not [s for s in samples if s[0] == "autoprof_cpu_threshold_ratio"]


def test_admin_metrics_without_the_extra_names_it(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ap = AutoProf(environ={}, dump_dir=str(tmp_path), admin=True, admin_token=TOKEN)
    admin = AdminApp(ap)
    request = AdminRequest("GET", "/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    answer = admin.handle(request)
    assert answer.status == 200
    assert b"autoprof_captures_opened_total" in answer.body

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "autoprof.prometheus")
    answer = admin.handle(request)
    assert answer.status == 404
    assert b"pip install 'autoprof-web[prometheus]'" in answer.body
    assert ap.errors.total == 0
    assert admin.handle(AdminRequest("GET", "/metrics")).status == 401


def test_a_failing_write_is_counted_never_raised(tmp_path: Path) -> None:
    from autoprof.prometheus import MultiprocessWriter

    ap = AutoProf(environ={}, dump_dir=str(tmp_path))

    def broken() -> None:
        raise RuntimeError("snapshot failed")

    ap.snapshot = broken  # type: ignore[method-assign,assignment]
    MultiprocessWriter(ap).write()
    assert ap.errors.snapshot() == {"prometheus.write": 1}
