"""autoprof.django in process: settings.AUTOPROF parsing and precedence, route names, the
system checks, and the middleware (sync and async) on the project of tests/e2e/apps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.test import AsyncClient, Client, override_settings

from autoprof import AutoProf, Rule
from autoprof.config import ConfigError
from autoprof.routes import RouteMatcher

if not settings.configured:
    settings.configure(
        SECRET_KEY="unit-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="tests.e2e.apps.django_site.urls",
        INSTALLED_APPS=["autoprof.django"],
        MIDDLEWARE=["autoprof.django.AutoProfMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware"],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from autoprof.django import AutoProfMiddleware, get_autoprof
from autoprof.django.checks import check_autoprof
from autoprof.django.conf import django_options, django_settings_for
from autoprof.django.routes import template

OURS = "autoprof.django.AutoProfMiddleware"
TOKEN = "unit-test-admin-token-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for key in [k for k in os.environ if k.startswith("AUTOPROF_")]:
        monkeypatch.delenv(key)
    yield
    get_autoprof().stop(timeout=5)


def quiet(dump_dir: Path, **more: Any) -> dict[str, Any]:
    """settings.AUTOPROF for a test: no rule fires by itself, dumps into ``dump_dir``."""
    rules = {f"{m}_rule": None for m in ("cpu", "mem", "rss", "rss_growth", "loop_lag")}
    return {"dump_dir": str(dump_dir), "collect_interval": 60, "requests": 1,
            "heap_census": False, "thread_profile": False, **rules, **more}


# -- settings.AUTOPROF ---------------------------------------------------------------------


def test_options_are_parsed_like_keywords_or_environment_text() -> None:
    options = django_options({
        "collect_interval": "250ms", "WINDOW": 4, "latency_rule": "min=200,diff=100",
        "cpu_rule": None, "admin_token": TOKEN, "admin_authorize": "os.path.isabs",
    })
    assert options["collect_interval"] == 0.25
    assert options["window"] == 4
    assert options["latency_rule"] == Rule(200, 100)
    assert options["cpu_rule"] is None
    assert TOKEN not in repr(options)  # a Secret
    import os.path

    assert options["admin_authorize"] is os.path.isabs  # a dotted path is imported


@pytest.mark.parametrize(("raw", "message"), [
    ({"colect_interval": 1}, "did you mean 'collect_interval'"),
    ({"collect_interval": "soon"}, "collect_interval='soon' in the Django settings.AUTOPROF"),
    (["dump_dir"], "must be a dict of autoprof options"),
    ({"window": 3, "WINDOW": 4}, "names 'window' twice"),
    ({"admin_authorize": "no.such.module.fn"}, "admin_authorize='no.such.module.fn'"),
])
def test_a_bad_dict_names_what_to_fix(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        django_options(raw)


def test_the_environment_wins_over_settings_autoprof() -> None:
    ap = AutoProf(environ={"AUTOPROF_COOLDOWN": "7"})
    got = django_settings_for(ap, {"cooldown": 30, "collect_interval": "2s"})
    assert (got.cooldown, got.collect_interval) == (7.0, 2.0)
    assert django_settings_for(ap, {}).collect_interval == 10.0  # the default


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "name"), [
    ("items/<int:pk>/", "/items/<int:pk>/"),
    ("shop/orders/<slug:code>/", "/shop/orders/<slug:code>/"),
    ("", "/"),
    (r"^articles/(?P<year>[0-9]{4})/(?P<slug>[\w-]+)/$", "/articles/<year>/<slug>/"),
    (r"^robots\.txt$", "/robots.txt"),
    (r"^raw/(\d+)/(\w+)$", "/raw/<arg1>/<arg2>"),
    (r"^(?:en|de)/about/$", "/^(?:en|de)/about/$"),  # more than groups: kept as the regex
    (r"^files/.*$", "/^files/.*$"),
])
def test_route_names(route: str, name: str) -> None:
    assert template(route) == name


def test_a_route_name_picks_its_requests_by_path() -> None:
    matcher = RouteMatcher([f"GET {template('items/<int:pk>/')}", f"GET {template('')}"])
    assert matcher("GET", "/items/12/")
    assert matcher("GET", "/")
    assert not matcher("GET", "/items/12/extra/")


# -- system checks ----------------------------------------------------------------------------


def check_ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [message.id for message in check_autoprof()]


def test_checks_pass_on_a_good_configuration(tmp_path: Path) -> None:
    assert check_ids(AUTOPROF=quiet(tmp_path)) == []
    assert check_ids(AUTOPROF=quiet(tmp_path, admin=True, admin_token=TOKEN)) == []


def test_checks_report_a_bad_configuration(tmp_path: Path) -> None:
    assert check_ids(AUTOPROF={"windw": 3}) == ["autoprof.E001"]
    assert check_ids(AUTOPROF={"admin_token": "short"}) == ["autoprof.E001"]
    assert check_ids(AUTOPROF=quiet(tmp_path), MIDDLEWARE=[]) == ["autoprof.W001"]
    second = ["django.middleware.csrf.CsrfViewMiddleware", OURS]
    assert check_ids(AUTOPROF=quiet(tmp_path), MIDDLEWARE=second) == ["autoprof.W002"]
    assert check_ids(AUTOPROF=quiet(tmp_path, admin=True)) == ["autoprof.W003"]
    moved = quiet(tmp_path, admin=True, admin_token=TOKEN, admin_prefix="/ops/autoprof")
    with override_settings(AUTOPROF=moved):
        (warning,) = check_autoprof()
    assert warning.id == "autoprof.W004"
    assert 'path("ops/autoprof/", include("autoprof.django.urls"))' in warning.hint
    assert check_ids(AUTOPROF={**quiet(tmp_path), "enabled": False}, MIDDLEWARE=[]) == []


# -- the middleware ---------------------------------------------------------------------------


def manifests(dump_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(dump_dir.glob("*/*_manifest.json"))]


def test_a_profiled_request_is_named_by_its_url_pattern(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    (tmp_path / "items-slow").touch()  # /items/<pk>/ sleeps in slow_item_lookup
    with override_settings(AUTOPROF=quiet(dumps)):
        client = Client()
        assert client.get("/health/").status_code == 200  # starts the monitor
        ap = get_autoprof()
        assert ap.running
        assert ap.capture is None
        assert ap.trigger() is not None
        assert client.get("/items/17/").json() == {"pk": 17, "stock": 0}
        assert ap.flush(10)
    (manifest,) = manifests(dumps)
    (request,) = manifest["requests"]
    assert (request["route"], request["path"], request["status"]) == (
        "/items/<int:pk>/", "/items/17/", 200)
    assert "slow_item_lookup" in (dumps / manifest["id"] / request["files"]["text"]).read_text()


def test_the_async_middleware_profiles_too(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    (tmp_path / "items-slow").touch()
    # thread_profile: the capture's sampler is what follows a view into asgiref's thread.
    with override_settings(AUTOPROF=quiet(dumps, thread_profile=True)):
        client = AsyncClient()

        async def run() -> None:
            assert (await client.get("/health/")).status_code == 200
            assert get_autoprof().loop_watched
            assert get_autoprof().trigger() is not None
            assert (await client.get("/items/3/")).json() == {"pk": 3, "stock": 0}

        asyncio.run(run())
        assert get_autoprof().flush(10)
    (manifest,) = manifests(dumps)
    (request,) = manifest["requests"]
    assert request["route"] == "/items/<int:pk>/"
    # The sync view ran in asgiref's thread; the capture's sampler follows it there, so the
    # view's own function is in the request's profile.
    text = (dumps / manifest["id"] / request["files"]["text"]).read_text()
    assert "slow_item_lookup" in text, text


def test_finished_requests_reach_the_request_rules_with_their_pattern(tmp_path: Path) -> None:
    with override_settings(AUTOPROF=quiet(tmp_path)):
        client = Client(raise_request_exception=False)
        for pk in (1, 2):
            client.get(f"/items/{pk}/")
        client.get("/no/such/page/")
        assert client.get("/boom/").status_code == 500
        log = get_autoprof().requests
        assert log is not None
        # The log keeps each pattern's route string, no ResolverMatch (its args, its view).
        assert [e.hint for e in log.pending()] == ["items/<int:pk>/"] * 2 + [None, "boom/"]
        interval = log.drain()
    assert interval.requests == 4
    assert interval.errors == 1
    assert interval.routes["GET /items/<int:pk>/"].requests == 2
    assert interval.routes["GET /boom/"].errors == 1
    assert "GET /no/such/page/" not in interval.routes  # no pattern: not a route of its own
    (kept,) = log.recent_exceptions()
    assert (kept["path"], kept["type"]) == ("/boom/", f"{__name__.rsplit('.', 1)[0]}.e2e.apps."
                                            "django_site.views.CardDeclined")


def test_a_streamed_response_is_in_flight_until_it_is_closed(tmp_path: Path) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import RequestFactory

    with override_settings(AUTOPROF=quiet(tmp_path)):
        handler = WSGIHandler()
        environ = RequestFactory().get("/stream/").environ
        body = handler(environ, lambda status, headers, exc_info=None: None)
        ap = get_autoprof()
        assert len(ap.tracker) == 1
        assert b"".join(body) == b"part 0\npart 1\npart 2\n"
        assert len(ap.tracker) == 1
        body.close()
        assert len(ap.tracker) == 0
        log = ap.requests
        assert log is not None
        assert log.drain().routes["GET /stream/"].requests == 1


def test_disabled_it_leaves_the_chain(tmp_path: Path) -> None:
    with override_settings(AUTOPROF={**quiet(tmp_path), "enabled": False}):
        client = Client()
        assert client.get("/items/4/").status_code == 200
        middleware = client.handler._middleware_chain
        assert not isinstance(getattr(middleware, "__wrapped__", middleware), AutoProfMiddleware)
    assert not get_autoprof().running


def test_the_admin_view_answers_only_what_the_middleware_took(tmp_path: Path) -> None:
    with override_settings(AUTOPROF=quiet(tmp_path)):  # admin off: nothing is marked
        assert Client().get("/_autoprof/status").status_code == 404
    get_autoprof().stop()  # running, the controller refuses other settings (like Flask's)
    with override_settings(AUTOPROF=quiet(tmp_path, admin=True, admin_token=TOKEN)):
        client = Client()
        assert client.get("/_autoprof/status").status_code == 401
        ok = client.get("/_autoprof/status?format=json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert ok.status_code == 200
        assert "rules" in ok.json()
        # Django's CSRF middleware lets the admin's POST through to the admin's own checks.
        denied = client.post("/_autoprof/trigger")
        assert denied.status_code == 401
