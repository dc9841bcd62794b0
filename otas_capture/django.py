"""Django integration: one line in ``settings.MIDDLEWARE``.

.. code-block:: python

    MIDDLEWARE = [
        "otas_capture.django.OtasCaptureMiddleware",  # first, so it sees every request
        ...
    ]

Being a Django middleware rather than a wrap of ``wsgi.py`` means it runs wherever Django
handles a request: under any WSGI server, and in Django's test ``Client``, which never goes
through ``wsgi.py``. It also sees what only Django knows: the route pattern and view that
matched, the exception a view raised (Django turns it into a 500 response before any WSGI
wrapper could see it), the authenticated user, and why a CSRF check failed.

It reuses the core instead of repeating it: each request an agent makes is run through
an :class:`~otas_capture.OtasMiddleware` (the same decisions, counting, completion and
sender as for any WSGI app), whose "application" is the rest of Django's middleware chain.
The request body is counted through the stream Django reads it from, and the response
through the iterable the server will send, so uploads, ``StreamingHttpResponse`` and
``FileResponse`` pass through unchanged and are measured to the byte. One middleware is
built per configuration and shared by every handler (the test ``Client`` makes a handler
per client), so a test suite does not start a sender per test.

Settings come from Django's settings (``OTAS = {...}`` and ``OTAS_<NAME>``), then the
environment (see :mod:`otas_capture.django_options`); a bad one never stops Django. Besides
the middleware's options there is one of Django's own: ``capture_user``
(``OTAS_CAPTURE_USER``), off by default, which records the id of the authenticated user
in the event's metadata.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any, Callable, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import LazyObject, empty

from .capture.annotate import annotate as annotate_current
from .capture.exchange import Exchange
from .capture.middleware import EXCHANGE_ENVIRON_KEY, OtasMiddleware
from .capture.registry import log_misuse
from .contract import LOGGER_NAME
from .django_options import load_options
from .django_reports import csrf_failure, exchange_of, install_hooks, record_exception

__all__ = [
    "OtasCaptureMiddleware",
    "annotate",
    "csrf_failure",
    "flush",
    "close",
    "stats",
]

logger = logging.getLogger(LOGGER_NAME)

DEBUG_PAGE_NOTE = "Django's debug page (DEBUG=True)"

# Where the per-request callable waits for the core to call it; popped at once.
_HANDLER_KEY = "otas_capture.django.handler"

_cores: dict[tuple[Any, ...], OtasMiddleware] = {}
_cores_lock = threading.Lock()


class OtasCaptureMiddleware:
    """Capture the requests AI agents make to a Django project and ship them to OTAS.

    Put it first in ``settings.MIDDLEWARE``: it then measures the whole of Django's work
    and sees the response every other middleware made. Requests without an agent session
    token pass through with a dictionary lookup's worth of work.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        options, self.capture_user = load_options()
        self.core = _core_for(options)
        install_hooks()

    def __repr__(self) -> str:
        return f"<OtasCaptureMiddleware core={self.core!r}>"

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        environ = request.META
        outer = environ.get(EXCHANGE_ENVIRON_KEY)
        if outer is not None:
            # wsgi.py wraps Django in OtasMiddleware too, and that one is capturing this
            # request: add what Django knows to its event rather than capture it twice.
            _carry_path(outer, environ)
            response = self.get_response(request)
            self._describe(request, response, outer)
            return response
        server_input = environ.get("wsgi.input")
        call = _Call(self, request, server_input)
        stream = getattr(request, "_stream", None)
        if stream is not None:
            # Django already wrapped the server's stream (it stops at Content-Length);
            # the core tees that wrapper, which is what the app reads through.
            environ["wsgi.input"] = stream
        environ[_HANDLER_KEY] = call.run
        try:
            result = self.core(environ, _discard_start_response)
        finally:
            environ.pop(_HANDLER_KEY, None)
            if server_input is not None:
                environ["wsgi.input"] = server_input
            elif stream is not None:  # ASGI: there was none
                environ.pop("wsgi.input", None)
        response = call.response
        if response is None:  # the core did not call Django at all: never lose the request
            return self.get_response(request)
        if not call.captured:
            return response
        return _attach(response, result)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Record the exception a view raised; Django goes on to handle it as usual."""
        exchange = exchange_of(request)
        if exchange is not None:
            record_exception(exchange, exception, exception.__traceback__)

    def _describe(
        self, request: HttpRequest, response: HttpResponseBase, exchange: Exchange
    ) -> None:
        """Put the route, the view and (if asked) the user in the event's metadata."""
        try:
            match = getattr(request, "resolver_match", None)
            if match is not None:
                exchange.add_metadata(
                    route=match.route, endpoint=match.view_name, view=_view_path(match.func)
                )
            if self.capture_user:
                user_id = _user_id(request)
                if user_id is not None:
                    exchange.add_metadata(user_id=user_id)
        except Exception:  # a bug of ours must not break the request
            log_misuse("django.describe", "otas-capture: could not describe a Django request")
            logger.debug("otas-capture: describing a Django request failed", exc_info=True)


