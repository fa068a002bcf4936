"""Tests of ConfluenceClient against the emulator over HTTP, plus URL handling."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emulator.model import ContentStatus, ContentType
from producer.client import ConfluenceClient, redact_url
from producer.config import SourceConfig, parse_sources
from producer.errors import FatalError, RetriableError, SkippableError
from producer.limiter import RateLimiter
from tests.producer.conftest import EmulatorSite, StartEmulator


class WaitRecorder:
    """A sleep function that records the requested waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def recorded_client(
    site: EmulatorSite, deployment: str = "cloud", **overrides: Any
) -> tuple[ConfluenceClient, WaitRecorder]:
    """Return a client whose limiter and backoff record their waits without sleeping."""
    recorder = WaitRecorder()
    source = site.source(deployment, **overrides)
    limiter = RateLimiter(source.rate_limit, source.burst, sleep=recorder)
    return ConfluenceClient(source, limiter=limiter, sleep=recorder), recorder


def add_fault(site: EmulatorSite, rule: str) -> None:
    site.control("POST", "/faults", {"rule": rule})


@pytest.mark.parametrize(
    ("deployment", "auth"),
    [("cloud", "basic"), ("cloud-oauth", "oauth2"), ("datacenter", "pat"), ("datacenter", "basic")],
)
def test_current_user_on_each_root(emulator_site: EmulatorSite, deployment: str, auth: str) -> None:
    with ConfluenceClient(emulator_site.source(deployment, auth=auth)) as client:
        user = client.current_user()
    assert user.get("accountId") or user.get("userKey")
    assert user["timeZone"] == "Europe/Berlin"
    assert client.stats.snapshot()["by_status"] == {200: 1}


@pytest.mark.parametrize("deployment", ["cloud", "cloud-oauth", "datacenter"])
def test_next_link_joined_onto_base(emulator_site: EmulatorSite, deployment: str) -> None:
    with ConfluenceClient(emulator_site.source(deployment)) as client:
        first = client.get("/space", {"limit": 1})
        link = first["_links"]["next"]
        assert link.startswith("/rest/api/space?")
        second = client.get(link)
    assert second["start"] == 1
    assert second["results"][0]["key"] != first["results"][0]["key"]


def test_url_for_forms(emulator_site: EmulatorSite) -> None:
    source = emulator_site.source("datacenter")
    root = source.api_root
    with ConfluenceClient(source) as client:
        assert client.url_for("/space") == f"{root}/space"
        assert client.url_for("space") == f"{root}/space"
        assert client.url_for("/rest/api/space?start=2") == f"{root}/space?start=2"
        assert client.url_for("/confluence/rest/api/space") == f"{root}/space"
        assert client.url_for(f"{root}/content/1") == f"{root}/content/1"


def test_url_for_rejects_other_host(emulator_site: EmulatorSite) -> None:
    with (
        ConfluenceClient(emulator_site.source("cloud")) as client,
        pytest.raises(FatalError, match="refusing to send credentials"),
    ):
        client.url_for("https://api.media.atlassian.com/file/1?token=abc")


def test_redact_url_hides_secrets() -> None:
    url = "https://user:pw@media.example/file/1?token=abc&client=x&signature=zz"
    redacted = redact_url(url)
    assert redacted == "https://media.example/file/1?token=***&client=x&signature=***"


def test_elastic_429_waits_for_retry_after(emulator_site: EmulatorSite) -> None:
    """Elastic connectors retried 429 at once; the retry must wait for Retry-After."""
    add_fault(emulator_site, "GET /space:429:next=1:7")
    client, recorder = recorded_client(emulator_site, max_retry_after=60.0)
    with client:
        page = client.get("/space", {"limit": 1})
    assert page["results"]
    stats = client.stats.snapshot()
    assert stats["retries"] == 1
    assert stats["by_status"] == {429: 1, 200: 1}
    assert stats["rate_limit_waits"] == 1
    assert recorder.waits == [pytest.approx(7.0, abs=0.5)]


