"""Authentication of the three API roots and the OAuth token server, over real HTTP.

``GateServer`` serves a dummy API behind the gate's middlewares on 127.0.0.1, in the
layout the emulator's server uses: a routing middleware sets the request's flavour and
API path before the gate runs. The limit and fault tests import it too.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.typedefs import Handler

from emulator.auth import add_oauth_routes, is_deprecated_v1, scope_alternatives
from emulator.gate import (
    CloudCredential,
    DataCenterUser,
    GateState,
    gate_middlewares,
)
from emulator.keys import API_PATH_KEY, AUTH_KIND_KEY, FLAVOUR_KEY, USER_ID_KEY

CLOUD_ID = "1324a887-45db-1bf4-1e99-ef0ff456d421"
EMAIL = "api.user@example.com"
API_TOKEN = "ATATT3xFfGF0-token"
ACCOUNT_ID = "5b10ac8d82e05b22cc7d4ef5"
SCOPED_EMAIL = "service@example.com"
SCOPED_TOKEN = "ATATT3xFfGF0-scoped"
SCOPED_ACCOUNT_ID = "5b10ac8d82e05b22cc7d4ef6"
DC_USERNAME = "jdoe"
DC_PASSWORD = "s3cret"
DC_ACCOUNT_ID = "5b10ac8d82e05b22cc7d4ef7"
PAT = "NjQ4MzM5NzUxNTI3Oo5pat"
CLIENT_ID = "emulator-client"
CLIENT_SECRET = "emulator-secret"
READ_SCOPES = (
    "read:confluence-content.summary",
    "read:confluence-space.summary",
    "search:confluence",
    "read:confluence-user",
    "offline_access",
)

ROOTS = {
    "cloud": "/wiki/rest/api",
    "gateway": "/ex/confluence/{cloudId}/wiki/rest/api",
    "datacenter": "/confluence/rest/api",
}
API_ROUTES = (
    "/content",
    "/content/search",
    "/content/{id}",
    "/content/{id}/child/{type}",
    "/content/{id}/child/attachment/{attachmentId}/download",
    "/search",
    "/space",
    "/space/{spaceKey}",
    "/user/current",
)

FORBIDDEN_MESSAGE = (
    "com.atlassian.confluence.mvc.rest.common.exception.StacklessResponseStatusException: "
    '403 FORBIDDEN "Request rejected because caller cannot access Confluence"'
)


class FakeClock:
    """Wall clock and monotonic clock that move only when a test advances them."""

    def __init__(self) -> None:
        self.current = datetime(2026, 3, 26, 15, 10, 0, tzinfo=UTC)
        self.ticks = 1000.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
        self.ticks += seconds


@web.middleware
async def route_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set flavour and api_path the way the emulator's routing middleware does."""
    path = request.path
    for flavour, prefix in (
        ("gateway", "/ex/confluence/"),
        ("cloud", "/wiki/rest/api"),
        ("datacenter", "/confluence/rest/api"),
    ):
        if path.startswith(prefix):
            request[FLAVOUR_KEY] = flavour
            request[API_PATH_KEY] = path.split("/rest/api", 1)[1] or "/"
    return await handler(request)


async def dummy_api(request: web.Request) -> web.Response:
    """Return a list for list routes and one object otherwise, naming the caller."""
    info = request.match_info
    if "id" in info or "spaceKey" in info or request.path.endswith("/user/current"):
        body: Any = {
            "id": info.get("id") or info.get("spaceKey") or "current",
            "userId": request.get(USER_ID_KEY),
            "authKind": request.get(AUTH_KIND_KEY),
        }
        if "type" in info:
            body = {"results": [{"id": str(n)} for n in range(3)], "size": 3}
        return web.json_response(body)
    limit = int(request.query.get("limit", "25"))
    padding = int(request.query.get("padding", "0"))
    rows = [{"id": str(n), "type": "page", "title": "x" * padding} for n in range(limit)]
    return web.json_response({"results": rows, "start": 0, "limit": limit, "size": limit})


