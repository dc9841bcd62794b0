"""The delivery worker's scheduling rules, with a scripted exporter in place of OTAS.

The worker knows nothing of OTAS: these tests drive it through the same small
interface the OTAS client implements, so each rule is checked on its own.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import pytest

from otas_capture.delivery.jobs import MAX_BACKOFF, backoff
from otas_capture.delivery.outcomes import Attempt, Failed, Outcome, PauseForKey, Retry, Sent
from otas_capture.delivery.stats import Stats
from otas_capture.delivery.worker import Worker


class Script:
    """An exporter whose answer for each record comes from ``rule(record, call_number)``."""

    def __init__(self, rule: Callable[[object, int], Outcome], delay: float = 0.0) -> None:
        self.rule = rule
        self.delay = delay
        self.lock = threading.Lock()
        self.calls: list[object] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = threading.Event()
        self.release.set()

    def export(self, record: object) -> Attempt[object]:
        with self.lock:
            self.calls.append(record)
            number = len(self.calls)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.release.wait()
            time.sleep(self.delay)
            return Attempt(self.rule(record, number))
        finally:
            with self.lock:
                self.in_flight -= 1

    def shutdown(self) -> None:
        pass


def make_worker(script: Script, stats: Stats | None = None, **options) -> Worker:
    settings = dict(
        ceiling=8, queue_size=1000, queue_max_bytes=10**9, max_retries=3, retry_backoff=0.01
    )
    settings.update(options)
    return Worker(script, stats or Stats(), **settings)


@pytest.mark.parametrize(
    "attempt, first, low, high",
    [
        (1, 0.5, 0.25, 0.5),
        (2, 0.5, 0.5, 1.0),
        (3, 0.5, 1.0, 2.0),
        (4, 1.0, 4.0, 8.0),
        (20, 0.5, MAX_BACKOFF / 2, MAX_BACKOFF),
        (10**6, 0.5, MAX_BACKOFF / 2, MAX_BACKOFF),
        (0, 0.5, 0.25, 0.5),
    ],
)
def test_backoff_doubles_with_jitter_and_is_capped(attempt, first, low, high):
    for _ in range(50):
        assert low <= backoff(attempt, first) <= high


def test_every_record_is_delivered_once_and_flush_says_so():
    script = Script(lambda record, n: Sent())
    stats = Stats()
    worker = make_worker(script, stats)
    for i in range(50):
        assert worker.submit(i, 10)
    assert worker.flush(5) is True
    assert sorted(script.calls) == list(range(50))
    assert stats.snapshot()["sent"] == 50 and worker.pending == 0
    worker.close(1)


def test_many_flushers_over_a_backlog_each_return_once_their_own_records_are_settled():
    finished: set[int] = set()  # records whose call ended (before the worker counts them)
    tried: set[int] = set()

    def rule(record: object, n: int) -> Outcome:
        assert isinstance(record, int)
        if record == 500:  # waits in the retry heap long after every flush
            return Retry("event_capture_failed", server_wide=False, retry_after=60)
        if record % 50 == 7 and record not in tried:
            tried.add(record)
            return Retry("event_capture_failed", server_wide=False)  # once, then sent
        finished.add(record)
        return Sent()

    script = Script(rule)
    script.release.clear()  # a backlog: nothing ends until released
    stats = Stats()
    worker = make_worker(script, stats, ceiling=4)
    results: list[tuple[int, bool, set[int]]] = []

    def flusher(upto: int) -> None:
        ok = worker.flush(10)
        results.append((upto, ok, set(finished)))

    threads = []
    for batch in range(5):
        for record in range(batch * 100, batch * 100 + 100):
            assert worker.submit(record, 10)
        threads.append(threading.Thread(target=flusher, args=(batch * 100 + 99,)))
        threads[-1].start()
    deadline = time.monotonic() + 5
    while len(worker._ledger._waits) < 5 and time.monotonic() < deadline:  # all waiting
        time.sleep(0.001)
    assert worker.submit(500, 10)  # submitted after every flush began: none waits for it
    script.release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 5
    for upto, ok, seen in results:
        assert ok and set(range(upto + 1)) <= seen
    assert worker.flush(0.2) is False  # record 500 waits to be retried
    assert stats.snapshot()["sent"] == 500 and worker.pending == 1
    worker.close(0)
    assert stats.snapshot()["dropped"] == 1


@pytest.mark.parametrize("timeout", [math.inf, 0, -1, math.nan, 1e300])
def test_any_flush_timeout_is_accepted(timeout):
    worker = make_worker(Script(lambda record, n: Sent()))
    worker.submit("a", 1)
    result = worker.flush(timeout)
    assert isinstance(result, bool)
    assert worker.flush(math.inf) is True
    worker.close(math.inf)


def test_a_failure_about_one_record_gives_it_up_after_one_retry_while_others_go_through():
    script = Script(
        lambda record, n: Retry("bad", server_wide=False) if record == "bad" else Sent()
    )
    stats = Stats()
    worker = make_worker(script, stats, ceiling=1, max_retries=10)
    worker.submit("bad", 1)
    for i in range(5):
        worker.submit(i, 1)
    assert worker.flush(5)
    snapshot = stats.snapshot()
    assert snapshot["reasons"]["failed"] == {"bad": 1}
    assert snapshot["sent"] == 5
    assert script.calls.count("bad") == 2
    worker.close(1)


def test_when_every_call_fails_it_is_an_outage_probed_one_call_at_a_time():
    healthy = threading.Event()

    def rule(record, n):
        return Sent() if healthy.is_set() else Retry("down", server_wide=False, retry_after=0.01)

    script = Script(rule, delay=0.005)
    stats = Stats()
    worker = make_worker(script, stats, ceiling=8, max_retries=1)
    for i in range(20):
        worker.submit(i, 1)
    time.sleep(0.5)
    during = len(script.calls)
    script.most_in_flight = 0
    time.sleep(0.3)
    assert script.most_in_flight == 1  # probing: one call at a time
    assert stats.snapshot()["failed"] == 0  # nothing is given up during an outage
    healthy.set()
    assert worker.flush(5)
    assert stats.snapshot()["sent"] == 20 and during > 2
    worker.close(1)


def test_after_an_outage_the_first_success_returns_to_full_speed():
    healthy = threading.Event()

    def rule(record, n):
        return Sent() if healthy.is_set() else Retry("down", server_wide=True)

    script = Script(rule, delay=0.02)
    worker = make_worker(script, ceiling=8)
    for i in range(60):
        worker.submit(i, 1)
    time.sleep(0.3)
    healthy.set()
    script.most_in_flight = 0
    assert worker.flush(10)
    assert script.most_in_flight > 1
    worker.close(1)


def test_retry_after_is_honoured_even_when_shorter_than_the_backoff():
    script = Script(lambda record, n: Retry("busy", True, retry_after=0.0) if n <= 30 else Sent())
    stats = Stats()
    worker = make_worker(script, stats, retry_backoff=30.0, max_retries=2)
    worker.submit("a", 1)
    assert worker.flush(5)
    assert stats.snapshot()["sent"] == 1 and len(script.calls) == 31
    worker.close(1)


def test_a_refused_key_pauses_without_spending_retries():
    script = Script(lambda record, n: PauseForKey("key") if n <= 3 else Sent())
    stats = Stats()
    worker = make_worker(script, stats, max_retries=0)
    worker.submit("a", 1)
    assert worker.flush(5)
    assert stats.snapshot()["sent"] == 1
    worker.close(1)


def test_a_record_refused_locally_is_counted_with_its_kind():
    script = Script(lambda record, n: Failed("before_send", kind="skipped", called=False))
    stats = Stats()
    worker = make_worker(script, stats)
    worker.submit("a", 1)
    assert worker.flush(5)
    assert stats.snapshot()["reasons"]["skipped"] == {"before_send": 1}
    worker.close(1)


def test_the_queue_is_bounded_in_count_and_bytes():
    script = Script(lambda record, n: Sent())
    script.release.clear()
    stats = Stats()
    worker = make_worker(script, stats, queue_size=5, queue_max_bytes=1000)
    results = [worker.submit(i, 300) for i in range(4)] + [worker.submit("x", 1) for _ in range(3)]
    assert results == [True, True, True, False, True, True, False]
    assert stats.snapshot()["reasons"]["dropped"] == {"queue_bytes_full": 1, "queue_full": 1}
    script.release.set()
    worker.close(5)


@pytest.mark.parametrize("ceiling", [1, 64])
def test_close_returns_in_time_whatever_the_calls_in_flight_do(ceiling):
    script = Script(lambda record, n: Sent())
    script.release.clear()  # every call hangs
    stats = Stats()
    worker = make_worker(script, stats, ceiling=ceiling)
    for i in range(100):
        worker.submit(i, 1)
    time.sleep(0.1)
    start = time.monotonic()
    unsent = worker.close(0.5)
    took = time.monotonic() - start
    script.release.set()
    assert took < 1.5
    snapshot = stats.snapshot()
    in_flight = snapshot["reasons"]["unknown"]["shutdown"]
    assert in_flight >= 1
    assert snapshot["reasons"]["dropped"] == {"shutdown": 100 - in_flight}
    assert len(unsent) == 100 - in_flight


def test_a_record_sent_before_a_timeout_and_sent_again_is_a_possible_duplicate():
    script = Script(
        lambda record, n: Retry("timeout", True, maybe_delivered=True) if n == 1 else Sent()
    )
    stats = Stats()
    worker = make_worker(script, stats)
    worker.submit("a", 1)
    assert worker.flush(5)
    snapshot = stats.snapshot()
    assert (snapshot["sent"], snapshot["possible_duplicate"]) == (1, 1)
    worker.close(1)


def test_a_timed_out_record_left_at_shutdown_is_unknown_not_dropped():
    script = Script(lambda record, n: Retry("timeout", True, maybe_delivered=True, retry_after=60))
    stats = Stats()
    worker = make_worker(script, stats)
    worker.submit("a", 1)
    time.sleep(0.2)
    worker.close(0.1)
    assert stats.snapshot()["reasons"]["unknown"] == {"shutdown": 1}
    assert stats.snapshot()["dropped"] == 0


def test_a_thread_that_cannot_start_leaves_the_record_counted_once(monkeypatch):
    real_start = threading.Thread.start
    failures = []

    def start_once_failing(self):
        if self.name.startswith("otas-capture-sender") and not failures:
            failures.append(self)
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start_once_failing)
    script = Script(lambda record, n: Sent())
    stats = Stats()
    worker = make_worker(script, stats)
    assert worker.submit("a", 1) is True  # queued; no thread yet
    assert worker.submit("b", 1) is True  # starts one
    assert worker.flush(5)
    snapshot = stats.snapshot()
    assert (snapshot["sent"], snapshot["dropped"]) == (2, 0)
    worker.close(1)


def test_a_durable_record_yields_its_place_to_a_live_one_and_is_told_so():
    script = Script(lambda record, n: Sent())
    script.release.clear()  # nothing ends: the queue fills
    stats = Stats()
    worker = make_worker(script, stats, ceiling=1, queue_size=4, queue_max_bytes=10**6)
    told: list[tuple[str, str]] = []
    assert worker.submit("live-0", 1)  # taken by the one call slot, then hangs
    time.sleep(0.1)
    for name in ("durable-1", "durable-2"):
        assert worker.offer(name, 1, lambda kind, name=name: told.append((name, kind)))
    assert not worker.offer("durable-3", 1, lambda kind: None)  # its share (half) is full
    assert worker.submit("live-1", 1)
    assert worker.submit("live-2", 1)  # full: the newest durable record gives its place
    assert stats.snapshot()["dropped"] == 0
    script.release.set()
    assert worker.flush(5)
    assert told == [("durable-2", "returned"), ("durable-1", "sent")]
    assert "durable-2" not in script.calls and stats.snapshot()["sent"] == 4
    worker.close(1)


def test_durable_records_left_at_close_stay_kept_not_lost():
    script = Script(lambda record, n: Retry("down", server_wide=True, retry_after=60))
    stats = Stats()
    worker = make_worker(script, stats)
    told: list[str] = []
    assert worker.offer("durable", 1, told.append)
    time.sleep(0.1)
    worker.close(0.1)
    snapshot = stats.snapshot()
    assert told == ["spooled"]
    assert (snapshot["spooled"], snapshot["dropped"], snapshot["unknown"]) == (1, 0, 0)


def test_delivery_resuming_after_a_pause_is_said_once_at_info(caplog):
    healthy = threading.Event()

    def rule(record, n):
        return Sent() if healthy.is_set() else PauseForKey("invalid_sdk_key")

    caplog.set_level("INFO", logger="otas_capture")
    script = Script(rule)
    worker = make_worker(script, retry_backoff=0.01)
    for i in range(5):
        worker.submit(i, 1)
    time.sleep(0.2)
    healthy.set()
    assert worker.flush(5)
    resumed = [r for r in caplog.records if "delivery resumed" in r.getMessage()]
    assert len(resumed) == 1 and resumed[0].levelname == "INFO"
    assert "invalid_sdk_key" in resumed[0].getMessage()
    worker.close(1)


def test_a_job_is_in_exactly_one_state_at_a_time():
    outcomes = iter([Retry("busy", server_wide=False, retry_after=0.05), Sent()])
    script = Script(lambda record, n: next(outcomes), delay=0.05)
    worker = make_worker(script)
    worker.submit("a", 1)
    seen = set()
    deadline = time.monotonic() + 5
    while worker.pending and time.monotonic() < deadline:
        with worker._lock:
            left, in_flight = worker._ledger.unsettled()
            assert len(left) + len(in_flight) == 1  # never in two places
            seen.update(job.state.value for job in left + in_flight)
        time.sleep(0.001)
    assert seen <= {"queued", "in flight", "waiting to retry"} and "waiting to retry" in seen
    worker.close(1)