def test_huge_retry_after_clamped(emulator_site: EmulatorSite) -> None:
    emulator_site.control("POST", "/rate-limit", {"anomaly": "huge-retry-after"})
    add_fault(emulator_site, "GET /space:429:next=2")
    client, recorder = recorded_client(emulator_site, max_retry_after=3.0)
    with client:
        client.get("/space", {"limit": 1})
    assert client.stats.retries == 2
    assert len(recorder.waits) == 2
    assert all(0 < wait <= 3.0 for wait in recorder.waits)


def test_http_date_retry_after(emulator_site: EmulatorSite) -> None:
    emulator_site.control("POST", "/rate-limit", {"anomaly": "http-date-retry-after"})
    add_fault(emulator_site, "GET /space:429:next=1:30")
    client, recorder = recorded_client(emulator_site, max_retry_after=60.0)
    with client:
        client.get("/space", {"limit": 1})
    assert client.stats.retries == 1
    assert len(recorder.waits) == 1
    # The date has one-second resolution and the emulator's clock may lag the test's.
    assert 20.0 <= recorder.waits[0] <= 31.0


def test_429_without_retry_after_backs_off(emulator_site: EmulatorSite) -> None:
    emulator_site.control("POST", "/rate-limit", {"anomaly": "no-retry-after"})
    add_fault(emulator_site, "GET /space:429:next=2")
    client, recorder = recorded_client(emulator_site, backoff_initial=1.0, backoff_max=10.0)
    with client:
        client.get("/space", {"limit": 1})
    assert client.stats.by_status[429] == 2
    assert len(recorder.waits) == 2
    # Jitter multiplies by 0.7..1.3; the second wait doubles the first's base.
    assert 0.7 <= recorder.waits[0] <= 1.3
    assert 1.4 <= recorder.waits[1] <= 2.6


def test_429_pauses_shared_limiter(emulator_site: EmulatorSite) -> None:
    add_fault(emulator_site, "GET /space:429:next=1:5")
    client, recorder = recorded_client(emulator_site, max_retry_after=60.0)
    with client:
        client.get("/space", {"limit": 1})
        # Another worker's next request waits for the pause too: the recorder did not
        # sleep, so the pause of about 5 seconds has not passed yet.
        assert client.limiter.reserve() > 1.0
    assert recorder.waits == [pytest.approx(5.0, abs=0.5)]


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
def test_server_errors_retried(emulator_site: EmulatorSite, status: str) -> None:
    add_fault(emulator_site, f"GET /space:{status}:next=2")
    client, recorder = recorded_client(emulator_site)
    with client:
        page = client.get("/space", {"limit": 1})
    assert page["results"]
    assert client.stats.retries == 2
    assert client.stats.by_status[int(status)] == 2
    assert len(recorder.waits) == 2


def test_retries_exhausted_raise_retriable(emulator_site: EmulatorSite) -> None:
    add_fault(emulator_site, "GET /space:502:1.0")
    client, _ = recorded_client(emulator_site, max_retries=3)
    with client, pytest.raises(RetriableError) as caught:
        client.get("/space", {"limit": 1})
    error = caught.value
    assert error.status == 502
    assert error.attempts == 4
    assert error.url is not None
    assert error.url.endswith("/wiki/rest/api/space?limit=1")
    assert error.excerpt is not None
    assert "502 Bad Gateway" in error.excerpt
    assert client.stats.api_calls == 4


@pytest.mark.parametrize("kind", ["truncate", "badjson", "drop"])
def test_broken_responses_retried(emulator_site: EmulatorSite, kind: str) -> None:
    add_fault(emulator_site, f"GET /space:{kind}:next=1")
    client, _ = recorded_client(emulator_site)
    with client:
        page = client.get("/space", {"limit": 2})
    assert len(page["results"]) == 2
    assert client.stats.retries == 1


