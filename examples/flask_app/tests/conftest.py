"""Fixtures for testing an app that uses autoprof: an app per test, one autoprof per process.

The controller made at import (``examples.flask_app.app.autoprof``) serves every app the
factory makes, with one set of background threads, so each test's app must come to the same
autoprof settings: one dump directory for the whole session, not one per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from examples.flask_app.app import autoprof, create_app


@pytest.fixture(scope="session")
def autoprof_dumps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this session's captures go; autoprof stops (and writes what it holds) at the end."""
    yield tmp_path_factory.mktemp("autoprof")
    autoprof.stop()


@pytest.fixture
def app(autoprof_dumps: Path) -> Flask:
    return create_app({"TESTING": True, "AUTOPROF_DUMP_DIR": str(autoprof_dumps)})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app_without_autoprof() -> Flask:
    """An app with autoprof off: nothing wrapped, nothing started (its settings still checked)."""
    return create_app({"TESTING": True, "AUTOPROF_ENABLED": False})
