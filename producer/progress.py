"""Progress of a running crawl: counters shown on a terminal or logged periodically.

On an interactive terminal one status line is rewritten in place twice a second;
otherwise a ``progress`` INFO line with the counters is logged every ``log_interval``
seconds. Counting costs a lock and a dict update, so workers call ``record`` per item.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

log = logging.getLogger(__name__)

TERMINAL_REFRESH_SECONDS = 0.5
DEFAULT_LOG_INTERVAL_SECONDS = 30.0


class Progress:
    """Thread-safe record counters with an optional reporter thread."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        log_interval: float = DEFAULT_LOG_INTERVAL_SECONDS,
    ) -> None:
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty() if interactive is None else interactive
        self._interval = TERMINAL_REFRESH_SECONDS if self._interactive else log_interval
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def record(self, kind: str, amount: int = 1) -> None:
        """Count ``amount`` records of ``kind``."""
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def line(self) -> str:
        """Return the counters as one line, e.g. ``page=120 comment=40 ... 32.1 records/s``."""
        counts = self.snapshot()
        total = sum(counts.values())
        elapsed = max(time.monotonic() - self._started, 1e-9)
        parts = [f"{kind}={count}" for kind, count in sorted(counts.items())]
        parts.append(f"elapsed={elapsed:.0f}s")
        parts.append(f"rate={total / elapsed:.1f}/s")
        return " ".join(parts)

    def start(self) -> Progress:
        """Start the reporter thread, when enabled."""
        self._started = time.monotonic()
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._report, name="progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the reporter thread and end the terminal line."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            if self._interactive:
                self._stream.write("\n")
                self._stream.flush()

    def _report(self) -> None:
        while not self._stopped.wait(self._interval):
            if self._interactive:
                self._stream.write("\r\x1b[K" + self.line())
                self._stream.flush()
            else:
                log.info("progress %s", self.line())
