"""Fault rules: parsing, and each fault kind as a real HTTP client observes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
import requests

from emulator.faults import FaultRule, FaultRuleError, parse_fault_rule
from emulator.gate import GateState
from emulator.limits import ANOMALY_NO_RETRY_AFTER
from tests.emulator.test_auth import (
    ACCOUNT_ID,
    API_TOKEN,
    DC_ACCOUNT_ID,
    EMAIL,
    PAT,
    FakeClock,
    GateServer,
    basic,
    bearer,
    make_state,
)

CLOUD_AUTH = basic(EMAIL, API_TOKEN)


@pytest.fixture
def state() -> GateState:
    return make_state(FakeClock())


@pytest.fixture
def server(state: GateState) -> Iterator[GateServer]:
    with GateServer(state) as running:
        yield running


def cloud_get(server: GateServer, api_path: str, **params: str) -> requests.Response:
    return server.get("cloud", api_path, params=params, headers=CLOUD_AUTH)


# Parsing


def test_parse_probability_rule() -> None:
    rule = parse_fault_rule("/content/search:502:0.1")
    assert rule.route == "/content/search"
    assert rule.kind == "502"
    assert rule.probability == 0.1
    assert rule.method is None
    assert rule.arg is None


def test_parse_rule_with_argument() -> None:
    rule = parse_fault_rule("/content:latency:1.0:50")
    assert rule.kind == "latency"
    assert rule.probability == 1.0
    assert rule.arg == "50"


def test_parse_method_and_counts() -> None:
    nth = parse_fault_rule("GET /space:drop:nth=3")
    assert nth.method == "GET"
    assert nth.route == "/space"
    assert nth.nth == 3
    following = parse_fault_rule("post *:503:next=2:30")
    assert following.method == "POST"
    assert following.next_count == 2
    assert following.arg == "30"


def test_parse_regex_route_with_colon() -> None:
    rule = parse_fault_rule(r"re:^/content/\d+(?:/child)?$:500:1")
    assert rule.route == r"re:^/content/\d+(?:/child)?$"
    assert rule.applies_to("GET", "/content/12/child")
    assert not rule.applies_to("GET", "/content/search")


def test_describe_round_trips() -> None:
    for text in ("/content/search:502:0.1", "GET /space:drop:nth=3", "*:latency:next=2:50-200"):
        assert parse_fault_rule(text).describe() == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/content:teapot:0.5", "no known kind found"),
        ("/content:502", "kind '502' is not followed by WHEN"),
        ("/content:502:often", "WHEN 'often' is not a probability from 0 to 1, nth=N or next=N"),
        ("/content:502:1.5", "probability 1.5 is outside 0 to 1"),
        ("/content:502:nth=0", "nth=0 must be at least 1"),
        ("/content:latency:1", "kind latency needs an argument"),
        ("/content:latency:1:soon", "argument 'soon' of kind latency is not milliseconds"),
        ("/content:drop:1:5", "kind drop takes no argument"),
        ("/content:truncate:1:1.5", "argument '1.5' of kind truncate"),
        ("content:500:1", "the route must start with '/', '*' or 're:'"),
        ("re:([:500:1", "the regular expression does not compile"),
    ],
)
def test_parse_errors_name_rule(text: str, reason: str) -> None:
    with pytest.raises(FaultRuleError) as caught:
        parse_fault_rule(text)
    message = str(caught.value)
    assert message.startswith(f"invalid fault rule {text!r}: {reason}")
    assert "KIND one of: 500, 502, 503, 504, 403, 429, latency, drop" in message
    assert "\n" not in message


def test_rule_rejects_nth_with_next() -> None:
    with pytest.raises(FaultRuleError, match="give nth or next, not both"):
        FaultRule(kind="500", route="/content", nth=2, next_count=1)


def test_glob_without_wildcard_matches_exactly() -> None:
    rule = FaultRule(kind="500", route="/content")
    assert rule.applies_to("GET", "/content")
    assert not rule.applies_to("GET", "/content/1")
    assert FaultRule(kind="500", route="/content/*").applies_to("GET", "/content/1/child/page")


# Status faults


def test_nth_request_gets_proxy_502(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:502:nth=2"))
    assert cloud_get(server, "/content/search", cql="type=page").status_code == 200
    failed = cloud_get(server, "/content/search", cql="type=page")
    assert failed.status_code == 502
    assert failed.headers["Content-Type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in failed.text
    assert cloud_get(server, "/content/search", cql="type=page").status_code == 200


def test_next_requests_get_503(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:503:next=2:30"))
    statuses = [cloud_get(server, "/space").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert state.faults[0].fired == 2


def test_503_carries_retry_after(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:503:1:30"))
    failed = cloud_get(server, "/space")
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "30"
    assert failed.json() == {"statusCode": 503, "message": "Service Unavailable"}


def test_500_json_body_per_flavour(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:500:1"))
    cloud = cloud_get(server, "/space")
    assert cloud.status_code == 500
    assert set(cloud.json()) == {"statusCode", "message"}
    datacenter = server.get("datacenter", "/space", headers=bearer(PAT))
    assert datacenter.status_code == 500
    assert set(datacenter.json()) == {"statusCode", "data", "message", "reason"}


def test_504_html_page(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:504:1"))
    failed = cloud_get(server, "/content")
    assert failed.status_code == 504
    assert "504 Gateway Time-out" in failed.text


def test_429_fault_uses_anomaly_shape(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:429:nth=1:7"))
    plain = cloud_get(server, "/content")
    assert plain.status_code == 429
    assert plain.headers["Retry-After"] == "7"
    state.set_rate_limit(anomaly=ANOMALY_NO_RETRY_AFTER)
    state.add_fault(parse_fault_rule("/content:429:nth=1"))
    bare = cloud_get(server, "/content")
    assert bare.status_code == 429
    assert "Retry-After" not in bare.headers


def test_method_filter(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("POST /content:500:1"))
    assert cloud_get(server, "/content").status_code == 200
    posted = requests.post(server.url("cloud", "/content"), json={}, headers=CLOUD_AUTH, timeout=10)
    assert posted.status_code == 500


def test_faults_skip_refused_requests(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:500:1"))
    unauthenticated = server.get("cloud", "/space")
    assert unauthenticated.status_code == 403


# Probability


def statuses_with_seed(seed: int) -> list[int]:
    state = make_state(FakeClock())
    state.reseed_faults(seed)
    state.add_fault(parse_fault_rule("/space:500:0.5"))
    with GateServer(state) as server:
        return [cloud_get(server, "/space").status_code for _ in range(12)]


def test_probability_is_seeded() -> None:
    first = statuses_with_seed(7)
    assert first == statuses_with_seed(7)
    assert 500 in first
    assert 200 in first


def test_probability_zero_and_one(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:500:0"))
    state.add_fault(parse_fault_rule("/space:500:1"))
    for _ in range(5):
        assert cloud_get(server, "/content").status_code == 200
        assert cloud_get(server, "/space").status_code == 500


def test_clear_faults(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:500:1"))
    assert cloud_get(server, "/space").status_code == 500
    state.clear_faults()
    assert cloud_get(server, "/space").status_code == 200


# Latency


def test_latency_then_normal_response(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:latency:1:20"))
    state.add_fault(parse_fault_rule("/content:latency:1:5-15"))
    response = cloud_get(server, "/content", limit="2")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2
    assert state.snapshot_counters()["faults"] == {"latency": 2}


def test_latency_composes_with_error(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:latency:1:5"))
    state.add_fault(parse_fault_rule("/space:502:1"))
    assert cloud_get(server, "/space").status_code == 502
    assert state.snapshot_counters()["faults"] == {"502": 1, "latency": 1}


# Broken responses


def test_truncated_body_requests(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:truncate:1"))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        cloud_get(server, "/content/search", cql="type=page", limit="200")


def test_truncated_body_aiohttp(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:truncate:1:0.3"))

    async def fetch() -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                server.url("cloud", "/content/search"),
                params={"cql": "type=page", "limit": "200"},
                headers=CLOUD_AUTH,
            ) as response,
        ):
            assert response.status == 200
            assert response.content_length is not None
            return await response.read()

    with pytest.raises(aiohttp.ClientPayloadError, match="Response payload is not completed"):
        asyncio.run(fetch())


def test_invalid_json_body(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:badjson:1"))
    response = cloud_get(server, "/content", limit="5")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()


def test_dropped_connection(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:drop:nth=1"))
    with pytest.raises(requests.exceptions.ConnectionError):
        cloud_get(server, "/space")
    assert cloud_get(server, "/space").status_code == 200


def test_dropped_connection_counted(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:drop:nth=1"))
    with pytest.raises(requests.exceptions.ConnectionError):
        cloud_get(server, "/space")
    counters = state.snapshot_counters()
    assert counters["requests"]["GET /space"] == {"dropped": 1}
    assert counters["faults"] == {"drop": 1}


# Conditional faults


def test_403_on_chosen_space(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:403space:1:SECRET,HR"))
    by_query = cloud_get(server, "/content", spaceKey="SECRET")
    assert by_query.status_code == 403
    assert by_query.json()["message"].endswith("Could not view space with key SECRET")
    assert cloud_get(server, "/space/HR").status_code == 403
    assert cloud_get(server, "/content", spaceKey="DOC").status_code == 200
    assert cloud_get(server, "/space/DOC").status_code == 200


@pytest.mark.parametrize(
    "cql",
    [
        "space = SECRET and type = page",
        'space in ("DOC", "secret")',
        "type=page AND space.key='SECRET'",
    ],
)
def test_403_on_space_in_cql(server: GateServer, state: GateState, cql: str) -> None:
    state.add_fault(parse_fault_rule("/content/search:403space:1:SECRET"))
    assert cloud_get(server, "/content/search", cql=cql).status_code == 403


def test_403_space_spares_other_cql(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:403space:1:SECRET"))
    assert cloud_get(server, "/content/search", cql="space = DOC").status_code == 200


def test_403_space_from_site_hooks(server: GateServer, state: GateState) -> None:
    state.space_restricted = lambda key: key == "LOCKED"
    state.content_space_key = lambda content_id: "LOCKED" if content_id == "99" else "DOC"
    state.add_fault(parse_fault_rule("*:403space:1"))
    assert cloud_get(server, "/content/99").status_code == 403
    assert cloud_get(server, "/content/98").status_code == 200
    datacenter = server.get("datacenter", "/space/LOCKED", headers=bearer(PAT))
    assert datacenter.status_code == 403
    assert datacenter.json()["reason"] == "Forbidden"


def test_504_on_large_body_page(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:504limit:1:50"))
    big = cloud_get(server, "/content/search", cql="type=page", expand="body.storage", limit="100")
    assert big.status_code == 504
    small = cloud_get(server, "/content/search", cql="type=page", expand="body.storage", limit="50")
    assert small.status_code == 200
    bodiless = cloud_get(server, "/content/search", cql="type=page", expand="version", limit="100")
    assert bodiless.status_code == 200


def test_504_on_large_response(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:504bytes:1:2000"))
    assert cloud_get(server, "/content", limit="5").status_code == 200
    large = cloud_get(server, "/content", limit="5", padding="1000")
    assert large.status_code == 504


def test_500_for_permissions_on_datacenter(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:500perm:1"))
    params = {"expand": "permissions,history", "limit": "100"}
    failed = server.get("datacenter", "/space", params=params, headers=bearer(PAT))
    assert failed.status_code == 500
    assert failed.json()["statusCode"] == 500
    assert server.get("cloud", "/space", params=params, headers=CLOUD_AUTH).status_code == 200
    state.admin_account_ids.add(DC_ACCOUNT_ID)
    assert server.get("datacenter", "/space", params=params, headers=bearer(PAT)).ok


def test_500_for_named_expansion(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:500expand:1:restrictions,permissions"))
    failed = cloud_get(
        server, "/content/search", cql="type=page", expand="content.restrictions.read"
    )
    assert failed.status_code == 500
    assert "content.restrictions.read" in failed.json()["message"]
    space = server.get(
        "datacenter", "/space", params={"expand": "permissions"}, headers=bearer(PAT)
    )
    assert space.status_code == 500
    assert space.json()["reason"] == "Internal Server Error"
    # The same requests without the optional expansion succeed.
    assert cloud_get(server, "/content/search", cql="type=page", expand="version").ok
    assert server.get("datacenter", "/space", headers=bearer(PAT)).ok


def test_500_expansion_default_permissions(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/space:500expand:1"))
    assert cloud_get(server, "/space", expand="permissions").status_code == 500
    assert cloud_get(server, "/space", expand="description.plain").ok


def test_500_expansion_rejects_dotted_names() -> None:
    with pytest.raises(FaultRuleError, match="expansion names"):
        parse_fault_rule("*:500expand:1:restrictions.read")


def test_404_for_ancestor_restrictions(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content/search:404ancestors:1:12345"))
    expand = "ancestors.restrictions.read.restrictions.user,body.storage"
    failed = cloud_get(server, "/content/search", cql="type=page", expand=expand)
    assert failed.status_code == 404
    body = failed.json()
    assert body["statusCode"] == 404
    assert body["data"]["errors"] == [
        {"message": {"translation": "No content with id <ContentId{id=12345}> can be found"}}
    ]
    plain = cloud_get(server, "/content/search", cql="type=page", expand="ancestors")
    assert plain.status_code == 200


def test_404_ancestors_on_search_prefix(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/search:404ancestors:1"))
    expand = "content.ancestors.restrictions.read.restrictions.group"
    failed = cloud_get(server, "/search", cql="type=page", expand=expand)
    assert failed.status_code == 404


def test_conditional_nth_counts_matches_only(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("/content:403space:nth=2:SECRET"))
    assert cloud_get(server, "/content", spaceKey="DOC").status_code == 200
    assert cloud_get(server, "/content", spaceKey="SECRET").status_code == 200
    assert cloud_get(server, "/content", spaceKey="SECRET").status_code == 403
    assert state.faults[0].matched == 2


def test_faults_only_on_api_routes(server: GateServer, state: GateState) -> None:
    state.add_fault(parse_fault_rule("*:500:1"))
    grant = state.issue_grant(
        client_id="emulator-client", account_id=ACCOUNT_ID, scopes=("offline_access",)
    )
    response = requests.post(
        f"{server.origin}/oauth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": "emulator-client",
            "client_secret": "emulator-secret",
            "refresh_token": grant["refresh_token"],
        },
        timeout=10,
    )
    assert response.status_code == 200
