"""Burst token bucket, points-per-hour quota and rate-limit anomalies, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest
import requests

from emulator.gate import GateState
from emulator.limits import (
    ANOMALY_HTTP_DATE,
    ANOMALY_HUGE_RETRY_AFTER,
    ANOMALY_NO_RETRY_AFTER,
    ANOMALY_SERVICE_UNAVAILABLE,
    TokenBucket,
    format_reset,
)
from tests.emulator.test_auth import (
    ACCOUNT_ID,
    API_TOKEN,
    CLIENT_ID,
    EMAIL,
    PAT,
    READ_SCOPES,
    FakeClock,
    GateServer,
    access_token,
    basic,
    bearer,
    make_state,
)

RESET_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$")
CLOUD_AUTH = basic(EMAIL, API_TOKEN)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> GateState:
    return make_state(clock)


@pytest.fixture
def server(state: GateState) -> Iterator[GateServer]:
    with GateServer(state) as running:
        yield running


def get_space(
    server: GateServer, flavour: str = "cloud", headers: dict[str, str] = CLOUD_AUTH
) -> requests.Response:
    return server.get(flavour, "/space", headers=headers)


# Pure parts


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(capacity=2, rate=0.5, tokens=2, updated=0.0)
    assert bucket.take(0.0) == (True, 0.0)
    assert bucket.take(0.0) == (True, 0.0)
    allowed, wait = bucket.take(0.0)
    assert not allowed
    assert wait == pytest.approx(2.0)
    assert bucket.take(2.0) == (True, 0.0)


def test_format_reset_rounds_up_to_minute() -> None:
    assert format_reset(datetime(2026, 3, 26, 15, 10, 0, tzinfo=UTC)) == "2026-03-26T15:10Z"
    assert format_reset(datetime(2026, 3, 26, 15, 10, 1, tzinfo=UTC)) == "2026-03-26T15:11Z"


def test_set_rate_limit_rejects_bad_values(state: GateState) -> None:
    with pytest.raises(ValueError, match="rate_per_second=0"):
        state.set_rate_limit(enabled=True, rate_per_second=0)
    with pytest.raises(ValueError, match="burst=0"):
        state.set_rate_limit(burst=0)
    with pytest.raises(ValueError, match="anomaly 'sometimes' is unknown; use one of: none"):
        state.set_rate_limit(anomaly="sometimes")


def test_set_points_quota_rejects_bad_values(state: GateState) -> None:
    with pytest.raises(ValueError, match="quota_per_hour=0"):
        state.set_points_quota(quota_per_hour=0)
    with pytest.raises(ValueError, match="policy name"):
        state.set_points_quota(policy='bad"name')


# Burst limiter


def test_burst_429_with_headers(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=2)
    assert get_space(server).status_code == 200
    assert get_space(server).status_code == 200
    refused = get_space(server)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert RESET_FORMAT.match(refused.headers["X-RateLimit-Reset"])
    assert refused.headers["RateLimit-Reason"] == "confluence-quota-tenant-based"
    assert refused.json()["statusCode"] == 429


def test_burst_recovers_after_wait(server: GateServer, state: GateState, clock: FakeClock) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=0.5, burst=1)
    assert get_space(server).status_code == 200
    refused = get_space(server)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"
    clock.advance(1)
    assert get_space(server).status_code == 429
    clock.advance(1)
    assert get_space(server).status_code == 200


def test_burst_success_headers(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=10)
    first = get_space(server)
    assert first.headers["X-RateLimit-Limit"] == "10"
    assert first.headers["X-RateLimit-Remaining"] == "9"
    assert "X-RateLimit-NearLimit" not in first.headers
    for _ in range(7):
        get_space(server)
    near = get_space(server)
    assert near.headers["X-RateLimit-Remaining"] == "1"
    assert near.headers["X-RateLimit-NearLimit"] == "true"


def test_burst_buckets_per_user(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=1, per_user=True)
    assert get_space(server).status_code == 200
    assert get_space(server).status_code == 429
    assert get_space(server, "datacenter", headers=bearer(PAT)).status_code == 200


def test_burst_bucket_shared_globally(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=1, per_user=False)
    assert get_space(server).status_code == 200
    assert get_space(server, "datacenter", headers=bearer(PAT)).status_code == 429


def test_burst_datacenter_headers(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=0.5, burst=1)
    ok = get_space(server, "datacenter", headers=bearer(PAT))
    assert ok.headers["X-RateLimit-Interval-Seconds"] == "2"
    assert ok.headers["X-RateLimit-FillRate"] == "1"
    assert ok.headers["Retry-After"] == "0"
    refused = get_space(server, "datacenter", headers=bearer(PAT))
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Interval-Seconds"] == "2"
    assert refused.headers["X-RateLimit-FillRate"] == "1"
    assert refused.headers["Retry-After"] == "2"


def test_anomaly_change_keeps_buckets(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=1)
    get_space(server)
    state.set_rate_limit(anomaly=ANOMALY_HTTP_DATE)
    assert get_space(server).status_code == 429
    state.set_rate_limit(burst=2)
    assert get_space(server).status_code == 200


def test_burst_counts_throttled(server: GateServer, state: GateState) -> None:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=1)
    for _ in range(3):
        get_space(server)
    assert state.snapshot_counters()["throttled"] == 2


def test_burst_disabled_by_default(server: GateServer) -> None:
    for _ in range(5):
        response = get_space(server)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


# Anomalies


def refuse_with(server: GateServer, state: GateState, anomaly: str) -> requests.Response:
    state.set_rate_limit(enabled=True, rate_per_second=1, burst=1, anomaly=anomaly)
    get_space(server)
    return get_space(server)


def test_anomaly_huge_retry_after(server: GateServer, state: GateState) -> None:
    refused = refuse_with(server, state, ANOMALY_HUGE_RETRY_AFTER)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "9223372036854775807"
    assert refused.headers["X-RateLimit-Limit"] == "0"
    assert refused.headers["X-RateLimit-FillRate"] == "0"
    assert refused.headers["X-RateLimit-Interval-Seconds"] == "1"


def test_anomaly_no_retry_after(server: GateServer, state: GateState) -> None:
    refused = refuse_with(server, state, ANOMALY_NO_RETRY_AFTER)
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.headers["X-Failure-Category"] == "FAILURE CLIENT RATE LIMITED"
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_anomaly_503_with_retry_after(server: GateServer, state: GateState) -> None:
    refused = refuse_with(server, state, ANOMALY_SERVICE_UNAVAILABLE)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"


def test_anomaly_http_date_retry_after(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    refused = refuse_with(server, state, ANOMALY_HTTP_DATE)
    assert refused.status_code == 429
    retry_at = parsedate_to_datetime(refused.headers["Retry-After"])
    assert (retry_at - clock.now()).total_seconds() == 1
    assert refused.headers["Retry-After"].endswith(" GMT")


# Points quota


def oauth_get(server: GateServer, token: str, api_path: str, limit: int) -> requests.Response:
    return server.get("gateway", api_path, params={"limit": str(limit)}, headers=bearer(token))


def test_points_headers_and_cost(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=100)
    token = access_token(state)
    response = oauth_get(server, token, "/content", limit=10)
    assert response.status_code == 200
    assert response.headers["RateLimit-Policy"] == '"global-app-quota";q=100;w=3600'
    # The fake clock starts at 15:10:00, 3000 seconds before the top of the hour.
    assert response.headers["RateLimit"] == '"global-app-quota";t=3000'
    assert state.points_used[CLIENT_ID] == 11
    assert state.snapshot_counters()["points_used"] == 11


def test_points_remaining_shown_near_limit(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=100)
    token = access_token(state)
    oauth_get(server, token, "/content", limit=69)
    response = oauth_get(server, token, "/content", limit=14)
    assert state.points_used[CLIENT_ID] == 85
    assert response.headers["RateLimit"] == '"global-app-quota";r=15;t=3000'
    assert response.headers["X-RateLimit-NearLimit"] == "true"


def test_points_exhausted_until_hour(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=30)
    token = access_token(state)
    for _ in range(3):
        assert oauth_get(server, token, "/content", limit=10).status_code == 200
    refused = oauth_get(server, token, "/content", limit=1)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3000"
    assert refused.headers["X-RateLimit-Reset"] == "2026-03-26T16:00Z"
    assert refused.headers["RateLimit-Reason"] == "confluence-quota-global-based"
    assert refused.headers["X-RateLimit-Limit"] == "30"
    clock.advance(2999)
    assert oauth_get(server, token, "/content", limit=1).status_code == 429
    clock.advance(1)
    assert oauth_get(server, token, "/content", limit=1).status_code == 200


def test_points_spare_basic_callers(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=5)
    for _ in range(3):
        response = server.get("gateway", "/content", params={"limit": "10"}, headers=CLOUD_AUTH)
        assert response.status_code == 200
        assert "RateLimit-Policy" not in response.headers
    assert state.points_used == {}


def test_points_identity_objects_cost_two(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=100)
    response = server.get("gateway", "/user/current", headers=bearer(access_token(state)))
    assert response.status_code == 200
    assert state.points_used[CLIENT_ID] == 3


def test_points_single_object_costs_two(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=100)
    server.get("gateway", "/content/123456", headers=bearer(access_token(state)))
    assert state.points_used[CLIENT_ID] == 2


def test_points_write_costs_one(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=100)
    token = access_token(state, scopes=("write:confluence-content",))
    response = requests.post(
        server.url("gateway", "/content"), json={}, headers=bearer(token), timeout=10
    )
    assert response.status_code == 200
    assert state.points_used[CLIENT_ID] == 1


def test_points_beta_mode_never_refuses(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=10, enforced=False)
    token = access_token(state)
    oauth_get(server, token, "/content", limit=20)
    response = oauth_get(server, token, "/content", limit=1)
    assert response.status_code == 200
    assert response.headers["Beta-RateLimit-Policy"] == '"global-app-quota";q=10;w=3600'
    assert response.headers["Beta-RateLimit"] == '"global-app-quota";r=0;t=3000'
    assert response.headers["Beta-Retry-After"] == "3000"
    assert "RateLimit-Policy" not in response.headers


def test_points_tenant_policy_reason(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=1, policy="tenant-app-quota")
    token = access_token(state)
    oauth_get(server, token, "/content", limit=1)
    refused = oauth_get(server, token, "/content", limit=1)
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Reason"] == "confluence-quota-tenant-based"
    assert refused.headers["RateLimit-Policy"] == '"tenant-app-quota";q=1;w=3600'


def test_points_per_client(server: GateServer, state: GateState) -> None:
    state.set_points_quota(enabled=True, quota_per_hour=5)
    state.add_oauth_client("second-app", "second-secret")
    first = access_token(state)
    second = state.issue_grant(client_id="second-app", account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    oauth_get(server, first, "/content", limit=10)
    assert oauth_get(server, first, "/content", limit=1).status_code == 429
    assert oauth_get(server, second["access_token"], "/content", limit=1).status_code == 200
