"""A FastAPI app whose memory misbehaves where a host has no memory limit (test_memory_e2e.py).

- ``GET /leak?mib=4``: every call keeps ``mib`` MiB for good, in :func:`remember_request`
  (a module-level list, ``LEAKED_RECORDS``): a steady leak that the ``mem`` rule (percent of
  host RAM) never sees and the ``rss_growth`` rule catches.
- ``GET /report?mib=350&hold=1.5``: a *sync* endpoint (FastAPI's threadpool) whose
  :func:`build_big_report` holds one big buffer in a local variable for ``hold`` seconds,
  then lets it go: a transient the ``rss`` rule catches, and the census's "largest" names.

autoprof comes from the environment only (``AUTOPROF_*``, set by the e2e ``serve`` fixture).
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Query

from autoprof import AutoProf, AutoProfMiddleware

MIB = 2**20

autoprof = AutoProf.from_env()

app = FastAPI(title="autoprof e2e: memory on a host without a limit")
app.add_middleware(AutoProfMiddleware, autoprof=autoprof)

LEAKED_RECORDS: list[bytearray] = []


@app.get("/")
async def index() -> dict[str, object]:
    """Where the dumps go (the e2e fixture checks it)."""
    return {"dump_dir": str(autoprof.store.directory), "leaked": len(LEAKED_RECORDS)}


@app.get("/autoprof-status")
async def autoprof_status() -> dict[str, object]:
    status = autoprof.status()
    return {"errors": status["errors"], "skipped": status["skipped"], "rules": status["rules"]}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def remember_request(mib: int) -> int:
    LEAKED_RECORDS.append(bytearray(mib * MIB))  # LEAK-LINE
    return len(LEAKED_RECORDS)


@app.get("/leak")
async def leak(mib: int = Query(4, ge=1, le=64)) -> dict[str, int]:
    return {"records": remember_request(mib)}


def build_big_report(mib: int, hold: float) -> int:
    report_buffer = bytearray(mib * MIB)  # REPORT-LINE
    time.sleep(hold)
    return len(report_buffer)


@app.get("/report")
def report(
    mib: int = Query(350, ge=1, le=1024), hold: float = Query(1.5, gt=0, le=10)
) -> dict[str, int]:
    return {"bytes": build_big_report(mib, hold)}
