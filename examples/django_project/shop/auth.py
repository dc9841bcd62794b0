"""Bearer-token authentication without a database, the way many JSON APIs do it.

It sets ``request.user`` lazily, as Django's own ``AuthenticationMiddleware`` does, so
the user is looked up only by views that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject


@dataclass(frozen=True)
class ApiUser:
    pk: int
    username: str
    is_authenticated: bool = True


@dataclass(frozen=True)
class Anonymous:
    pk: None = None
    username: str = ""
    is_authenticated: bool = False


# Demo API tokens; a real project would look them up in its database.
API_TOKENS = {"demo-token-alice": ApiUser(pk=42, username="alice")}


def user_for(request: HttpRequest) -> Any:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token in API_TOKENS:
        return API_TOKENS[token]
    return Anonymous()


class BearerTokenMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.user = SimpleLazyObject(lambda: user_for(request))
        return self.get_response(request)
