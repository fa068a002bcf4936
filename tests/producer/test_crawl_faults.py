"""Crawl jobs under faults: expiring tokens, rate limits, server errors, broken bodies."""

from __future__ import annotations

import threading

import requests

from connections.settings import Settings
from producer.progress import Progress
from tests.producer.conftest import EmulatorSite, StartEmulator
from tests.producer.test_crawl import assert_full_crawl, read_published, run_job, trim_labels
from tests.producer.test_publisher import kafka_settings

__all__ = ["kafka_settings"]

ONE_HOUR_AND_A_MINUTE = 3660.0


class ClockJump(Progress):
    """Progress counters that move the emulator clock forward once, mid-crawl."""

    def __init__(self, control_url: str, after_records: int, seconds: float) -> None:
        super().__init__(enabled=False)
        self._control_url = control_url
        self._after = after_records
        self._seconds = seconds
        self._jumped = threading.Event()
        self._jump_lock = threading.Lock()

    def record(self, kind: str, amount: int = 1) -> None:
        super().record(kind, amount)
        if self._jumped.is_set() or sum(self.snapshot().values()) < self._after:
            return
        with self._jump_lock:
            if self._jumped.is_set():
                return
            response = requests.post(
                f"{self._control_url}/clock", json={"advance_seconds": self._seconds}, timeout=30
            )
            response.raise_for_status()
            self._jumped.set()

    @property
    def jumped(self) -> bool:
        return self._jumped.is_set()


def fired(site: EmulatorSite) -> list[int]:
    """Return how often each fault rule of the emulator fired, in rule order."""
    return [int(rule["fired"]) for rule in site.control("GET", "/faults")["faults"]]


def test_token_expiring_mid_crawl_refreshed(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(v1_gone=True)
    trim_labels(site)
    keys = sorted(
        space.key for space in site.server.site.spaces.values() if space.status == "current"
    )
    source = site.source("cloud-oauth", concurrency=2, page_size=10, spaces={"include": keys})
    assert source.auth.refresh_token_file is not None
    first_refresh_token = source.auth.refresh_token_file.read_text().strip()
    jump = ClockJump(f"{site.origin}/_emulator", after_records=40, seconds=ONE_HOUR_AND_A_MINUTE)

    result = run_job(kafka_settings, source, progress=jump)

    assert jump.jumped
    assert_full_crawl(kafka_settings, site, result)
    stored = source.auth.refresh_token_file.read_text().strip()
    assert stored != first_refresh_token


def test_reused_refresh_token_fails_job(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud-oauth", spaces={"include": ["ENG"]})
    assert source.auth.refresh_token_file is not None
    stale = source.auth.refresh_token_file.read_text().strip()
    credentials = site.server.credentials
    # Another process rotates the token first; the file keeps the old one.
    response = requests.post(
        f"{site.origin}/oauth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": credentials.oauth_client_id,
            "client_secret": credentials.oauth_client_secret,
            "refresh_token": stale,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    # Past the reuse leeway of 10 minutes, the old token is refused.
    site.control("POST", "/clock", {"advance_seconds": 660})

    result = run_job(kafka_settings, source)

    assert result.status == "failed"
    assert result.exit_code == 1
    fatal = [error for error in result.record["errors"] if error["fatal"]]
    assert len(fatal) == 1
    assert "invalid_grant" in (fatal[0]["message"] + (fatal[0]["excerpt"] or ""))
    published = read_published(kafka_settings, result.job_id)
    assert [job["status"] for job in published.jobs] == ["running", "failed"]
    assert published.content == []


def test_rate_limit_storm_recovers(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(faults=("*:429:next=5:1",))
    source = site.source("cloud", concurrency=3, page_size=25)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    assert result.record["rate_limit_waits"] >= 5
    assert result.record["rate_limit_wait_seconds"] > 0
    assert result.record["retries"] >= 5
    assert fired(site) == [5]


def test_server_error_burst_recovers(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(faults=("/content/search:503:next=3", "/space/*:502:next=2"))
    source = site.source("cloud", concurrency=3, page_size=25)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    assert fired(site) == [3, 2]
    assert result.record["retries"] >= 2


def test_truncated_bodies_retried(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(faults=("/content/search:truncate:next=2", "/space/*:badjson:next=2"))
    source = site.source("cloud", concurrency=2, page_size=25)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    assert fired(site) == [2, 2]
    assert result.record["retries"] >= 2


def test_persistent_faults_partial(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(
        faults=(
            "/space/OPE/content/page:503:1.0",
            "/space/ENG/content/blogpost:429:1.0:1",
        )
    )
    source = site.source("cloud", concurrency=3, page_size=25, max_retries=2)
    result = run_job(kafka_settings, source)

    assert result.status == "partial"
    assert result.exit_code == 3
    units = {error["unit"]: error for error in result.record["errors"]}
    assert units["space:OPE:page"]["status"] == 503
    assert units["space:OPE:structure"]["status"] == 503
    assert units["space:ENG:blogpost"]["status"] == 429
    assert units["space:ENG:structure"]["status"] == 429
    assert all(error["url"] for error in result.record["errors"])
    assert not any(error["fatal"] for error in result.record["errors"])

    published = read_published(kafka_settings, result.job_id)
    listings = published.listings()
    assert listings["OPE"][-1]["kind"] == "aborted"
    assert listings["ENG"][-1]["kind"] == "aborted"
    assert "503" in listings["OPE"][-1]["abort_reason"]
    complete = [key for key, chunks in listings.items() if chunks[-1]["kind"] == "complete"]
    assert complete
    ope_types = {record["type"] for record in published.content if record["space_key"] == "OPE"}
    assert "page" not in ope_types
    assert "comment" in ope_types
