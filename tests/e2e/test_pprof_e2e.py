"""pprof export under a real server: uvicorn serving the FastAPI example with
``AUTOPROF_PROFILE_FORMATS=html,speedscope,text,pprof``; a manual capture of one CPU-bound
request writes ``.pb.gz`` files for the request and the process-wide profiles that parse
with profile.proto's schema, name the text profile's top function, and that the admin route
serves as downloads."""

from __future__ import annotations

import time

import pytest

from tests import pprof_schema as schema
from tests.e2e.conftest import Serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

TOKEN = "e2e-pprof-token-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_real_capture_exports_pprof(serve: Serve) -> None:
    server = serve(
        "fastapi-admin",
        AUTOPROF_ADMIN="true",
        AUTOPROF_ADMIN_TOKEN=TOKEN,
        AUTOPROF_CPU_RULE="off",
        AUTOPROF_MEM_RULE="off",
        AUTOPROF_REQUESTS="1",
        AUTOPROF_PATH_FILTER="^/cpu$",
        AUTOPROF_PROFILE_FORMATS="html,speedscope,text,pprof",
    )
    time.sleep(0.5)  # the flight recorder's past, for the before-trigger profile
    opened = server.client.post("/_autoprof/trigger", headers=AUTH)
    assert opened.status_code == 202, opened.text
    capture_id = opened.json()["capture"]
    assert server.get("/cpu", seconds=0.8).status_code == 200
    capture = server.wait_for_capture(lambda c: c.id == capture_id, timeout=20)
    assert capture is not None, server.diagnose("the manual capture never appeared")
    capture.check_files()

    [request] = capture.requests
    assert request["route"] == "/cpu"
    assert set(request["files"]) == {"html", "speedscope", "text", "pprof"}
    profiles = capture.manifest["profiles"]
    assert {"all-threads", "before-trigger"} <= set(profiles), profiles
    checked = [("request", request["files"])] + [(k, p["files"]) for k, p in profiles.items()]
    tops = {}
    for kind, files in checked:
        assert files["pprof"].endswith(".pb.gz")
        assert files["pprof"] in capture.manifest["files"]
        pprof = capture.file(files["pprof"]).read_bytes()
        tops[kind] = schema.check_top_matches(pprof, capture.read(files["text"]), kind)
    # burn_cpu or its generator expression (the share between the two varies with load) is
    # where the request spent its time; pyinstrument's profiler names code by co_name
    assert tops["request"] in {("burn_cpu", "app.py"), ("<genexpr>", "app.py")}
    # and the same seconds in the all-threads profile's hot function, in pprof and in text
    files = profiles["all-threads"]["files"]
    profile = schema.parse(capture.file(files["pprof"]).read_bytes())
    flat = schema.flat_by_function(profile, thread="MainThread")
    [(hot, ns)] = [(k, v) for k, v in flat.items() if k[0] == "burn_cpu.<locals>.<genexpr>"]
    assert hot[1].endswith("examples/fastapi_app/app.py")
    text = capture.read(files["text"])
    shown = schema.text_self_times(text)[("burn_cpu.<locals>.<genexpr>", "app.py")]
    assert ns / 1e9 == pytest.approx(shown, abs=schema.slack(profile, text)), text

    # the admin route: listed on the capture page, served as a download whatever is asked
    page = server.client.get(f"/_autoprof/captures/{capture_id}", headers=AUTH)
    assert page.status_code == 200
    assert ">pprof<" in page.text
    for _, files in checked:
        url = f"/_autoprof/captures/{capture_id}/{files['pprof']}"
        assert url in page.text
        on_disk = capture.file(files["pprof"]).read_bytes()
        for params in ({}, {"download": "1"}):
            response = server.client.get(url, params=params, headers=AUTH)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/octet-stream"
            assert response.headers["content-disposition"] == (
                f'attachment; filename="{files["pprof"]}"')
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.content == on_disk
    listing = server.client.get("/_autoprof/?format=json", headers=AUTH).json()
    assert capture_id in [c["id"] for c in listing["captures"]]