class _Call:
    """One captured request: what the core calls as the application, and the result."""

    __slots__ = ("middleware", "request", "server_input", "response", "captured")

    def __init__(
        self, middleware: OtasCaptureMiddleware, request: HttpRequest, server_input: Any
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.server_input = server_input
        self.response: HttpResponseBase | None = None
        self.captured = False

    def run(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = self.request
        exchange = environ.get(EXCHANGE_ENVIRON_KEY)
        if exchange is not None:
            _carry_path(exchange, environ)
            # The core replaced wsgi.input with its tee over Django's stream: read the
            # body through it, so every byte the app reads is counted.
            request._stream = environ["wsgi.input"]
        # The app sees the server's own stream in request.META, as without us.
        if self.server_input is not None:
            environ["wsgi.input"] = self.server_input
        else:
            environ.pop("wsgi.input", None)
        response = self.response = self.middleware.get_response(request)
        if exchange is None:  # not captured (no token, skipped, sampled out, disabled)
            return ()
        self.captured = True
        start_response(_status_line(response), _wsgi_headers(response))
        self.middleware._describe(request, response, exchange)
        body = exchange.response_body
        if body is not None and _is_debug_page(response, exchange):
            body.limit = 0  # count it, but do not ship a page of the app's internals
            exchange.add_metadata(response_body_omitted=DEBUG_PAGE_NOTE)
        if response.streaming:
            if getattr(response, "is_async", False):
                exchange.add_metadata(response_body_omitted="asynchronous streaming response")
                return ()
            return cast("Iterable[bytes]", response.streaming_content)
        # iter(): the response's own chunks, without a copy and without its close().
        return cast("Iterable[bytes]", iter(response))


def _carry_path(exchange: Exchange, meta: dict[str, Any]) -> None:
    """Give the exchange the path Django's views receive, in the form the core expects.

    Django replaces ``PATH_INFO`` and ``SCRIPT_NAME`` in ``META`` with the text they
    spell (bytes that are not UTF-8 re-escaped as ``%XX``). An exchange carries them as
    PEP 3333 does, UTF-8 bytes as Latin-1 characters, and the event builder decodes them
    so: Django's text is put back in that form, or ``é`` would be decoded a second time
    and stored as U+FFFD.
    """
    exchange.script_name = _as_pep3333(meta.get("SCRIPT_NAME", ""))
    exchange.path_info = _as_pep3333(meta.get("PATH_INFO", ""))


def _as_pep3333(text: str) -> str:
    if text.isascii():
        return text
    # surrogatepass: never raise here; the builder replaces what is not valid text.
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def _attach(response: HttpResponseBase, result: Iterable[bytes]) -> HttpResponseBase:
    """Make the server send ``response`` through the core's counting iterable."""
    if response.streaming:
        if not getattr(response, "is_async", False):
            # The same bytes, counted as the server sends them; Django closes ``result``
            # with the response. A FileResponse stops offering its file to the server's
            # wsgi.file_wrapper (sendfile), as for any response the core counts.
            response.streaming_content = result
            return response
    else:
        for _ in result:  # count the body now: it is all in memory already
            pass
    closers = getattr(response, "_resource_closers", None)
    close = getattr(result, "close", None)
    if close is not None:
        if isinstance(closers, list):
            closers.append(close)  # completes the event when the server closes the response
        else:
            close()
    return response


def _discard_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], Any]:
    # Django's own handler starts the real response later, from the HttpResponse.
    return _no_write


