"""Client-side rate limiting shared by all workers of a source, and Retry-After parsing.

``RateLimiter`` is a token bucket in its GCRA form (generic cell rate algorithm): each
request reserves the next free slot under a lock and then sleeps outside it, so threads
never hold the lock while waiting. A 429 from the server calls ``pause()``, which moves
every worker's next slot past the pause and restarts at the steady rate, without a burst.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

logger = logging.getLogger(__name__)


class RateLimiter:
    """Token bucket of ``rate`` requests per second with room for ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate limit {rate!r} is invalid: use requests per second above 0")
        if burst < 1:
            raise ValueError(f"burst {burst!r} is invalid: use at least 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._arrival = clock()  # theoretical arrival time of the next request
        self._paused_until = 0.0

    def reserve(self) -> float:
        """Reserve the next slot and return the seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            floor = max(now, self._paused_until)
            arrival = max(self._arrival, floor)
            slot = max(floor, arrival - self._tolerance)
            self._arrival = arrival + self._interval
            return slot - now

    def acquire(self) -> float:
        """Wait for a slot; return the seconds waited (0.0 when none)."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds``, then resume at the steady rate."""
        if seconds <= 0:
            return
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
            # Only the first request after the pause goes at `until`. Later ones follow at
            # the steady rate, so the server sees no burst right after a 429.
            self._arrival = max(self._arrival, until + self._tolerance)
        logger.debug("rate limiter paused seconds=%.3f", seconds)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` value requests, or None when it is unusable.

    Accepts delta-seconds (``120``, also huge values such as Long.MAX_VALUE, which the
    caller clamps) and HTTP-dates (``Wed, 21 Oct 2015 07:28:00 GMT``). A date in the past
    gives 0.0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        # float() of a 19-digit value is finite, so clamping later cannot overflow.
        return float(text)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    rng: random.Random | None = None,
) -> float:
    """Return the exponential backoff before retry ``attempt`` (1-based), with jitter.

    The delay doubles per attempt from ``initial`` up to ``maximum`` and is multiplied
    by a random factor from 0.7 to 1.3, as Atlassian's rate-limiting guide recommends.
    """
    exponent = min(max(attempt - 1, 0), 62)
    base = min(maximum, initial * (2.0**exponent))
    factor = (rng or random).uniform(0.7, 1.3)
    return min(maximum, base * factor)
