"""One precedence for every adapter (issue 15, 2): the defaults < keyword options in code <
a Flask app's AUTOPROF_* config < AUTOPROF_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware, Rule, Settings


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The process environment a deployment sets (twelve-factor)."""
    monkeypatch.setenv("AUTOPROF_CPU_RULE", "off")
    monkeypatch.setenv("AUTOPROF_WINDOW", "4")
    monkeypatch.setenv("AUTOPROF_LATENCY_RULE", "min=500")
    monkeypatch.setenv("AUTOPROF_DUMP_DIR", str(tmp_path / "from-env"))
    return tmp_path / "from-env"


def check(settings: Settings, env_dir: Path) -> None:
    assert settings.cpu_rule is None  # env over the default
    assert settings.window == 4  # env over the keyword (3)
    assert settings.latency_rule == Rule(min=500, diff=100)  # env, on latency's default
    assert settings.requests == 2  # the keyword, nothing above it
    assert settings.dump_dir == str(env_dir)


KEYWORDS = {"window": 3, "requests": 2, "dump_dir": "/nonexistent/from-code"}


def test_autoprof_keywords(environment: Path) -> None:
    check(AutoProf(**KEYWORDS).settings, environment)
    check(AutoProf.from_env(**KEYWORDS).settings, environment)
    check(AutoProf(settings=Settings(**KEYWORDS)).settings, environment)  # type: ignore[arg-type]


def test_asgi_middleware_keywords(environment: Path) -> None:
    middleware = AutoProfMiddleware(Starlette(), **KEYWORDS)
    check(middleware.autoprof.settings, environment)


def test_fastapi_app_handed_to_autoprof(environment: Path) -> None:
    app = FastAPI()
    ap = AutoProf(app, **KEYWORDS)
    check(ap.settings, environment)
    assert any(m.kwargs.get("autoprof") is ap for m in app.user_middleware)


def test_wsgi_middleware_keywords(environment: Path) -> None:
    middleware = AutoProfWSGIMiddleware(wsgi_app, **KEYWORDS)
    check(middleware.autoprof.settings, environment)


def test_flask_keywords_then_app_config_then_environment(environment: Path) -> None:
    app = Flask("precedence")
    app.config.update(
        AUTOPROF_WINDOW=8,  # the environment's 4 wins
        AUTOPROF_REQUESTS="2",  # over the keyword's 7
        AUTOPROF_COOLDOWN="5m",  # over the keyword's 30 s, nothing above it
        AUTOPROF_CPU_RULE="10,25,70",  # the environment's "off" wins
        AUTOPROF_DUMP_DIR="/nonexistent/from-config",
    )
    ap = AutoProf(app, window=3, requests=7, cooldown=30, dump_dir="/nonexistent/from-code")
    check(ap.settings, environment)
    assert ap.settings.cooldown == 300
    assert app.extensions["autoprof"] is ap


def test_flask_init_app_in_a_factory_reads_the_environment(environment: Path) -> None:
    ap = AutoProf(window=3, requests=2)  # made at import, before the environment is complete
    app = Flask("factory")
    ap.init_app(app)
    check(ap.settings, environment)


def test_an_explicit_environ_replaces_the_process_environment(environment: Path) -> None:
    ap = AutoProf(window=3, environ={"AUTOPROF_REQUESTS": "9"})
    assert ap.settings.window == 3
    assert ap.settings.requests == 9
    assert ap.settings.cpu_rule is not None
    assert AutoProf(window=3, environ={}).settings.window == 3


def test_configure_is_a_keyword_layer_under_the_environment(environment: Path) -> None:
    ap = AutoProf(requests=2)
    ap.configure(window=6, cooldown=90)
    assert ap.settings.window == 4  # the environment still wins
    assert ap.settings.cooldown == 90


def test_an_unknown_variable_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOPROF_CPU_RUEL", "off")
    with pytest.raises(ValueError, match="AUTOPROF_CPU_RUEL in the environment") as info:
        AutoProfWSGIMiddleware(wsgi_app)
    assert "did you mean 'AUTOPROF_CPU_RULE'" in str(info.value)
