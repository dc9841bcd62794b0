"""How the calls reach OTAS: the proxy the environment names, and the certificates trusted.

The environment is read as requests reads it, so that a deployment already set up for
requests (or curl) needs nothing more:

* ``https_proxy`` / ``HTTPS_PROXY`` for an ``https`` URL, ``http_proxy`` / ``HTTP_PROXY``
  for an ``http`` one, ``all_proxy`` / ``ALL_PROXY`` for either; the lower-case name
  wins. ``HTTP_PROXY`` is ignored while ``REQUEST_METHOD`` is set (a CGI process, where
  the client's ``Proxy:`` header arrives as that variable: "httpoxy").
* ``no_proxy`` / ``NO_PROXY``: comma-separated hosts reached directly: ``*`` for all, a
  domain for itself and its subdomains (a leading dot or not), an address, or a network
  in CIDR form; an entry with ``:port`` matches that port only.
* Trusted certificates: the ``ca_bundle`` setting (``OTAS_CA_BUNDLE``), else
  ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``, else OpenSSL's defaults (which honour
  ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``). A file or a directory of certificates.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..config import Config
from ..contract import LOGGER_NAME
from .wire import KeepAliveConnection, Proxy

if TYPE_CHECKING:
    import ssl

__all__ = ["CONNECT_TIMEOUT", "Routes", "ca_bundle", "proxy_for", "tls_context"]

logger = logging.getLogger(LOGGER_NAME)

CONNECT_TIMEOUT = 3.0  # seconds; a TCP handshake that takes longer is not coming
# Where a CA bundle may be named, after the SDK's own setting, in the order requests reads them.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Routes:
    """How one client reaches its URLs: their proxies and the TLS trust, read once."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        urls = (config.brain_url, config.uasam_url)
        self._proxies: dict[str, Proxy | None] = {}
        for url in urls:
            try:
                self._proxies[url] = proxy_for(url, environ)
            except ValueError as error:
                logger.error("otas-capture: %s; connecting to %s directly", error, url)
                self._proxies[url] = None
        self._tls: ssl.SSLContext | None = None
        if any(url.startswith("https:") for url in urls):
            self._tls = tls_context(ca_bundle(config.ca_bundle, environ))

    def connection(
        self, url: str, path: str, headers: Mapping[str, str], timeout: float
    ) -> KeepAliveConnection:
        """A keep-alive connection to ``url`` whose calls take ``timeout`` s at most."""
        return KeepAliveConnection(
            url,
            path,
            headers,
            timeout,
            ssl_context=self._tls,
            connect_timeout=min(CONNECT_TIMEOUT, timeout),
            proxy=self._proxies.get(url),
        )


def _variable(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name.lower()) or environ.get(name.upper()) or ""
    if name == "http_proxy" and "REQUEST_METHOD" in environ:
        value = environ.get("http_proxy") or ""  # only the lower case: see httpoxy above
    return value.strip()


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment names for ``url``; None to connect directly.

    Raises ValueError for a proxy URL that cannot be used (the message has no secret).
    """
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default_port = 443 if parts.scheme == "https" else 80
    if _bypassed(host, parts.port or default_port, _variable(environ, "no_proxy")):
        return None
    value = _variable(environ, f"{parts.scheme}_proxy") or _variable(environ, "all_proxy")
    if not value:
        return None
    if "://" not in value:
        value = "http://" + value  # as requests reads "proxy:3128"
    proxy = urlsplit(value)
    try:
        port = proxy.port or 80
    except ValueError:
        port = 0
    if proxy.scheme != "http" or not proxy.hostname or not port:
        raise ValueError("the proxy must be an http://host:port URL")
    authorization = None
    if proxy.username is not None:
        pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return Proxy(proxy.hostname, port, authorization)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.lower().replace(" ", "").split(","):
        if entry == "*":
            return True
        name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        name = name.strip("[]").lstrip(".")
        if not name or (entry_port and entry_port != str(port)):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
        elif host == name or host.endswith("." + name):
            return True
    return False


def ca_bundle(configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The certificates to trust: the setting, else the first variable that names some."""
    environ = os.environ if environ is None else environ
    if configured:
        return configured
    for name in CA_BUNDLE_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    return None


def tls_context(bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context trusting ``bundle`` (a file or a directory), else the
    system's. A bundle that cannot be loaded is logged once and the system's used."""
    import ssl  # only for https: it is slow to import

    if bundle:
        try:
            if os.path.isdir(bundle):
                return ssl.create_default_context(capath=bundle)
            return ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as error:
            logger.error(
                "otas-capture: cannot load the CA bundle %s (%s); trusting the system's "
                "certificates instead",
                bundle,
                type(error).__name__,
            )
    return ssl.create_default_context()