def build_app(state: GateState) -> web.Application:
    app = web.Application(middlewares=[route_api, *gate_middlewares(state)])
    for root in ROOTS.values():
        for route in API_ROUTES:
            app.router.add_route("*", root + route, dummy_api)
    add_oauth_routes(app, state)
    return app


class GateServer:
    """The dummy API behind the gate, served from a background event loop on 127.0.0.1."""

    def __init__(self, state: GateState) -> None:
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> GateServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(build_app(self.state), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, flavour: str, api_path: str, cloud_id: str = CLOUD_ID) -> str:
        root = ROOTS[flavour].replace("{cloudId}", cloud_id)
        return f"{self.origin}{root}{api_path}"

    def get(self, flavour: str, api_path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(flavour, api_path), timeout=10, **kwargs)


def basic(user: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_state(clock: FakeClock) -> GateState:
    state = GateState(
        cloud_id=CLOUD_ID,
        site_name="Example",
        clock=clock.now,
        monotonic=clock.monotonic,
        personal_access_tokens={PAT: DC_ACCOUNT_ID},
        datacenter_users=[DataCenterUser(DC_USERNAME, DC_PASSWORD, DC_ACCOUNT_ID)],
    )
    state.add_cloud_credential(CloudCredential(EMAIL, API_TOKEN, ACCOUNT_ID))
    state.add_cloud_credential(
        CloudCredential(
            SCOPED_EMAIL,
            SCOPED_TOKEN,
            SCOPED_ACCOUNT_ID,
            scoped=True,
            scopes=("read:confluence-content.summary",),
        )
    )
    state.add_oauth_client(CLIENT_ID, CLIENT_SECRET)
    return state


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


def access_token(state: GateState, scopes: tuple[str, ...] = READ_SCOPES) -> str:
    grant = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=scopes)
    return str(grant["access_token"])


def post_token(server: GateServer, **params: str) -> requests.Response:
    return requests.post(f"{server.origin}/oauth/token", json=params, timeout=10)


def refresh(server: GateServer, refresh_token: str) -> requests.Response:
    return post_token(
        server,
        grant_type="refresh_token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=refresh_token,
    )


# Route table


@pytest.mark.parametrize(
    ("method", "api_path", "classic", "deprecated"),
    [
        ("GET", "/search", "search:confluence", False),
        ("GET", "/content/search", "search:confluence", False),
        ("GET", "/content", "read:confluence-content.summary", True),
        ("HEAD", "/content/12", "read:confluence-content.summary", True),
        ("GET", "/content/12/child", "read:confluence-content.summary", True),
        ("GET", "/content/12/child/comment", "read:confluence-content.summary", True),
        ("GET", "/content/12/descendant/page", "read:confluence-content.summary", False),
        ("GET", "/content/12/label", "read:confluence-content.summary", True),
        ("GET", "/content/12/history", "read:confluence-content.summary", True),
        ("GET", "/content/12/version", "read:confluence-content.summary", True),
        ("GET", "/content/12/restriction/byOperation", "read:confluence-content.all", False),
        (
            "GET",
            "/content/12/child/attachment/34/download",
            "readonly:content.attachment:confluence",
            False,
        ),
        ("GET", "/space", "read:confluence-space.summary", True),
        ("GET", "/space/DOC", "read:confluence-space.summary", True),
        ("GET", "/space/DOC/content/page", "read:confluence-content.summary", True),
        ("GET", "/space/DOC/state/content", "read:confluence-content.summary", False),
        ("GET", "/user/current", "read:confluence-user", False),
        ("POST", "/content", "write:confluence-content", True),
        ("PUT", "/content/12", "write:confluence-content", False),
    ],
)
def test_route_scopes_and_deprecation(
    method: str, api_path: str, classic: str, deprecated: bool
) -> None:
    alternatives = scope_alternatives(method, api_path)
    assert alternatives[0] == {classic}
    assert is_deprecated_v1(method, api_path) is deprecated


