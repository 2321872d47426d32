"""The admin route for a project's ``urls.py``, at the path of ``admin_prefix``::

    urlpatterns = [
        path("_autoprof/", include("autoprof.django.urls")),   # admin_prefix "/_autoprof"
        ...
    ]

Only requests the middleware took as admin requests are answered (404 otherwise), so where
the include stands must be ``admin_prefix`` (``manage.py check`` says so when it is not).
"""

from __future__ import annotations

from django.urls import path  # type: ignore[import-untyped]

from autoprof.django.views import admin_view

app_name = "autoprof"
urlpatterns = [
    path("", admin_view, name="admin"),
    path("<path:sub>", admin_view, name="admin-page"),
]
