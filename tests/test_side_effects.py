"""Nothing touches the file system before the first request; absolute dump directories only;
a command that serves no request needs no admin token (issue 15, 4)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from autoprof import AutoProf, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]

# Imports every adapter and builds a controller every way, then (after "built") serves one
# request, which is when the dump directory may appear.
CONSTRUCT = """
import os, sys
import autoprof
from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware
import autoprof.flask, autoprof.asgi, autoprof.wsgi, autoprof.admin
from flask import Flask
from starlette.applications import Starlette

def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

AutoProf()
AutoProf.from_env(admin=True)
AutoProfMiddleware(Starlette())
AutoProfWSGIMiddleware(wsgi, admin=True, admin_token="t" * 32)
flask_app = Flask("probe")
flask_app.config["AUTOPROF_ADMIN"] = True
ap = AutoProf()
ap.init_app(flask_app)
ap.status()
print("built", flush=True)
sys.stdin.readline()
assert flask_app.test_client().get("/").status_code == 404
print(sorted(os.listdir(os.environ["AUTOPROF_DUMP_DIR"])), flush=True)
"""


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_import_and_construction_create_no_file(tmp_path: Path) -> None:
    home, tmp, cwd = (tmp_path / name for name in ("home", "tmp", "cwd"))
    for directory in (home, tmp, cwd):
        directory.mkdir()
    dump_dir = tmp_path / "srv" / "autoprof"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")}
    env.update(HOME=str(home), TMPDIR=str(tmp), AUTOPROF_DUMP_DIR=str(dump_dir),
               PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    before = tree(tmp_path)
    probe = subprocess.Popen(
        [sys.executable, "-c", CONSTRUCT], cwd=cwd, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert probe.stdout is not None
        assert probe.stdin is not None
        assert probe.stdout.readline().strip() == "built", probe.stderr and probe.stderr.read()
        assert tree(tmp_path) == before  # imports and construction: nothing anywhere
        probe.stdin.write("\n")
        probe.stdin.flush()
        out, err = probe.communicate(timeout=60)
    finally:
        probe.kill()
    assert probe.returncode == 0, err
    assert dump_dir.is_dir()  # the first request opened the store (the probe can see files)
    assert tree(tmp_path) - before <= {"srv", "srv/autoprof", "srv/autoprof/.lock"}, out


@pytest.mark.parametrize("relative", ["dumps", "./var/autoprof", "~/autoprof"])
def test_a_relative_dump_dir_is_refused_with_what_to_write(relative: str) -> None:
    for build in (
        lambda: Settings(dump_dir=relative),
        lambda: AutoProf(dump_dir=relative, environ={}),
        lambda: AutoProf(environ={"AUTOPROF_DUMP_DIR": relative}),
    ):
        with pytest.raises(ConfigError, match="dump_dir must be an absolute path") as info:
            build()
        assert repr(relative) in str(info.value)
        assert "/var/tmp/autoprof" in str(info.value)
    app = Flask("relative")
    app.config["AUTOPROF_DUMP_DIR"] = relative
    with pytest.raises(ConfigError, match="absolute path"):
        AutoProf(app, environ={})


def test_a_cli_command_needs_no_admin_token_and_serving_reports_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("cli")
    app.config.update(AUTOPROF_ADMIN=True, AUTOPROF_DUMP_DIR=str(tmp_path / "dumps"))

    @app.cli.command("init-db")
    def init_db() -> None:
        print("initialized")

    ap = AutoProf(environ={})
    ap.init_app(app)  # no token: not an error here
    try:
        with caplog.at_level(logging.ERROR, logger="autoprof"):
            result = app.test_cli_runner().invoke(args=["init-db"])
            assert result.exit_code == 0, result.output
            assert "initialized" in result.output
            assert not ap.running
            assert not (tmp_path / "dumps").exists()
            client = app.test_client()
            assert client.get("/_autoprof/").status_code == 401  # nobody gets in
            assert client.get("/_autoprof/status").status_code == 401
            client.get("/elsewhere")
        reports = [r.getMessage() for r in caplog.records if "needs a guard" in r.getMessage()]
        assert len(reports) == 1, reports
        assert "AUTOPROF_ADMIN_TOKEN" in reports[0]
        assert "refuses every request" in reports[0]
        assert ap.status()["errors"] == {"admin.guard": 1}
    finally:
        ap.stop()


def test_a_bad_token_is_still_an_error_at_construction() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        AutoProf(admin=True, admin_token="short", environ={})
