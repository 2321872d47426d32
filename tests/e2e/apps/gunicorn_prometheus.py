"""gunicorn config for prometheus_client's multiprocess mode: a dead worker's live gauges go."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
