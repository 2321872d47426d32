"""Flask's app factory: one controller serves every app of a process (issue 15, 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask

from autoprof import AutoProf, ConfigError, Rule

ROOT = Path(__file__).resolve().parents[1]

# Loaded into the example's own test run: which autoprof threads ran after each test.
THREAD_PLUGIN = '''
import json, os, threading
import pytest

seen = set()

@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item):
    seen.update((t.name, t.native_id) for t in threading.enumerate()
                if t.name.startswith("autoprof-"))

def pytest_unconfigure(config):
    with open(os.environ["THREADS_OUT"], "w") as out:
        json.dump(sorted(seen), out)
'''


def make_app(ap: AutoProf, **config: object) -> Flask:
    app = Flask("factory_test")
    app.config.update(config)

    @app.get("/")
    def index() -> dict[str, int]:
        return {"pid": os.getpid()}

    ap.init_app(app)
    return app


def autoprof_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("autoprof-"))


def test_the_example_apps_own_suite_runs_with_one_set_of_threads(tmp_path: Path) -> None:
    (tmp_path / "threadlog.py").write_text(THREAD_PLUGIN)
    out = tmp_path / "threads.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), THREADS_OUT=str(out))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-p", "threadlog", "-W", "error", "examples/flask_app/tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "5 passed" in run.stdout
    assert "error" not in run.stdout.lower()
    assert "Exception ignored" not in run.stderr
    threads = json.loads(out.read_text())
    names = sorted(name for name, _ in threads)
    # One of each, over the whole run: a thread started again would show with a new id.
    assert names == ["autoprof-monitor", "autoprof-recorder", "autoprof-worker"], threads


def test_apps_made_after_the_first_request_share_the_running_controller(tmp_path: Path) -> None:
    ap = AutoProf(dump_dir=str(tmp_path), collect_interval=3600, environ={})
    try:
        first = make_app(ap, TESTING=True)
        assert first.test_client().get("/").status_code == 200
        monitor = ap.monitor
        assert monitor is not None
        threads = autoprof_threads()
        for _ in range(3):
            app = make_app(ap, TESTING=True)  # no "already running"
            assert app.extensions["autoprof"] is ap
            assert app.test_client().get("/").status_code == 200
        assert ap.monitor is monitor
        assert autoprof_threads() == threads
    finally:
        ap.stop()


def test_an_app_asking_other_settings_of_a_running_controller_is_told_why(
    tmp_path: Path,
) -> None:
    ap = AutoProf(dump_dir=str(tmp_path), collect_interval=3600, environ={})
    try:
        make_app(ap).test_client().get("/")
        with pytest.raises(ConfigError) as info:
            make_app(ap, AUTOPROF_REQUESTS=1, AUTOPROF_DUMP_DIR=str(tmp_path / "other"))
        message = str(info.value)
        assert "(requests, dump_dir differ)" in message
        assert "Flask app 'factory_test'" in message
        assert "controller of its own" in message
    finally:
        ap.stop()


def test_before_the_first_request_each_new_app_configures_the_controller(tmp_path: Path) -> None:
    ap = AutoProf(dump_dir=str(tmp_path), collect_interval=3600, environ={})
    make_app(ap, AUTOPROF_REQUESTS=1)
    assert ap.settings.requests == 1
    make_app(ap)
    assert ap.settings.requests == 5  # from the keyword options again, not left over


def test_an_app_factory_lambda_for_admin_authorize_is_the_same_setting(tmp_path: Path) -> None:
    ap = AutoProf(dump_dir=str(tmp_path), collect_interval=3600, environ={})
    try:
        for _ in range(2):
            app = make_app(ap, AUTOPROF_ADMIN=True,
                           AUTOPROF_ADMIN_AUTHORIZE=lambda request: request.client == "ops")
            app.test_client().get("/")
    finally:
        ap.stop()


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        ({"AUTOPROF_ENABLED": False}, {}),
        ({"AUTOPROF_ENABLED": "false"}, {}),
        ({"AUTOPROF_ENABLED": True}, {"AUTOPROF_ENABLED": "0"}),  # the environment wins
    ],
)
def test_disabled_for_an_app_attaches_nothing_and_starts_nothing(
    tmp_path: Path, config: dict[str, object], environ: dict[str, str]
) -> None:
    before = autoprof_threads()
    ap = AutoProf(dump_dir=str(tmp_path / "dumps"), environ=environ)
    app = make_app(ap, AUTOPROF_ADMIN=True, **config)
    assert app.extensions["autoprof"] is ap
    assert app.wsgi_app.__self__ is app  # type: ignore[attr-defined]
    assert "autoprof_admin" not in app.blueprints
    assert app.test_client().get("/").status_code == 200
    assert not ap.running
    assert autoprof_threads() == before
    assert not (tmp_path / "dumps").exists()
    # Another app of the same process may still use the controller, configured as it says.
    other = make_app(ap, AUTOPROF_ENABLED=True, AUTOPROF_COLLECT_INTERVAL="1h")
    if environ:
        assert other.wsgi_app.__self__ is other  # type: ignore[attr-defined]
    else:
        try:
            assert other.test_client().get("/").status_code == 200
            assert ap.running
            assert ap.settings.collect_interval == 3600
        finally:
            ap.stop()


def test_a_disabled_apps_config_is_still_checked(tmp_path: Path) -> None:
    ap = AutoProf(dump_dir=str(tmp_path), environ={})
    with pytest.raises(ConfigError, match="AUTOPROF_MEM_RULE='0'"):
        make_app(ap, AUTOPROF_ENABLED=False, AUTOPROF_MEM_RULE="0")
    app = make_app(ap, AUTOPROF_ENABLED=False, AUTOPROF_MEM_RULE=Rule(1, 25, 80))
    assert app.extensions["autoprof"] is ap
