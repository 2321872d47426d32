from __future__ import annotations

from django.urls import include, path

from tests.e2e.apps.django_site import views

urlpatterns = [
    path("_autoprof/", include("autoprof.django.urls")),
    path("", views.index),
    path("health/", views.health),
    path("items/<int:pk>/", views.read_item),
    path("items/slow/", views.make_items_slow),
    path("shop/", include([path("orders/<slug:code>/", views.read_order)])),
    path("boom/", views.boom),
    path("stream/", views.stream),
]