def test_onyx_forbidden_space_skipped_without_retry(emulator_site: EmulatorSite) -> None:
    """Onyx retried a 403 seven times. A 403 on one space is skipped at once."""
    with ConfluenceClient(emulator_site.source("cloud")) as client:
        key = client.get("/space", {"limit": 1})["results"][0]["key"]
        add_fault(emulator_site, f"*:403space:1.0:{key}")
        with pytest.raises(SkippableError) as caught:
            client.get(f"/space/{key}")
    assert caught.value.status == 403
    assert client.stats.retries == 0


def test_missing_content_is_skippable(emulator_site: EmulatorSite) -> None:
    with (
        ConfluenceClient(emulator_site.source("cloud")) as client,
        pytest.raises(SkippableError) as caught,
    ):
        client.get("/content/99999999")
    assert caught.value.status == 404
    assert "not found" in caught.value.message


def test_rejected_cloud_credentials_fatal(emulator_site: EmulatorSite) -> None:
    source = emulator_site.source("cloud")
    assert source.auth.token is not None and source.auth.token.file is not None
    source.auth.token.file.write_text("wrong-token\n", encoding="utf-8")
    with ConfluenceClient(source) as client, pytest.raises(FatalError) as caught:
        client.current_user()
    assert caught.value.status == 403
    assert "rejected the credentials" in caught.value.message
    assert client.stats.retries == 0


def test_wrong_datacenter_password_fatal(emulator_site: EmulatorSite) -> None:
    source = emulator_site.source("datacenter", auth="basic")
    assert source.auth.token is not None and source.auth.token.file is not None
    source.auth.token.file.write_text("wrong-password\n", encoding="utf-8")
    with ConfluenceClient(source) as client, pytest.raises(FatalError) as caught:
        client.current_user()
    assert caught.value.status == 401
    assert "check the user name and password" in caught.value.message


def test_gone_v1_on_gateway_fatal_search_works(start_emulator: StartEmulator) -> None:
    site = start_emulator(v1_gone=True)
    with ConfluenceClient(site.source("cloud-oauth")) as client:
        with pytest.raises(FatalError) as caught:
            client.get("/space")
        hits = client.get("/search", {"cql": "type=page", "limit": 2})
    assert caught.value.status == 410
    assert "deployment 'cloud'" in caught.value.message
    assert len(hits["results"]) == 2


def test_invalid_cql_fatal(emulator_site: EmulatorSite) -> None:
    with (
        ConfluenceClient(emulator_site.source("cloud")) as client,
        pytest.raises(FatalError) as caught,
    ):
        client.get("/search", {"cql": "nosuchfield = 1"})
    assert caught.value.status == 400
    assert caught.value.excerpt is not None
    assert "nosuchfield" in caught.value.excerpt


