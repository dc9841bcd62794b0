"""The sender: the delivery worker wired to the OTAS client, behind the middleware's facade.

The request thread calls :meth:`Sender.submit`, which only appends to a bounded queue
under a lock (dropping and counting when it is full); it never touches the network.
Everything else happens in background threads: :mod:`otas_capture.delivery.worker` schedules
(queue, memory budget, retries, pauses, flush, threads, fork) and
:mod:`otas_capture.otas.client` speaks OTAS (token check, project id, event body, the POST
and the meaning of Brain's answer). :mod:`otas_capture.delivery.limiter` decides how many calls
may be in flight, up to ``OTAS_CONCURRENCY``.

With ``OTAS_SPOOL_DIR`` set, what was never sent when :meth:`Sender.close` runs out of
time is written to the spool (:mod:`otas_capture.delivery.spool`), and the first event this
process captures starts a thread that queues what earlier processes left there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from time import perf_counter
from typing import Any

from ..capture.exchange import Exchange
from ..config import Config
from ..otas.client import OtasClient, Prepared
from .slots import host_limit
from .stats import Stats
from .worker import Worker

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
        self._worker = Worker(
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
        self._restoring = False

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
        if self._spool is not None and not self._restoring:
            self._restoring = True
            self._start_restoring()
        return self._worker.submit(exchange, exchange.approx_size())

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s (``math.inf`` allowed) until every event submitted
        before the call is delivered or given up; True if so."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Flush for up to ``timeout`` s, then stop; what is left is counted (``dropped``,
        or ``unknown`` when it may have reached Brain). Returns the events never sent,
        as prepared bodies or captured exchanges (with a spool: those it could not keep)."""
        return self._worker.close(timeout, self._keep if self._spool is not None else None)

    # -- the spool ----------------------------------------------------------------------

    def _keep(self, records: list[Any]) -> Collection[int]:
        """Write what it can of ``records`` to the spool; the indexes of those written."""
        assert self._spool is not None
        deadline = perf_counter() + SPOOL_BUILD_BUDGET
        encoded: list[tuple[int, bytes]] = []
        for index, record in enumerate(records):
            if perf_counter() > deadline:
                break
            data = self._client.encode(record)
            if data is not None:
                encoded.append((index, data))
        saved = self._spool.save([data for _, data in encoded])
        return [index for index, _ in encoded[:saved]]

    def _start_restoring(self) -> None:
        thread = threading.Thread(target=self._restore, name="otas-capture-restore", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # can't start new thread: the spool waits for the next process
            self._restoring = False

    def _restore(self) -> None:
        """Queue what earlier processes left in the spool (each file goes to one process)."""
        assert self._spool is not None
        try:
            for batch in self._spool.claim():
                for data in batch:
                    record = Prepared.from_bytes(data)
                    if record is None:
                        self._stats.lost("dropped", "spool_unreadable")
                        continue
                    self._stats.incr("restored")
                    self._worker.submit(record, record.size)
        except Exception:
            self._stats.log_limited(
                "restore", logging.ERROR, "otas-capture: cannot read the spool", exc_info=True
            )


def _open_spool(config: Config, stats: Stats) -> Any:
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
