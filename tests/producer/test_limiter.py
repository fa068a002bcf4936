"""Tests of the client-side rate limiter (fake clock), Retry-After parsing and backoff."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest

from producer.limiter import RateLimiter, backoff_delay, parse_retry_after


class FakeClock:
    """A clock that moves only when a test advances it or the limiter sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter_on(clock: FakeClock, rate: float, burst: int) -> RateLimiter:
    return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)


def test_limiter_allows_burst_then_steady_rate() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=10.0, burst=3)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.1)
    assert waits[4] == pytest.approx(0.2)


def test_limiter_refills_while_idle() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=2.0, burst=2)
    limiter.reserve()
    limiter.reserve()
    clock.now += 10.0
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.5)


def test_limiter_acquire_sleeps_and_reports_wait() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=4.0, burst=1)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.25)
    assert clock.sleeps == [pytest.approx(0.25)]


def test_pause_holds_every_worker_then_resumes_without_burst() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=10.0, burst=5)
    limiter.pause(3.0)
    waits = [limiter.reserve() for _ in range(3)]
    assert waits[0] == pytest.approx(3.0)
    assert waits[1] == pytest.approx(3.1)
    assert waits[2] == pytest.approx(3.2)


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=100.0, burst=1)
    limiter.pause(5.0)
    limiter.pause(1.0)
    assert limiter.reserve() == pytest.approx(5.0)


def test_limiter_shared_by_threads_gives_distinct_slots() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, rate=50.0, burst=1)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            wait = limiter.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = sorted(round(wait / 0.02) for wait in waits)
    assert slots == list(range(200))


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
def test_limiter_rejects_invalid_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="invalid"):
        RateLimiter(rate, burst)


def test_retry_after_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5


def test_retry_after_long_max_value_is_finite() -> None:
    seconds = parse_retry_after("9223372036854775807")
    assert seconds is not None
    assert seconds == pytest.approx(9.223372036854775807e18)
    assert min(seconds, 300.0) == 300.0


def test_retry_after_http_date() -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0


def test_retry_after_http_date_in_past_is_zero() -> None:
    now = datetime(2015, 10, 21, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf"])
def test_retry_after_unusable_values(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_doubles_with_jitter_and_cap() -> None:
    rng = random.Random(3)
    for attempt, base in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)]:
        delay = backoff_delay(attempt, initial=2.0, maximum=60.0, rng=rng)
        assert 0.7 * base <= delay <= 1.3 * base
    assert backoff_delay(200, initial=2.0, maximum=60.0, rng=rng) <= 60.0
