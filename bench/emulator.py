"""The Confluence emulator as a benchmark target: a subprocess on a free port.

Every contender of a benchmark talks to the same emulator process with the same site,
latency and rate limit. The control API resets and reads the request counters between
contenders, so each contender's requests and 429 responses are its own.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

logger = logging.getLogger(__name__)

USER_EMAIL = "bench@example.com"
API_TOKEN = "bench-api-token"
# Generating a 100,000-page site takes a minute or two on a small machine.
START_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class SiteSettings:
    """Emulator settings shared by every contender of one benchmark."""

    pages: int
    seed: int = 1
    latency_ms: float = 0.0
    rate_per_second: float | None = None
    burst: int | None = None

    def serve_argv(self) -> list[str]:
        """Return the ``confluence-emulator serve`` arguments of these settings."""
        argv = [
            "serve",
            "--port",
            "0",
            "--control",
            "--pages",
            str(self.pages),
            "--seed",
            str(self.seed),
            "--user-email",
            USER_EMAIL,
            "--api-token",
            API_TOKEN,
        ]
        if self.latency_ms:
            argv += ["--latency", str(self.latency_ms)]
        if self.rate_per_second is not None:
            argv += ["--rate-limit", f"{self.rate_per_second:g}/s"]
        if self.burst is not None:
            argv += ["--burst", str(self.burst)]
        return argv

    def describe(self) -> str:
        """Return the settings as one line for the report."""
        limit = (
            f"{self.rate_per_second:g} requests/s, burst {self.burst}"
            if self.rate_per_second is not None
            else "no rate limit"
        )
        return (
            f"generated site, {self.pages:,} pages (seed {self.seed}), "
            f"latency {self.latency_ms:g} ms per request, {limit}"
        )


class EmulatorError(RuntimeError):
    """The emulator did not start or its control API rejected a request."""


class Emulator:
    """A running ``confluence-emulator serve`` subprocess; use as a context manager."""

    def __init__(self, settings: SiteSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.origin = ""
        self.cloud_base = ""
        self.datacenter_base = ""
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise EmulatorError("the emulator is not running; start it first")
        return self._process.pid

    def start(self) -> Emulator:
        """Start the emulator and wait until it prints its base URLs."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("w", encoding="utf-8")
        argv = [sys.executable, "-m", "emulator", *self.settings.serve_argv()]
        logger.info("starting emulator: %s", self.settings.describe())
        self._process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_file, text=True, bufsize=1
        )
        log_file.close()
        assert self._process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                self.stop()
                raise EmulatorError(
                    f"the emulator exited before printing its base URLs; see {self.log_path}"
                )
            label, _, value = line.strip().partition(": ")
            if label.startswith("confluence-emulator listening on"):
                self.origin = label.rsplit(" ", 1)[-1]
            elif label == "Cloud site base URL":
                self.cloud_base = value
            elif label == "Data Center base URL":
                self.datacenter_base = value
            elif label == "OAuth client":
                return self
        self.stop()
        raise EmulatorError(
            f"the emulator printed no base URLs within {START_TIMEOUT_SECONDS:.0f} s; "
            f"see {self.log_path}"
        )

    def stop(self) -> None:
        """Stop the emulator process that this object started."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_emulator{path}`` and return its JSON body."""
        response = requests.request(method, f"{self.origin}/_emulator{path}", json=body, timeout=60)
        if response.status_code >= 400:
            raise EmulatorError(
                f"control request {method} {path} failed with {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response.json()

    def reset_counters(self) -> None:
        """Zero the request counters and wait until the rate-limit bucket is full again."""
        self.control("POST", "/counters/reset")
        if self.settings.rate_per_second and self.settings.burst:
            time.sleep(self.settings.burst / self.settings.rate_per_second + 0.5)

    def counters(self) -> dict[str, Any]:
        """Return the request counters: requests by route and status, and 429s sent."""
        counters: dict[str, Any] = self.control("GET", "/counters")
        return counters

    def current_global_spaces(self) -> list[str]:
        """Return the keys of the site's current global spaces, the spaces every contender loads."""
        site = self.control("GET", "/site")
        return sorted(
            space["key"]
            for space in site["spaces"]
            if space["type"] == "global" and space["status"] == "current"
        )

    def content_counts(self) -> dict[str, int]:
        """Return the site's content counts by type, e.g. ``page`` and ``blogpost``."""
        counts: dict[str, int] = self.control("GET", "/site")["counts"]
        return counts


def request_totals(counters: dict[str, Any]) -> tuple[int, int]:
    """Return (requests, 429 responses) of a counters snapshot, control API calls left out."""
    total = 0
    throttled = 0
    for route, by_status in counters.get("requests", {}).items():
        if "/_emulator" in route:
            continue
        for status, count in by_status.items():
            total += int(count)
            if str(status) == "429":
                throttled += int(count)
    return total, throttled
