"""FastAPI, Starlette and any ASGI 3 application: the same capture as the WSGI middleware.

.. code-block:: python

    from fastapi import FastAPI
    from otas_capture.asgi import OtasASGIMiddleware

    app = FastAPI()
    app.add_middleware(OtasASGIMiddleware)  # OTAS_SDK_KEY and friends from the environment

    # any other ASGI app (Litestar, Quart, Django's get_asgi_application()):
    app = OtasASGIMiddleware(app)

``http`` requests that carry the agent's session token are captured (see
:mod:`otas_capture.capture.asgi_record`) and handed to the WSGI middleware's delivery
machinery (each middleware owns an ``OtasMiddleware`` core: its settings, sender,
stats, flush, close and exit hooks), with the same masking and accounting; ``websocket`` scopes and
every other request pass straight through. On the event loop the middleware only
counts and copies bytes: the hand-off is the sender's ``submit`` (a bounded queue that
drops and counts rather than wait), and the event is built, masked and shipped on the
sender's threads.

ASGI servers handle SIGTERM themselves and end the application with the lifespan
``shutdown`` message: the middleware then closes, off the loop, before the app's answer
reaches the server: it flushes for up to ``OTAS_SHUTDOWN_TIMEOUT``, then counts what is
left and says so in one log line, as at interpreter exit (which covers apps without
lifespan support). A lifespan ``startup`` after that (the same app started again in the
process, as test clients do) opens it again with the same settings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable
from contextvars import ContextVar
from typing import Any, Callable

from .capture.annotate import CURRENT_EXCHANGE
from .capture.asgi_record import Message, Receive, Recorder, Scope, Send, new_exchange
from .capture.asgi_record import session_token as _session_token
from .capture.exchange import Exchange
from .capture.middleware import OtasMiddleware
from .config import BeforeSend, Config

__all__ = ["ASGIApp", "OtasASGIMiddleware"]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The headers list of the request an OtasASGIMiddleware is capturing in this context: a
# second middleware around the same app (or a Starlette Mount's copy of the scope,
# which shares the list) sees it and only passes the request on.
_CAPTURING: ContextVar[object] = ContextVar("otas_capture_asgi_request", default=None)

_NOT_SETTINGS = frozenset({"self", "app"})


class OtasASGIMiddleware:
    """Capture the requests AI agents make to an ASGI application and ship them to OTAS.

    :param app: the ASGI 3 application to wrap.

    Every other parameter is a setting, keyword only, exactly as for
    :class:`~otas_capture.OtasMiddleware` (its docstring and the README's configuration
    table say what each means): ``None`` reads ``OTAS_<NAME>`` from the environment, a
    bad value in code raises :class:`~otas_capture.ConfigError`, a bad variable is
    logged and replaced. Without an SDK key every request passes through untouched.

    ``flush``, ``close`` and ``stats`` are those of the WSGI middleware, and
    ``otas_capture.flush()``/``close()``/``stats()`` include this middleware too.
    """

    # Spelled out, as on OtasMiddleware, so that editors and type checkers know them;
    # tests/test_asgi.py keeps the two signatures equal.
    def __init__(
        self,
        app: ASGIApp,
        *,
        sdk_key: str | None = None,
        project_id: str | None = None,
        brain_url: str | None = None,
        uasam_url: str | None = None,
        enabled: bool | None = None,
        max_body_bytes: int | None = None,
        sensitive_headers: str | Iterable[str] | None = None,
        sensitive_fields: str | Iterable[str] | None = None,
        skip_paths: str | Iterable[str] | None = None,
        sample_rate: float | None = None,
        queue_size: int | None = None,
        queue_max_bytes: int | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        answer_timeout: float | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        shutdown_timeout: float | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        safe_fields: str | Iterable[str] | None = None,
        before_send: BeforeSend | str | None = None,
        environment: str | None = None,
        release: str | None = None,
    ) -> None:
        options = {name: value for name, value in locals().items() if name not in _NOT_SETTINGS}
        self.app = app
        self._options = options
        # The WSGI middleware's life cycle (settings, sender, stats, flush, close, exit)
        # is the one this middleware has; only the request path differs.
        self._core = OtasMiddleware(app, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<OtasASGIMiddleware app={self.app!r} capturing={self._core.capturing}>"

    @property
    def config(self) -> Config:
        return self._core.config

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event captured so far is delivered or given up (see
        :meth:`OtasMiddleware.flush`). Blocks: call it from a thread, not the loop."""
        return self._core.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` s, then stop the sender (see
        :meth:`OtasMiddleware.close`)."""
        self._core.close(timeout)

    def stats(self) -> dict[str, Any]:
        """Counts of what happened to captured requests (see :meth:`OtasMiddleware.stats`)."""
        return self._core.stats()

    # -- the request path --------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        core = self._core
        kind = scope["type"]
        if kind == "http":
            core.start_serving()
        if kind != "http" or not core.capturing:
            if kind == "lifespan" and core.config.shipping:
                return await self._lifespan(scope, receive, send)
            return await self.app(scope, receive, send)
        headers = scope.get("headers", ())
        token = _session_token(headers)
        if token is None:
            core.skip_untokened()
            return await self.app(scope, receive, send)
        if _CAPTURING.get() is headers:  # wrapped twice: the outer one captures it
            return await self.app(scope, receive, send)
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            path = root_path + path
        if not core.admits(path):
            return await self.app(scope, receive, send)
        await self._capture(scope, receive, send, token)

    async def _capture(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        core = self._core
        limit = core.config.max_body_bytes
        exchange = new_exchange(scope, token, limit)
        core.handoff.begin(exchange)
        recorder = Recorder(exchange, receive, send, limit)
        capturing = _CAPTURING.set(scope.get("headers", ()))
        current = CURRENT_EXCHANGE.set(exchange)
        try:
            await self.app(scope, recorder.receive, recorder.send)
        except asyncio.CancelledError:
            # The server gave up on the request (the client left): not the app's error.
            exchange.add_metadata(request_cancelled=True)
            raise
        except BaseException as exc:
            exchange.fail(exc)
            raise
        finally:
            CURRENT_EXCHANGE.reset(current)
            _CAPTURING.reset(capturing)
            _note_route(exchange, scope)
            if not recorder.done and exchange.error is None:
                # Returned (or was cancelled) without ending its response.
                exchange.add_metadata(response_complete=False)
            core.handoff.finish(exchange)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan messages through; close before the app's answer to the
        shutdown reaches the server, which ends the process soon after (uvicorn by
        raising SIGTERM again, with no exit hooks run)."""
        closed = False
        shutting_down = False

        async def lifespan_receive() -> Message:
            nonlocal shutting_down
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup" and self._core.closed:
                # The same app started again in this process (a test client's second
                # ``with`` block): capture again, with the same settings.
                self._core = OtasMiddleware(self.app, **self._options)  # type: ignore[arg-type]
            elif kind == "lifespan.shutdown":
                shutting_down = True
            return message

        async def lifespan_send(message: Message) -> None:
            nonlocal closed
            if (
                shutting_down
                and not closed
                and message.get("type", "").startswith("lifespan.shutdown.")
            ):
                closed = True
                await self._close_off_loop()
            await send(message)

        try:
            await self.app(scope, lifespan_receive, lifespan_send)
        finally:
            if shutting_down and not closed:
                await self._close_off_loop()

    async def _close_off_loop(self) -> None:
        """Close (flush for up to the shutdown timeout, then count what is left) in a
        thread, the loop free meanwhile."""
        core = self._core
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Not asyncio (trio, say): the server has stopped serving by the lifespan
            # shutdown, so a wait bounded by the shutdown timeout holds up no request.
            core.close()
            return
        try:
            await loop.run_in_executor(None, core.close)
        except RuntimeError:  # the loop's executor is already shut down
            core.close()


def _note_route(exchange: Exchange, scope: Scope) -> None:
    """The route template and endpoint name a router (Starlette's, FastAPI's) left in
    the scope: ``/items/{item_id}``, ``read_item``. Never raises."""
    try:
        route = scope.get("route")
        if route is None:
            return
        found = {"route": getattr(route, "path", None), "endpoint": getattr(route, "name", None)}
        exchange.add_metadata(**{key: value for key, value in found.items() if type(value) is str})
    except Exception:
        pass
