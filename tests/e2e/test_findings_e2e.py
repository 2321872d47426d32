"""The findings summary of a real capture: the FastAPI example under uvicorn, a CPU spike."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import Serve, source_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP_FILE = "examples/fastapi_app/app.py"


def test_cpu_capture_summary_names_the_hot_function(serve: Serve) -> None:
    burn_line = source_line(APP_FILE, "def burn_cpu(")
    server = serve("fastapi", AUTOPROF_MEM_RULE="off", AUTOPROF_CPU_RULE="min=5,diff=25")
    server.warm_up()
    capture = server.spike_until(
        "/cpu",
        {"seconds": 0.6},
        lambda c: c.metric == "cpu" and bool(c.requests_to("/cpu")),
        max_calls=20,
        pause=0.1,
    ).capture
    capture.check_files()  # summary.txt is listed in the manifest and private like the rest
    summary_file = capture.kind("summary.txt")
    assert summary_file.name in capture.manifest["files"]
    text = summary_file.read_text(encoding="utf-8")
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"Why: {capture.manifest['trigger']['description']}"
    assert len(lines) <= 60, text

    # burn_cpu is a numbered suspect, with its file and the line it is defined on.
    suspects = lines[lines.index("Suspects:") + 1 :]
    suspects = suspects[: next((i for i, line in enumerate(suspects) if not line), None)]
    numbered = [line for line in suspects if re.match(r"  \d+\. ", line)]
    assert numbered, text
    assert numbered == suspects, text
    burn = [line for line in numbered if " burn_cpu " in line]
    assert burn, text
    assert f"{APP_FILE}:{burn_line}" in burn[0]
    assert "requests" in burn[0]  # seen in the request profiles
    assert "GET /cpu -> 200" in text

    # The manifest's findings say the same.
    findings = capture.manifest["findings"]
    assert findings["headline"] == lines[0]
    ranked = findings["suspects"]
    assert [s["rank"] for s in ranked] == list(range(1, len(ranked) + 1))
    assert [s["score"] for s in ranked] == sorted((s["score"] for s in ranked), reverse=True)
    hot = next(s for s in ranked if s["what"] == "burn_cpu")
    assert hot["where"] == f"{APP_FILE}:{burn_line}"
    assert hot["kind"] == "hot"
    assert f"{hot['rank']}. burn_cpu  {hot['where']}" in text
    requests = next(p for p in findings["profiles"] if p["kind"] == "requests")
    assert requests["sessions"] == len(capture.requests)
    top = requests["hot"][0]
    assert (top["function"], top["file"], top["line"]) == ("burn_cpu", APP_FILE, burn_line)
    assert top["self_share"] > 0.5
    # Nothing from the standard library, site-packages or autoprof is named.
    for profile in findings["profiles"]:
        for function in profile["hot"]:
            assert not function["file"].startswith(("/", "<", "autoprof/")), function
    assert [(r["method"], r["path"], r["status"]) for r in findings["requests"]] == [
        (r["method"], r["path"], r["status"]) for r in capture.requests
    ]
