"""The admin token never shows in a repr, a log line or a traceback's locals (issue 12, 9)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from autoprof import AutoProf, ConfigError, Secret, Settings

TOKEN = "tok-" + "7" * 28


def test_a_secret_hides_its_value_but_compares_and_reveals() -> None:
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret)
    assert TOKEN not in str(secret)
    assert TOKEN not in f"{secret}"
    assert secret == Secret(TOKEN)
    assert secret != Secret(TOKEN + "x")
    assert secret.reveal() == TOKEN
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_the_token_is_a_secret_from_every_way_in(tmp_path: Path) -> None:
    built = [
        Settings.build(admin=True, admin_token=TOKEN),
        Settings.from_env({"AUTOPROF_ADMIN": "1", "AUTOPROF_ADMIN_TOKEN": TOKEN}),
        Settings().replace(admin=True, admin_token=TOKEN),
        AutoProf(admin=True, admin_token=TOKEN, dump_dir=str(tmp_path)).settings,
        AutoProf(admin=True, admin_token=Secret(TOKEN), dump_dir=str(tmp_path)).settings,
    ]
    for settings in built:
        assert isinstance(settings.admin_token, Secret)
        assert settings.admin_token.reveal() == TOKEN
        assert TOKEN not in repr(settings)


def test_a_failing_start_up_shows_no_token_in_the_locals_of_its_traceback(
    tmp_path: Path,
) -> None:
    # What an error tracker records (frame locals) when AutoProf(...) refuses its options.
    with pytest.raises(ConfigError) as info:
        AutoProf(admin=True, admin_token=TOKEN, collect_interval=-1, dump_dir=str(tmp_path))
    report = "".join(traceback.TracebackException.from_exception(
        info.value, capture_locals=True).format())
    assert "options" in report
    assert "Secret(" in report
    assert TOKEN not in report


def test_a_failing_app_test_run_with_showlocals_prints_no_token(tmp_path: Path) -> None:
    # A Flask app's own test suite failing in AutoProf.__init__ (pytest -l shows locals).
    test = tmp_path / "test_app.py"
    test.write_text(
        "from flask import Flask\n"
        "from autoprof import AutoProf\n"
        "def test_app():\n"
        "    app = Flask(__name__)\n"
        f"    AutoProf(app, admin=True, admin_token={TOKEN!r}, requests=0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-l", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(test)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 1, out.stdout[-2000:]
    assert "ConfigError" in out.stdout
    assert "'admin_token': Secret(" in out.stdout  # the locals were printed, hidden
    shown = out.stdout.replace(f"admin_token={TOKEN!r}", "")  # the test's own source line
    assert TOKEN not in shown, shown[-3000:]


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_a_failing_middleware_constructor_shows_no_token_in_its_locals(
    tmp_path: Path, adapter: str
) -> None:
    # The keyword options of AutoProfMiddleware / AutoProfWSGIMiddleware are the first local
    # holding the token: the middleware's own frame must show it hidden.
    from starlette.applications import Starlette

    from autoprof import AutoProfMiddleware, AutoProfWSGIMiddleware

    def wsgi_app(environ: object, start_response: object) -> list[bytes]:
        return [b""]

    middleware, app = (
        (AutoProfMiddleware, Starlette()) if adapter == "asgi"
        else (AutoProfWSGIMiddleware, wsgi_app)
    )
    with pytest.raises(ConfigError) as info:
        middleware(app, admin=True, admin_token=TOKEN, collect_interval=-1,  # type: ignore[arg-type]
                   dump_dir=str(tmp_path))
    report = "".join(traceback.TracebackException.from_exception(
        info.value, capture_locals=True).format())
    assert "in __init__" in report
    assert "options = {" in report  # the middleware's frame and its locals were printed
    assert "Secret(" in report
    assert TOKEN not in report
