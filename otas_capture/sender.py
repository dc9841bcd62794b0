"""The sender: the delivery worker wired to the OTAS client, behind the middleware's facade.

The request thread calls :meth:`Sender.submit`, which only appends to a bounded queue
under a lock (dropping and counting when it is full); it never touches the network.
Everything else happens in background threads: :mod:`otas_capture.worker` schedules
(queue, memory budget, retries, pauses, flush, threads, fork) and
:mod:`otas_capture.client` speaks OTAS (token check, project id, event body, the POST
and the meaning of Brain's answer). :mod:`otas_capture.limiter` decides how many calls
may be in flight, up to ``OTAS_CONCURRENCY``.
"""

from __future__ import annotations

from typing import Any

from .capture import Exchange
from .client import OtasClient
from .config import Config
from .stats import Stats
from .worker import Worker


class Sender:
    """Delivers captured exchanges to Brain from background threads.

    Parameters:
        config: the checked settings; ``sdk_key`` must be set.
        stats: where every outcome is counted.
    """

    def __init__(self, config: Config, stats: Stats) -> None:
        self._client = OtasClient(config, stats)
        self._worker = Worker(
            self._client,
            stats,
            ceiling=config.concurrency,
            queue_size=config.queue_size,
            queue_max_bytes=config.queue_max_bytes,
            max_retries=config.max_retries,
            retry_backoff=config.retry_backoff,
        )

    @property
    def pending(self) -> int:
        """Events not yet settled: queued, waiting to retry or in flight."""
        return self._worker.pending

    @property
    def limit(self) -> int:
        """Calls allowed in flight now (adaptive, at most ``concurrency``)."""
        return self._worker.limit

    def submit(self, exchange: Exchange) -> bool:
        """Queue an exchange for delivery; drop and count it if it does not fit."""
        return self._worker.submit(exchange, exchange.approx_size())

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s (``math.inf`` allowed) until every event submitted
        before the call is delivered or given up; True if so."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Flush for up to ``timeout`` s, then stop; what is left is counted (``dropped``,
        or ``unknown`` when it may have reached Brain). Returns the events never sent,
        as prepared bodies or captured exchanges."""
        return self._worker.close(timeout)