def _no_write(data: bytes) -> None:
    return None


def _status_line(response: HttpResponseBase) -> str:
    return f"{response.status_code} {response.reason_phrase}"


def _wsgi_headers(response: HttpResponseBase) -> list[tuple[str, str]]:
    # What Django's WSGIHandler sends: the headers, then one Set-Cookie per cookie.
    headers = [(str(k), str(v)) for k, v in response.items()]
    headers.extend(("Set-Cookie", cookie.output(header="")) for cookie in response.cookies.values())
    return headers


def _is_debug_page(response: HttpResponseBase, exchange: Exchange) -> bool:
    """Whether ``response`` is Django's technical page for an exception (DEBUG=True)."""
    if exchange.error is None or not getattr(settings, "DEBUG", False):
        return False
    return str(response.get("Content-Type", "")).startswith("text/html")


def _view_path(func: Any) -> str:
    view = getattr(func, "view_class", func)  # class-based views
    module = getattr(view, "__module__", None) or "?"
    name = getattr(view, "__qualname__", None) or type(view).__qualname__
    return f"{module}.{name}"


def _user_id(request: HttpRequest) -> str | None:
    """The authenticated user's primary key, if the app already looked the user up.

    ``request.user`` is lazy: reading it here when the view did not would cost a session
    and a user query on the request path, so an unevaluated user is left alone.
    """
    user = request.__dict__.get("user")
    if user is None:
        return None
    if isinstance(user, LazyObject):
        if user._wrapped is empty:
            return None
        user = user._wrapped
    if not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


# -- the core middlewares, one per configuration ----------------------------------------


def _core_for(options: dict[str, Any]) -> OtasMiddleware:
    """The shared core middleware for these options and the current environment."""
    key = _core_key(options)
    with _cores_lock:
        core = _cores.get(key)
        if core is None:
            core = _cores[key] = OtasMiddleware(_dispatch, **options)
        return core


def _core_key(options: dict[str, Any]) -> tuple[Any, ...]:
    # The environment is part of the key: the core reads what the options leave out
    # from it, and tests change it between clients.
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OTAS_")))
    # Where a setting was given is part of it too: its error message names that place.
    given = (
        (name, getattr(value, "where", ""), repr(getattr(value, "value", value)))
        for name, value in options.items()
    )
    return (tuple(sorted(given)), environment)


def _dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # The core's application: the rest of Django's chain for the request at hand.
    handler = environ.pop(_HANDLER_KEY)
    return handler(environ, start_response)  # type: ignore[no-any-return]


def _cores_now() -> list[OtasMiddleware]:
    with _cores_lock:
        return list(_cores.values())


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event captured so far is delivered or given up (see ``OtasMiddleware``)."""
    return all([core.flush(timeout) for core in _cores_now()])


def close(timeout: float = 5.0) -> None:
    """Flush, then stop every sender this integration started. Also runs at exit."""
    for core in _cores_now():
        core.close(timeout)


def stats() -> dict[str, Any]:
    """``stats()`` of the middleware the current settings use (empty before the first request)."""
    options, _ = load_options()
    with _cores_lock:
        core = _cores.get(_core_key(options))
    return core.stats() if core is not None else {}


# -- helpers for the app ------------------------------------------------------------------


def annotate(request: Any = None, /, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of ``request``'s event.

    .. code-block:: python

        from otas_capture.django import annotate

        def checkout(request):
            annotate(request, tenant=request.headers.get("X-Tenant"), plan="pro")

    A no-op for a request that is not captured. Without the request it is
    ``otas_capture.annotate(**props)``, which finds the current request itself. Called
    with something else, it logs a clear error on the ``otas_capture`` logger and does
    nothing: it never breaks the request.
    """
    if request is None:
        annotate_current(**props)
        return
    if not isinstance(getattr(request, "META", None), dict):
        log_misuse(
            "django.annotate",
            "otas-capture: otas_capture.django.annotate() takes the request first, as in "
            "annotate(request, tenant='acme'); got a %s, so these properties were not recorded",
            type(request).__name__,
        )
        return
    exchange = exchange_of(request)
    if exchange is not None:
        exchange.annotate(props)
