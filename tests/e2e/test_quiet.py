"""No false alarms: the example apps under two minutes of steady, mixed, normal traffic, with
every default rule at a 1 s collect interval, write no capture."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter

import httpx
import pytest

from autoprof.config import METRICS, ROUTE_METRICS, Rule, Settings
from tests.e2e.conftest import Serve, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAFFIC_S = 120.0
CLIENTS = 3
MAX_REQUESTS = 60_000  # per app, a bound on the loop whatever the speed

NORMAL = {
    # route -> query: small, varied work, as a real app's requests
    "fastapi": [("/", {}), ("/cpu", {"seconds": "0.004"}), ("/block", {"seconds": "0.01"}),
                ("/stall", {"seconds": "0.003"})],
    "flask": [("/", {}), ("/cpu", {"seconds": "0.004"}), ("/block", {"seconds": "0.01"})],
}


def rule_text(rule: Rule | None) -> str:
    if rule is None:
        return "off"
    parts = {f.name: getattr(rule, f.name) for f in dataclasses.fields(Rule)}
    return ",".join(f"{name}={'-' if value is None else value}" for name, value in parts.items())


def default_settings() -> dict[str, str]:
    """Every rule at its default (the example apps lower some floors for the demo)."""
    defaults = Settings()
    env = {f"AUTOPROF_{m.upper()}_RULE": rule_text(getattr(defaults, f"{m}_rule"))
           for m in METRICS + ROUTE_METRICS}
    env.update(AUTOPROF_COLLECT_INTERVAL="1", AUTOPROF_WINDOW=str(defaults.window),
               AUTOPROF_COOLDOWN=f"{defaults.cooldown:g}", AUTOPROF_CPU_MAX="95")
    return env


def drive(server: Server, app: str, stop: float, statuses: Counter[int]) -> None:
    rng = random.Random(f"{app}-{threading.get_ident()}")
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        for _ in range(MAX_REQUESTS // CLIENTS):
            if time.monotonic() >= stop:
                return
            path, params = rng.choice(NORMAL[app])
            statuses[client.get(path, params=params).status_code] += 1
            time.sleep(rng.uniform(0.0, 0.02))


def test_normal_traffic_writes_no_capture_with_default_rules(serve: Serve) -> None:
    servers = {app: serve(app, **default_settings()) for app in NORMAL}
    stop = time.monotonic() + TRAFFIC_S
    counts: dict[str, Counter[int]] = {app: Counter() for app in servers}
    threads = [
        threading.Thread(target=drive, args=(server, app, stop, counts[app]))
        for app, server in servers.items()
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TRAFFIC_S + 60)
    for app, server in servers.items():
        assert set(counts[app]) == {200}, counts[app]
        assert sum(counts[app].values()) > 1000, counts[app]
        captures = server.captures()
        assert captures == [], (
            f"{app}: {[c.manifest['trigger']['description'] for c in captures]}\n"
            f"{server.log_tail()}"
        )
        assert "rule fired" not in server.log(), server.log_tail()
