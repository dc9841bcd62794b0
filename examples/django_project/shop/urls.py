"""The example's URLs: a JSON API under ``api/``, an HTML form and a health check."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("api/items/", views.items, name="items"),
    path("api/items/<int:pk>/", views.item_detail, name="item-detail"),
    path("api/me/", views.me, name="me"),
    path("api/upload/", views.upload, name="upload"),
    path("api/export/", views.export, name="export"),
    path("api/download/", views.download, name="download"),
    path("api/boom/", views.boom, name="boom"),
    path("contact/", views.ContactView.as_view(), name="contact"),
    path("health/", views.health, name="health"),
]
