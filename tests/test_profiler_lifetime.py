"""A request's profiler never outlives its capture, whoever forgets to close the response."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from tests.test_capture import make_capture

LEAK = textwrap.dedent(
    """
    import sys, tempfile, time
    from autoprof import AutoProf
    from autoprof.wsgi import AutoProfWSGIMiddleware

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    ap = AutoProf(dump_dir=tempfile.mkdtemp(), requests=2, capture_timeout=0.3,
                  collect_interval=0.1)
    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    ap.ensure_started()
    capture = ap.trigger()
    capture.take_census()
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    assert b"".join(body) == b"hello"  # ...and body.close() is never called
    assert sys.getprofile() is not None
    deadline = time.monotonic() + 10
    while ap.capture is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ap.capture is None, "the capture did not close"
    print("closed")
    """
)


def test_an_unclosed_wsgi_response_leaves_no_profiler_at_interpreter_exit(tmp_path: Path):
    script = tmp_path / "leak.py"
    script.write_text(LEAK)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr
    assert "stack_sampler" not in done.stderr, done.stderr


def test_the_profiler_of_a_request_on_another_thread_unhooks_itself(tmp_path: Path):
    capture = make_capture(tmp_path, heap_census=False, thread_profile=False,
                           thread_stacks=False)
    capture.take_census()
    started, closed, result = threading.Event(), threading.Event(), {}

    def request() -> None:
        handle = capture.claim("GET", "/stuck")
        assert handle is not None
        handle.start(async_mode="disabled", measure_cpu=True)
        result["hooked"] = sys.getprofile() is not None
        started.set()
        closed.wait(10)
        end = time.monotonic() + 1.0
        while sys.getprofile() is not None and time.monotonic() < end:
            sum(range(100))  # Python work: the hook's next sample runs here
        result["hooked_after_close"] = sys.getprofile() is not None
        handle.finish(route="/stuck")  # late: hands nothing, raises nothing

    thread = threading.Thread(target=request)
    thread.start()
    assert started.wait(10)
    capture.close("deadline")  # on this thread, not the request's
    closed.set()
    thread.join(10)
    assert result == {"hooked": True, "hooked_after_close": False}
    assert capture.finished == []
    assert capture.errors.total == 0


def test_a_request_claimed_just_before_the_close_starts_no_profiler(tmp_path: Path):
    capture = make_capture(tmp_path, heap_census=False, thread_profile=False,
                           thread_stacks=False)
    capture.take_census()
    handle = capture.claim("GET", "/late")
    assert handle is not None
    capture.close("deadline")
    before = sys.getprofile()
    handle.start(async_mode="disabled", measure_cpu=False)
    assert sys.getprofile() is before
    handle.finish()
    assert capture.errors.total == 0