def test_logs_never_contain_secrets(
    emulator_site: EmulatorSite, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_fault(emulator_site, "GET /space:503:next=1")
    credentials = emulator_site.server.credentials
    client, _ = recorded_client(emulator_site, "cloud-oauth")
    with client:
        client.get("/space", {"limit": 1})
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET http://127.0.0.1" in text
    assert "retrying request reason=HTTP 503" in text
    for secret in (credentials.api_token, credentials.oauth_client_secret, "Bearer "):
        assert secret not in text
    refresh_file = client.source.auth.refresh_token_file
    assert refresh_file is not None
    assert refresh_file.read_text(encoding="utf-8").strip() not in text


def test_pool_holds_twice_the_concurrency(emulator_site: EmulatorSite) -> None:
    source = emulator_site.source("cloud", concurrency=7)
    with ConfluenceClient(source) as client:
        adapter = client.session.get_adapter(source.api_root)
        assert adapter._pool_maxsize == 14  # type: ignore[attr-defined]


def test_download_attachment_follows_redirect(emulator_site: EmulatorSite) -> None:
    model = emulator_site.server.site
    attachment = next(
        item
        for item in model.contents()
        if item.type == ContentType.ATTACHMENT and item.status == ContentStatus.CURRENT
    )
    with ConfluenceClient(emulator_site.source("cloud")) as client:
        listing = client.get(f"/content/{attachment.container_id}/child/attachment", {"limit": 200})
        row = next(item for item in listing["results"] if item["id"] == attachment.id)
        data = client.download(row["_links"]["download"])
    assert len(data) == row["extensions"]["fileSize"]
    assert client.stats.by_status[302] == 1


class RecordingHandler(BaseHTTPRequestHandler):
    """Records each request's path and Authorization header on its server."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, RecordingServer)
        server.seen.append((self.path, self.headers.get("Authorization")))
        if server.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"file-bytes"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


class RecordingServer(ThreadingHTTPServer):
    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.seen: list[tuple[str, str | None]] = []
        self.redirect_to = redirect_to
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


def test_download_redirect_drops_authorization(emulator_site: EmulatorSite) -> None:
    """A redirect to another host (Cloud's media service) must not get the credentials."""
    media = RecordingServer()
    site_server = RecordingServer(redirect_to=f"{media.origin}/file/1?token=media-token")
    try:
        source = emulator_site.source("cloud", base_url=site_server.origin)
        with ConfluenceClient(source) as client:
            data = client.download("/download/attachments/1/report.pdf?version=1")
    finally:
        site_server.stop()
        media.stop()
    assert data == b"file-bytes"
    assert site_server.seen[0][0] == "/wiki/download/attachments/1/report.pdf?version=1"
    assert site_server.seen[0][1] is not None
    assert site_server.seen[0][1].startswith("Basic ")
    assert media.seen == [("/file/1?token=media-token", None)]


def test_download_larger_than_limit_skipped(emulator_site: EmulatorSite) -> None:
    media = RecordingServer()
    try:
        source = emulator_site.source("cloud", base_url=media.origin)
        with ConfluenceClient(source) as client, pytest.raises(SkippableError, match="larger"):
            client.download("/download/attachments/1/big.bin", max_bytes=4)
    finally:
        media.stop()


class BrokenGzipHandler(BaseHTTPRequestHandler):
    """Returns a body that claims gzip encoding but is not gzip data."""

    def do_GET(self) -> None:
        body = b"\x1f\x8b\x08\x00not-gzip-at-all"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def broken_gzip_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[SourceConfig]:
    """A source whose server answers every GET with a body that is not valid gzip."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenGzipHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GZIP_TEST_TOKEN", "token-value")
    table = {
        "deployment": "cloud",
        "base_url": f"http://127.0.0.1:{server.server_address[1]}",
        "auth": {"method": "basic", "username": "a@example.com", "token_env": "GZIP_TEST_TOKEN"},
        "max_retries": 2,
        "backoff_initial": 0.01,
        "backoff_max": 0.01,
    }
    yield parse_sources({"sources": {"gzip": table}})["gzip"]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_undecodable_gzip_body_retried(broken_gzip_source: SourceConfig) -> None:
    with ConfluenceClient(broken_gzip_source, sleep=WaitRecorder()) as client:
        with pytest.raises(RetriableError, match="undecodable compressed body"):
            client.get("/space")

        assert client.stats.api_calls == 3
        assert client.stats.retries == 2


def test_undecodable_gzip_download_retried(broken_gzip_source: SourceConfig) -> None:
    with ConfluenceClient(broken_gzip_source, sleep=WaitRecorder()) as client:
        with pytest.raises(RetriableError, match="download cut off"):
            client.download("/download/attachments/1/file.txt")

        assert client.stats.api_calls == 3


def test_client_limiter_keeps_burst_reserve(emulator_site: EmulatorSite) -> None:
    source = emulator_site.source("cloud", rate_limit=20.0, burst=20)
    with ConfluenceClient(source) as client:
        assert client.limiter.burst == 18
    small = emulator_site.source("cloud", rate_limit=20.0, burst=2)
    with ConfluenceClient(small) as client:
        assert client.limiter.burst == 1
    slow = emulator_site.source("cloud", rate_limit=0.5, burst=5)
    with ConfluenceClient(slow) as client:
        assert client.limiter.burst == 4
