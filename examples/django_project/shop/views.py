"""The example's views: a few JSON endpoints, a form, a failing view and two streamed ones.

Nothing here knows about otas-capture except ``annotate``, which adds properties of your
own to the event of an agent's request (and does nothing for other requests).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

from django import forms
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from otas_capture.django import annotate

MAX_LIMIT = 100
EXPORT_LINES = 50
DOWNLOAD_BYTES = 100_000  # served by /api/download/ as a FileResponse


class ItemStore:
    """Items in memory. Requests run on several server threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, dict[str, Any]] = {}
        self._next_id = 1

    def add(self, name: str, price: float) -> dict[str, Any]:
        with self._lock:
            item = {"id": self._next_id, "name": name, "price": price}
            self._items[self._next_id] = item
            self._next_id += 1
            return dict(item)

    def get(self, pk: int) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(pk)
            return dict(item) if item is not None else None

    def all(self, limit: int = MAX_LIMIT) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(item) for item in list(self._items.values())[:limit]]


store = ItemStore()
store.add("pen", 1.5)


@csrf_exempt  # a JSON API authenticated by token, not by cookie
@require_http_methods(["GET", "POST"])
def items(request: HttpRequest) -> HttpResponse:
    annotate(request, tenant=request.headers.get("X-Tenant", "public"))
    if request.method == "GET":
        try:
            limit = int(request.GET.get("limit", MAX_LIMIT))
        except ValueError:
            return JsonResponse({"error": "'limit' must be a whole number"}, status=400)
        return JsonResponse({"items": store.all(limit)})
    try:
        data = json.loads(request.body)
        name, price = str(data["name"]), float(data.get("price", 0))
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected {'name': ..., 'price': ...}"}, status=400)
    item = store.add(name, price)
    annotate(request, item_id=item["id"])
    return JsonResponse(item, status=201)


@require_GET
def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    item = store.get(pk)
    if item is None:
        return JsonResponse({"error": f"no item {pk}"}, status=404)
    return JsonResponse(item)


@require_GET
def me(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:
        return JsonResponse({"error": "send Authorization: Bearer <token>"}, status=401)
    return JsonResponse({"id": user.pk, "username": user.username})


@csrf_exempt
@require_http_methods(["POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Multipart file uploads; any other body is counted as it is."""
    files = {name: f.size for name, f in request.FILES.items()}
    size = sum(files.values()) if files else len(request.body)
    return JsonResponse({"files": files, "bytes": size})


@require_GET
def export(request: HttpRequest) -> StreamingHttpResponse:
    def lines() -> Iterator[str]:
        for number in range(EXPORT_LINES):
            yield json.dumps({"line": number, "items": len(store.all())}) + "\n"

    return StreamingHttpResponse(lines(), content_type="application/x-ndjson")


@require_GET
def download(request: HttpRequest) -> FileResponse:
    rows = b"".join(b"%06d,item,1.50\n" % n for n in range(DOWNLOAD_BYTES // 16))
    return FileResponse(io.BytesIO(rows), as_attachment=True, filename="items.csv")


@require_GET
def boom(request: HttpRequest) -> HttpResponse:
    # Deliberately broken: the event's error names the exception, and with DEBUG=True
    # Django's debug page is counted but not shipped.
    average = len(store.all()) / 0
    return JsonResponse({"average": average})


class ContactForm(forms.Form):
    email = forms.EmailField()
    message = forms.CharField(max_length=500)


class ContactView(View):
    """An HTML form, CSRF-protected as Django forms are."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "shop/contact.html", {"form": ContactForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ContactForm(request.POST)
        if not form.is_valid():
            return render(request, "shop/contact.html", {"form": form}, status=400)
        return render(
            request,
            "shop/contact.html",
            {"form": ContactForm(), "sent": form.cleaned_data["email"]},
        )


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
