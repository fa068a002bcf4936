"""Tests of Basic, bearer PAT and OAuth 2.0 authentication, with the emulator's token server."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest

from producer.auth import BasicAuth, BearerAuth, OAuth2Auth
from producer.client import ConfluenceClient
from producer.config import SourceConfig
from producer.errors import FatalError
from producer.paging import cursor_pages
from producer.secrets import RefreshTokenFile, Secret, load_credentials
from tests.producer.conftest import EmulatorSite


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def oauth_for(
    site: EmulatorSite, clock: FakeClock | None = None
) -> tuple[OAuth2Auth, SourceConfig, RefreshTokenFile]:
    source = site.source("cloud-oauth")
    credentials = load_credentials(source.auth)
    assert credentials.client_id is not None and credentials.client_secret is not None
    assert source.auth.refresh_token_file is not None
    store = RefreshTokenFile(source.auth.refresh_token_file)
    auth = OAuth2Auth(
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        token_url=source.auth.token_url,
        store=store,
        refresh_margin=300.0,
        clock=clock or FakeClock(),
    )
    return auth, source, store


def test_basic_header() -> None:
    header = BasicAuth("a@example.com", Secret("tok")).authorization()
    assert header == "Basic " + base64.b64encode(b"a@example.com:tok").decode()


def test_bearer_header() -> None:
    assert BearerAuth(Secret("pat-value")).authorization() == "Bearer pat-value"


def test_secret_hidden_from_repr() -> None:
    secret = Secret("do-not-print")
    assert "do-not-print" not in repr(secret)
    assert "do-not-print" not in str(secret)
    assert "do-not-print" not in repr(BasicAuth("u", secret).__dict__)


def test_refresh_rotates_and_persists_token(emulator_site: EmulatorSite) -> None:
    auth, _, store = oauth_for(emulator_site)
    before = store.load().reveal()
    header = auth.authorization()
    after = store.load().reveal()
    assert header.startswith("Bearer ")
    assert after != before
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    leftovers = [path.name for path in store.path.parent.iterdir() if path.name.endswith(".tmp")]
    assert leftovers == []


def test_access_token_reused_until_margin(emulator_site: EmulatorSite) -> None:
    clock = FakeClock()
    auth, _, _ = oauth_for(emulator_site, clock)
    first = auth.authorization()
    clock.now += 3600 - 301
    assert auth.authorization() == first
    assert auth.refresh_count == 1
    clock.now += 2
    assert auth.authorization() != first
    assert auth.refresh_count == 2


def test_short_lifetime_refreshed_at_half_life(emulator_site: EmulatorSite) -> None:
    emulator_site.server.gate.set_token_lifetimes(access_token=120)
    clock = FakeClock()
    auth, _, _ = oauth_for(emulator_site, clock)
    first = auth.authorization()
    clock.now += 59
    assert auth.authorization() == first
    assert auth.refresh_count == 1
    clock.now += 2
    assert auth.authorization() != first
    assert auth.refresh_count == 2


def test_threads_share_one_refresh(emulator_site: EmulatorSite) -> None:
    auth, _, _ = oauth_for(emulator_site)
    headers: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        headers.append(auth.authorization())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert auth.refresh_count == 1
    assert len(set(headers)) == 1


def test_invalid_grant_is_fatal_with_fix(emulator_site: EmulatorSite) -> None:
    auth, _, store = oauth_for(emulator_site)
    store.save(Secret("not-a-refresh-token"))
    with pytest.raises(FatalError) as caught:
        auth.authorization()
    message = caught.value.message
    assert "invalid_grant" in message
    assert "the grant must be renewed" in message
    assert "refresh_token_file" in message
    assert caught.value.status == 403


def test_reused_refresh_token_rejected(emulator_site: EmulatorSite) -> None:
    clock = FakeClock()
    auth, _, store = oauth_for(emulator_site, clock)
    old = store.load()
    auth.authorization()
    # Past the server's 10-minute reuse leeway, the disabled token revokes the grant.
    emulator_site.control("POST", "/clock", {"advance_seconds": 3600})
    clock.now += 3600
    store.save(old)
    with pytest.raises(FatalError, match="invalid_grant"):
        auth.authorization()


def test_wrong_client_secret_is_fatal(emulator_site: EmulatorSite) -> None:
    auth, source, _ = oauth_for(emulator_site)
    assert source.auth.client_secret is not None and source.auth.client_secret.file is not None
    wrong = OAuth2Auth(
        client_id=Secret(emulator_site.server.credentials.oauth_client_id),
        client_secret=Secret("wrong-secret"),
        token_url=auth.token_url,
        store=auth._store,
    )
    with pytest.raises(FatalError, match="rejected the client"):
        wrong.authorization()


class FailingStore:
    """A token store whose save fails, as on a full or read-only disk."""

    def __init__(self, inner: RefreshTokenFile) -> None:
        self.inner = inner
        self.saves = 0

    def load(self) -> Secret:
        return self.inner.load()

    def save(self, token: Secret) -> None:
        self.saves += 1
        raise FatalError("cannot write the refresh token file (disk full)")


def test_new_token_unused_when_not_persisted(emulator_site: EmulatorSite) -> None:
    auth, _, store = oauth_for(emulator_site)
    failing = FailingStore(store)
    auth._store = failing
    with pytest.raises(FatalError, match="disk full"):
        auth.authorization()
    assert failing.saves == 1
    # The access token of the failed refresh was never handed out.
    with pytest.raises(FatalError, match="disk full"):
        auth.authorization()
    assert failing.saves == 2


def test_refresh_file_save_failure_is_fatal(tmp_path: Path) -> None:
    store = RefreshTokenFile(tmp_path / "missing-folder" / "token")
    with pytest.raises(FatalError, match="renew the grant"):
        store.save(Secret("new-token"))


def test_expired_token_mid_listing_refreshes_once(emulator_site: EmulatorSite) -> None:
    """A 401 after the access token expired mid-walk: refresh, retry the same cursor."""
    source = emulator_site.source("cloud-oauth", page_size=10)
    assert source.auth.refresh_token_file is not None
    with ConfluenceClient(source) as client:
        pages = cursor_pages(client, "/search", {"cql": "type=page"}, limit=10)
        ids = [row["content"]["id"] for row in next(pages).results]
        token_after_first = source.auth.refresh_token_file.read_text(encoding="utf-8")
        # The server's clock passes the access token's hour; the client's does not.
        emulator_site.control("POST", "/clock", {"advance_seconds": 3700})
        for page in pages:
            ids.extend(row["content"]["id"] for row in page.results)
        token_after_walk = source.auth.refresh_token_file.read_text(encoding="utf-8")
    assert isinstance(client.authenticator, OAuth2Auth)
    assert client.authenticator.refresh_count == 2
    assert token_after_walk != token_after_first
    assert client.stats.by_status[401] == 1
    assert len(ids) == len(set(ids))
    with ConfluenceClient(source) as fresh:
        pages = cursor_pages(fresh, "/search", {"cql": "type=page"}, limit=50)
        expected = {row["content"]["id"] for page in pages for row in page.results}
    assert set(ids) == expected