def test_unknown_route_needs_no_scope() -> None:
    assert scope_alternatives("GET", "/audit") == []
    assert not is_deprecated_v1("GET", "/audit")


# Cloud site root


def test_cloud_basic_token_accepted(server: GateServer) -> None:
    response = server.get("cloud", "/content/123", headers=basic(EMAIL, API_TOKEN))
    assert response.status_code == 200
    assert response.json()["userId"] == ACCOUNT_ID
    assert response.json()["authKind"] == "basic"


def test_cloud_email_is_case_insensitive(server: GateServer) -> None:
    response = server.get("cloud", "/content/123", headers=basic(EMAIL.upper(), API_TOKEN))
    assert response.status_code == 200


def test_cloud_wrong_token_gets_403_json(server: GateServer) -> None:
    response = server.get("cloud", "/content/123", headers=basic(EMAIL, "wrong"))
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"statusCode": 403, "message": FORBIDDEN_MESSAGE}


def test_cloud_missing_credentials_gets_403(server: GateServer) -> None:
    response = server.get("cloud", "/space")
    assert response.status_code == 403
    assert response.json()["message"] == FORBIDDEN_MESSAGE


def test_cloud_anonymous_access_when_enabled(server: GateServer, state: GateState) -> None:
    state.anonymous_access = True
    response = server.get("cloud", "/content/7")
    assert response.status_code == 200
    assert response.json()["userId"] is None
    assert response.json()["authKind"] == "anonymous"


@pytest.mark.parametrize(
    "header",
    ["Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"],
)
def test_cloud_unparsable_header_gets_tomcat_401(server: GateServer, header: str) -> None:
    response = server.get("cloud", "/content/123", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert "HTTP Status 401 \u2013 Unauthorized" in response.text
    assert response.headers["WWW-Authenticate"] == f'OAuth realm="{server.origin}/wiki"'


def test_cloud_rejects_oauth_token(server: GateServer, state: GateState) -> None:
    token = access_token(state)
    response = server.get("cloud", "/content/123", headers=bearer(token))
    assert response.status_code == 401
    assert "HTTP Status 401" in response.text


def test_cloud_rejects_scoped_api_token(server: GateServer) -> None:
    response = server.get("cloud", "/content/123", headers=basic(SCOPED_EMAIL, SCOPED_TOKEN))
    assert response.status_code == 401
    assert "HTTP Status 401" in response.text


def test_cloud_deprecated_route_has_headers(server: GateServer) -> None:
    response = server.get("cloud", "/content/123", headers=basic(EMAIL, API_TOKEN))
    assert response.headers["Deprecation"] == "Wed, 1 Mar 2023 00:00:00 GMT"
    assert "Deprecated API" in response.headers["Warning"]
    search = server.get(
        "cloud", "/search", params={"cql": "type=page"}, headers=basic(EMAIL, API_TOKEN)
    )
    assert "Deprecation" not in search.headers


# OAuth gateway root


def test_gateway_oauth_token_accepted(server: GateServer, state: GateState) -> None:
    response = server.get("gateway", "/content/123", headers=bearer(access_token(state)))
    assert response.status_code == 200
    assert response.json()["userId"] == ACCOUNT_ID
    assert response.json()["authKind"] == "oauth"


def test_gateway_missing_credentials(server: GateServer) -> None:
    response = server.get("gateway", "/content/123")
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}


def test_gateway_unknown_token(server: GateServer) -> None:
    response = server.get("gateway", "/content/123", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}


def test_gateway_token_expires(server: GateServer, state: GateState, clock: FakeClock) -> None:
    token = access_token(state)
    clock.advance(3599)
    assert server.get("gateway", "/space", headers=bearer(token)).status_code == 200
    clock.advance(1)
    response = server.get("gateway", "/space", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}


