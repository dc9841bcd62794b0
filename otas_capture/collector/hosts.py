"""Which ``Host`` a request may name: the collector's defence against DNS rebinding.

A web page the developer visits can point a name it controls at 127.0.0.1 and then
read and wipe a loopback service as if it were its own origin. The browser still sends
the attacker's name in ``Host`` (and ``Origin``), so the collector answers only
requests naming a loopback host (``localhost`` and its subdomains, ``127.0.0.0/8``,
``[::1]``) or a name the developer allowed (``--allow-host``, e.g. the service name of
a Docker network). A request with no ``Host`` at all comes from no browser and is
answered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .web import Response

__all__ = ["HostGuard", "host_name"]

REFUSED_STATUS = 403


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or an origin's authority, lower case, without
    port or IPv6 brackets: ``"[::1]:8002"`` -> ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_loopback(name: str) -> bool:
    """``localhost`` (and ``*.localhost``, which browsers resolve to loopback), or a
    loopback IP literal."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostGuard:
    """Decides whether a request's ``Host`` and ``Origin`` are ones the collector serves.

    Parameters:
        allowed: host names answered besides the loopback ones (``--allow-host``),
            with or without a port, which is ignored.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(host_name(name) for name in allowed if name.strip())

    def allows(self, name: str) -> bool:
        return is_loopback(name) or name in self.allowed

    def refusal(self, environ: Mapping[str, Any]) -> Response | None:
        """None for a request to answer; else the answer that refuses it."""
        host = environ.get("HTTP_HOST")
        if isinstance(host, str) and host and not self.allows(host_name(host)):
            return self._refuse("Host", host_name(host))
        origin = environ.get("HTTP_ORIGIN")
        # A page from elsewhere may still send simple requests straight to 127.0.0.1.
        if isinstance(origin, str) and origin and origin != "null":
            name = urlsplit(origin).hostname or ""
            if not self.allows(name):
                return self._refuse("Origin", name)
        elif origin == "null":
            return self._refuse("Origin", "null")
        return None

    @staticmethod
    def _refuse(header: str, name: str) -> Response:
        text = (
            f"{header} {name!r} is not a loopback name: the collector answers only "
            f"localhost, 127.0.0.1 and [::1] (against DNS rebinding). Start it with "
            f"--allow-host {name} if this name is yours.\n"
        )
        return Response(text, REFUSED_STATUS, headers={"X-Content-Type-Options": "nosniff"})
