"""The sender: the delivery worker wired to the OTAS client, behind the middleware's facade.

The request thread calls :meth:`Sender.submit`, which only appends to a bounded queue
under a lock (dropping and counting when it is full); it never touches the network.
Everything else happens in background threads: :mod:`otas_capture.delivery.worker` schedules
(queue, memory budget, retries, pauses, flush, threads, fork) and
:mod:`otas_capture.otas.client` speaks OTAS (token check, project id, event body, the POST
and the meaning of Brain's answer). :mod:`otas_capture.delivery.limiter` decides how many calls
may be in flight, up to ``OTAS_CONCURRENCY``.

With ``OTAS_SPOOL_DIR`` set, what was never sent when :meth:`Sender.close` runs out of
time is written to the spool (:mod:`otas_capture.delivery.spool`), and :meth:`Sender.start`
(the middleware's first request of any kind) starts shipping what earlier processes left
there (:mod:`otas_capture.delivery.restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from time import perf_counter
from typing import TYPE_CHECKING, Any, Union

from ..capture.exchange import Exchange
from ..config import Config
from ..otas.client import OtasClient, Prepared
from .ledger import deadline_after, wait_time
from .restore import Restorer
from .slots import host_limit
from .stats import Stats
from .worker import Worker

if TYPE_CHECKING:
    from .spool import Spool

# Union rather than |: this alias is evaluated at runtime, where Python 3.9 has no |.
Record = Union[Exchange, Prepared]

# Seconds close() may spend building the bodies of events it keeps in the spool.
SPOOL_BUILD_BUDGET = 0.5


class Sender:
    """Delivers captured exchanges to Brain from background threads.

    Parameters:
        config: the checked settings; ``sdk_key`` must be set.
        stats: where every outcome is counted.
    """

    def __init__(self, config: Config, stats: Stats) -> None:
        self._client = OtasClient(config, stats)
        self._worker: Worker[Record] = Worker(
            self._client,
            stats,
            ceiling=config.concurrency,
            queue_size=config.queue_size,
            queue_max_bytes=config.queue_max_bytes,
            max_retries=config.max_retries,
            retry_backoff=config.retry_backoff,
            # One limit for the host's processes calling this Brain; a moving average
            # of latency over a quarter of the timeout cuts it, whatever else it learnt.
            new_limit=lambda: host_limit(config.brain_url, config.concurrency, config.timeout / 4),
        )
        self._stats = stats
        self._spool = _open_spool(config, stats)
        self._restorer: Restorer[Record] | None = None
        if self._spool is not None:
            self._restorer = Restorer(self._spool, self._worker, stats, _decode)

    @property
    def pending(self) -> int:
        """Events not yet settled: queued, waiting to retry or in flight."""
        return self._worker.pending

    def start(self) -> None:
        """Start shipping what earlier processes left in the spool, if not yet started.

        Called on the first request of any kind: a thread started earlier, while a
        server is still to fork its workers (gunicorn ``--preload``), would be the
        parent's alone."""
        if self._restorer is not None and not self._restorer.started:
            self._restorer.start()

    def submit(self, exchange: Exchange) -> bool:
        """Queue an exchange for delivery; drop and count it if it does not fit."""
        self.start()
        return self._worker.submit(exchange, exchange.approx_size())

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s (``math.inf`` allowed) until every event submitted
        before the call, and every event restored from the spool, is delivered or given
        up; True if so."""
        deadline = deadline_after(timeout)
        if self._restorer is not None:
            self.start()
            if not self._restorer.wait(deadline):
                return False
        remaining = wait_time(deadline)
        return self._worker.flush(float("inf") if remaining is None else remaining)

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Flush for up to ``timeout`` s, then stop; what is left is counted (``dropped``,
        or ``unknown`` when it may have reached Brain). Returns the events never sent,
        as prepared bodies or captured exchanges (with a spool: those it could not keep).
        Restored events not delivered stay in the spool (``spooled``)."""
        if self._restorer is None:
            return self._worker.close(timeout)
        self._restorer.stop()  # what it has not offered yet stays on disk
        unsent = self._worker.close(timeout, self._keep)
        self._restorer.release()
        return unsent

    # -- the spool ----------------------------------------------------------------------

    def _keep(self, records: list[Record]) -> Collection[int]:
        """Write what it can of ``records`` to the spool; the indexes of those written."""
        assert self._spool is not None
        deadline = perf_counter() + SPOOL_BUILD_BUDGET
        encoded: list[tuple[int, bytes]] = []
        try:
            for index, record in enumerate(records):
                if perf_counter() > deadline:
                    break
                data = self._client.encode(record)
                if data is not None:
                    encoded.append((index, data))
            saved = self._spool.save([data for _, data in encoded])
        except Exception:  # a full disk must not break the host's shutdown
            message = "otas-capture: cannot keep events"
            self._stats.log_limited("keep", logging.ERROR, message, exc_info=True)
            return []
        return [index for index, _ in encoded[:saved]]


def _decode(data: bytes) -> tuple[Record, int] | None:
    """A spooled record as an event to send again, and its size in memory."""
    prepared = Prepared.from_bytes(data)
    return None if prepared is None else (prepared, prepared.size)


def _open_spool(config: Config, stats: Stats) -> Spool | None:
    """The spool at ``config.spool_dir``, or None (not set, or unusable: said once)."""
    if not config.spool_dir:
        return None
    try:
        from .spool import Spool  # POSIX only: imported only when asked for

        return Spool(config.spool_dir, config.queue_max_bytes)
    except (ImportError, OSError, ValueError) as exc:
        stats.log_limited(
            "spool",
            logging.ERROR,
            "otas-capture: OTAS_SPOOL_DIR cannot be used (%s); events undelivered at exit "
            "will not be kept",
            exc,
        )
        return None