def test_gateway_short_token_lifetime(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    state.tokens.access_token_lifetime = 5
    grant = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    assert grant["expires_in"] == 5
    clock.advance(5)
    response = server.get("gateway", "/space", headers=bearer(grant["access_token"]))
    assert response.status_code == 401


def test_token_lifetimes_configurable(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    state.set_token_lifetimes(access_token=60, refresh_reuse_leeway=5)
    first = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    assert first["expires_in"] == 60
    refresh(server, first["refresh_token"])
    clock.advance(6)
    assert refresh(server, first["refresh_token"]).status_code == 403
    with pytest.raises(ValueError, match="token lifetime refresh_idle=0 is invalid"):
        state.set_token_lifetimes(refresh_idle=0)


def test_gateway_scope_mismatch(server: GateServer, state: GateState) -> None:
    token = access_token(state, scopes=("read:confluence-content.summary",))
    response = server.get("gateway", "/search", params={"cql": "type=page"}, headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized; scope does not match"}
    assert server.get("gateway", "/content", headers=bearer(token)).status_code == 200


def test_gateway_body_needs_content_all(server: GateServer, state: GateState) -> None:
    token = access_token(state)
    params = {"expand": "body.storage,version"}
    response = server.get("gateway", "/content/123", params=params, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["message"] == "Unauthorized; scope does not match"
    wider = access_token(state, scopes=(*READ_SCOPES, "read:confluence-content.all"))
    assert server.get("gateway", "/content/123", params=params, headers=bearer(wider)).ok


def test_gateway_granular_scope_accepted(server: GateServer, state: GateState) -> None:
    token = access_token(state, scopes=("read:space-details:confluence",))
    assert server.get("gateway", "/space/DOC", headers=bearer(token)).status_code == 200


def test_gateway_foreign_cloud_id(server: GateServer, state: GateState) -> None:
    url = server.url("gateway", "/content/123", cloud_id="00000000-0000-0000-0000-000000000000")
    response = requests.get(url, headers=bearer(access_token(state)), timeout=10)
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}


def test_gateway_scoped_api_token(server: GateServer) -> None:
    headers = basic(SCOPED_EMAIL, SCOPED_TOKEN)
    assert server.get("gateway", "/content/1", headers=headers).status_code == 200
    refused = server.get("gateway", "/space", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["message"] == "Unauthorized; scope does not match"


def test_gateway_unscoped_api_token(server: GateServer) -> None:
    response = server.get("gateway", "/space", headers=basic(EMAIL, API_TOKEN))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "api_path",
    ["/content", "/content/123", "/space", "/space/DOC", "/content/123/child/page"],
)
def test_v1_gone_on_gateway(server: GateServer, state: GateState, api_path: str) -> None:
    state.v1_gone = True
    response = server.get("gateway", api_path, headers=bearer(access_token(state)))
    assert response.status_code == 410
    body = response.json()
    assert body["statusCode"] == 410
    assert body["message"].endswith("GoneException: This deprecated endpoint has been removed.")
    assert body["data"]["authorized"] is True
    assert body["data"]["valid"] is True


@pytest.mark.parametrize(
    "api_path",
    ["/search", "/content/search", "/user/current", "/content/1/child/attachment/2/download"],
)
def test_v1_gone_spares_routes(server: GateServer, state: GateState, api_path: str) -> None:
    state.v1_gone = True
    token = access_token(state, scopes=(*READ_SCOPES, "readonly:content.attachment:confluence"))
    response = server.get("gateway", api_path, params={"cql": "type=page"}, headers=bearer(token))
    assert response.status_code == 200


def test_v1_gone_only_on_gateway(server: GateServer, state: GateState) -> None:
    state.v1_gone = True
    cloud = server.get("cloud", "/content/123", headers=basic(EMAIL, API_TOKEN))
    datacenter = server.get("datacenter", "/content/123", headers=bearer(PAT))
    assert cloud.status_code == 200
    assert datacenter.status_code == 200


def test_v1_gone_spares_api_tokens(server: GateServer, state: GateState) -> None:
    state.v1_gone = True
    unscoped = server.get("gateway", "/space/DOC", headers=basic(EMAIL, API_TOKEN))
    assert unscoped.status_code == 200
    scoped = server.get("gateway", "/content/123", headers=basic(SCOPED_EMAIL, SCOPED_TOKEN))
    assert scoped.status_code == 200
    oauth = server.get("gateway", "/space/DOC", headers=bearer(access_token(state)))
    assert oauth.status_code == 410


def test_v1_reads_work_when_switch_off(server: GateServer, state: GateState) -> None:
    response = server.get("gateway", "/content/123", headers=bearer(access_token(state)))
    assert response.status_code == 200


def test_v1_gone_also_refuses_create(server: GateServer, state: GateState) -> None:
    state.v1_gone = True
    token = access_token(state, scopes=("write:confluence-content",))
    response = requests.post(
        server.url("gateway", "/content"), json={}, headers=bearer(token), timeout=10
    )
    assert response.status_code == 410


# Data Center root


def test_datacenter_pat_accepted(server: GateServer) -> None:
    response = server.get("datacenter", "/content/5", headers=bearer(PAT))
    assert response.status_code == 200
    assert response.json()["userId"] == DC_ACCOUNT_ID
    assert response.json()["authKind"] == "pat"


def test_datacenter_basic_accepted(server: GateServer) -> None:
    response = server.get("datacenter", "/content/5", headers=basic(DC_USERNAME, DC_PASSWORD))
    assert response.status_code == 200
    assert response.json()["authKind"] == "basic"


def test_datacenter_wrong_password(server: GateServer) -> None:
    response = server.get("datacenter", "/content/5", headers=basic(DC_USERNAME, "nope"))
    assert response.status_code == 401
    assert response.headers["X-Seraph-LoginReason"] == "AUTHENTICATED_FAILED"
    body = response.json()
    assert body["statusCode"] == 401
    assert body["reason"] == "Unauthorized"
    assert body["data"]["authorized"] is False


def test_datacenter_wrong_pat_rejected(server: GateServer) -> None:
    response = server.get("datacenter", "/content/5", headers=bearer("wrong"))
    assert response.status_code == 401
    assert response.json()["message"] == "Client must be authenticated to access this resource."


def test_datacenter_wrong_pat_is_anonymous(server: GateServer, state: GateState) -> None:
    state.anonymous_access = True
    response = server.get("datacenter", "/content/5", headers=bearer("wrong"))
    assert response.status_code == 200
    assert response.json()["authKind"] == "anonymous"


def test_datacenter_has_no_deprecation_headers(server: GateServer) -> None:
    response = server.get("datacenter", "/content/5", headers=bearer(PAT))
    assert "Deprecation" not in response.headers


# OAuth token server


def test_authorization_code_grant(server: GateServer, state: GateState) -> None:
    code = state.issue_authorization_code(
        client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES
    )
    response = requests.post(
        f"{server.origin}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": code,
        },
        timeout=10,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "scope"}
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert body["scope"].split() == list(READ_SCOPES)
    api = server.get("gateway", "/space", headers=bearer(body["access_token"]))
    assert api.status_code == 200


def test_authorization_code_is_one_shot(server: GateServer, state: GateState) -> None:
    code = state.issue_authorization_code(
        client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES
    )
    params = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": code,
    }
    assert post_token(server, **params).status_code == 200
    again = post_token(server, **params)
    assert again.status_code == 403
    assert again.json()["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_access(state: GateState) -> None:
    grant = state.issue_grant(
        client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=("search:confluence",)
    )
    assert "refresh_token" not in grant


def test_refresh_rotates_token(server: GateServer, state: GateState) -> None:
    first = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    response = refresh(server, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 3600
    assert server.get("gateway", "/space", headers=bearer(second["access_token"])).ok


def test_refresh_reuse_inside_leeway(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    first = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    second = refresh(server, first["refresh_token"]).json()
    clock.advance(599)
    reused = refresh(server, first["refresh_token"])
    assert reused.status_code == 200
    assert server.get("gateway", "/space", headers=bearer(second["access_token"])).ok


def test_refresh_reuse_revokes_family(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    first = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    second = refresh(server, first["refresh_token"]).json()
    clock.advance(601)
    reused = refresh(server, first["refresh_token"])
    assert reused.status_code == 403
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "Unknown or invalid refresh token.",
    }
    revoked_access = server.get("gateway", "/space", headers=bearer(second["access_token"]))
    assert revoked_access.status_code == 401
    latest = refresh(server, second["refresh_token"])
    assert latest.status_code == 403
    assert latest.json()["error"] == "invalid_grant"


def test_revocation_spares_other_grants(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    revoked = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    other = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    refresh(server, revoked["refresh_token"])
    clock.advance(601)
    refresh(server, revoked["refresh_token"])
    assert server.get("gateway", "/space", headers=bearer(other["access_token"])).ok


def test_unknown_refresh_token(server: GateServer) -> None:
    response = refresh(server, "made-up")
    assert response.status_code == 403
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Unknown or invalid refresh token.",
    }


def test_refresh_idle_expiry(server: GateServer, state: GateState, clock: FakeClock) -> None:
    grant = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    clock.advance(90 * 86400 + 1)
    response = refresh(server, grant["refresh_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_grant"


def test_refresh_use_resets_idle_clock(
    server: GateServer, state: GateState, clock: FakeClock
) -> None:
    token = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)[
        "refresh_token"
    ]
    for _ in range(4):
        clock.advance(80 * 86400)
        response = refresh(server, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    clock.advance(46 * 86400)
    expired = refresh(server, token)
    assert expired.status_code == 403
    assert expired.json()["error_description"] == "Token has been expired or revoked."


def test_wrong_client_secret(server: GateServer, state: GateState) -> None:
    grant = state.issue_grant(client_id=CLIENT_ID, account_id=ACCOUNT_ID, scopes=READ_SCOPES)
    response = post_token(
        server,
        grant_type="refresh_token",
        client_id=CLIENT_ID,
        client_secret="wrong",
        refresh_token=grant["refresh_token"],
    )
    assert response.status_code == 401
    assert response.json() == {"error": "access_denied", "error_description": "Unauthorized"}


def test_unsupported_grant_type(server: GateServer) -> None:
    response = post_token(
        server, grant_type="password", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_missing_refresh_token_parameter(server: GateServer) -> None:
    response = post_token(
        server, grant_type="refresh_token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Missing required parameter: refresh_token",
    }


def test_token_request_invalid_json(server: GateServer) -> None:
    response = requests.post(
        f"{server.origin}/oauth/token",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request body is not valid JSON",
    }


def test_issue_grant_unknown_client(state: GateState) -> None:
    with pytest.raises(ValueError, match="unknown OAuth client id 'other'"):
        state.issue_grant(client_id="other", account_id=ACCOUNT_ID, scopes=READ_SCOPES)


def test_accessible_resources(server: GateServer, state: GateState) -> None:
    state.site_url = "https://example.atlassian.net"
    token = access_token(state)
    response = requests.get(
        f"{server.origin}/oauth/token/accessible-resources", headers=bearer(token), timeout=10
    )
    assert response.status_code == 200
    resources = response.json()
    assert len(resources) == 1
    assert resources[0]["id"] == CLOUD_ID
    assert resources[0]["name"] == "Example"
    assert resources[0]["url"] == "https://example.atlassian.net"
    assert resources[0]["scopes"] == list(READ_SCOPES)
    assert "avatarUrl" in resources[0]


def test_accessible_resources_needs_token(server: GateServer) -> None:
    response = requests.get(f"{server.origin}/oauth/token/accessible-resources", timeout=10)
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}


# Counters


def test_counters_by_route_and_status(server: GateServer, state: GateState) -> None:
    server.get("cloud", "/content/1", headers=basic(EMAIL, API_TOKEN))
    server.get("gateway", "/content/2", headers=bearer(access_token(state)))
    server.get("cloud", "/content/3")
    counters = state.snapshot_counters()
    assert counters["requests"]["GET /content/{id}"] == {"200": 2, "403": 1}
    state.reset_counters()
    assert state.snapshot_counters()["requests"] == {}
