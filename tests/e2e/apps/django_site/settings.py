"""Settings of the e2e Django project: autoprof first in MIDDLEWARE, its options in AUTOPROF.

Fast test timings live in ``AUTOPROF`` itself (the dict layer); the test sets only what must
differ per run through the environment, which wins over the dict: ``AUTOPROF_DUMP_DIR`` and
``AUTOPROF_ADMIN_TOKEN``.
"""

from __future__ import annotations

from autoprof import Rule

SECRET_KEY = "e2e-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.e2e.apps.django_site.urls"
WSGI_APPLICATION = "tests.e2e.apps.django_site.wsgi.application"
USE_TZ = True
DATABASES: dict[str, object] = {}

INSTALLED_APPS = ["autoprof.django"]
MIDDLEWARE = [
    "autoprof.django.AutoProfMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTOPROF = {
    "collect_interval": "250ms",
    "window": 4,
    "cooldown": 60,
    "requests": 2,
    "capture_timeout": "8s",
    "cpu_max": None,
    # only the latency rule: the slow view's URL pattern must be what opens the capture
    "cpu_rule": None,
    "mem_rule": None,
    "rss_rule": None,
    "rss_growth_rule": None,
    "error_rate_rule": None,
    "loop_lag_rule": None,
    "latency_rule": Rule(min=200, diff=100),
    "rule_min_requests": 3,
    "heap_census": False,
    "admin": True,
    "dump_dir": "/nonexistent/overridden-by-AUTOPROF_DUMP_DIR",
}
