"""Mutable state of the emulator's gate: credentials, OAuth tokens, limits, faults, counters.

One ``GateState`` serves one emulator process. The server builds it from its options and
stores it on the application under ``emulator.keys.GATE_KEY``. The control API changes
limits and faults through its methods while the server runs. Like the site model, it is
used from one event loop and is not thread-safe.

Two clocks drive it. ``clock`` is the wall clock of the site (the server passes the
model's ``site.now``), so token lifetimes, the points-quota hour and ``X-RateLimit-Reset``
follow the time a test sets. ``monotonic`` drives the burst token buckets.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from emulator.faults import FaultRule
from emulator.keys import GATE_DROPPED_KEY
from emulator.limits import PointsQuotaSettings, RateLimitSettings, TokenBucket

# OAuth 2.0 (3LO) lifetimes documented by Atlassian. An access token lasts an hour. A
# refresh token expires after 90 days without use, or 365 days after consent. A rotated
# refresh token may be reused for 10 minutes, and a later reuse revokes the whole grant.
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600.0
DEFAULT_REFRESH_REUSE_LEEWAY = 600.0
DEFAULT_REFRESH_IDLE_LIFETIME = 90 * 86400.0
DEFAULT_REFRESH_ABSOLUTE_LIFETIME = 365 * 86400.0
DEFAULT_AUTHORIZATION_CODE_LIFETIME = 600.0

UNKNOWN_REFRESH_TOKEN = "Unknown or invalid refresh token."
EXPIRED_REFRESH_TOKEN = "Token has been expired or revoked."


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CloudCredential:
    """A Cloud API token, sent as Basic ``email:token``.

    An unscoped ("classic") token works on the site domain and on the gateway. A scoped
    token works only through the gateway, where its ``scopes`` are checked like OAuth ones.
    """

    email: str
    api_token: str
    account_id: str
    scoped: bool = False
    scopes: tuple[str, ...] = ()


@dataclass
class DataCenterUser:
    """A Data Center account that may sign in with Basic ``username:password``."""

    username: str
    password: str
    account_id: str


@dataclass
class OAuthGrant:
    """One user consent: the family of every access and refresh token issued from it."""

    grant_id: str
    client_id: str
    account_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked: bool = False


@dataclass
class AccessToken:
    value: str
    grant_id: str
    expires_at: datetime


@dataclass
class RefreshToken:
    value: str
    grant_id: str
    issued_at: datetime
    rotated_at: datetime | None = None  # when a refresh with this token first succeeded


@dataclass
class AuthorizationCode:
    value: str
    client_id: str
    account_id: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    expires_at: datetime


class OAuthError(Exception):
    """A refusal of the token endpoint, in the body shape ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class TokenStore:
    """Authorization codes, grants, access tokens and rotating refresh tokens."""

    access_token_lifetime: float = DEFAULT_ACCESS_TOKEN_LIFETIME
    refresh_reuse_leeway: float = DEFAULT_REFRESH_REUSE_LEEWAY
    refresh_idle_lifetime: float = DEFAULT_REFRESH_IDLE_LIFETIME
    refresh_absolute_lifetime: float = DEFAULT_REFRESH_ABSOLUTE_LIFETIME
    authorization_code_lifetime: float = DEFAULT_AUTHORIZATION_CODE_LIFETIME
    grants: dict[str, OAuthGrant] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)

    def issue_authorization_code(
        self,
        *,
        client_id: str,
        account_id: str,
        scopes: Iterable[str],
        now: datetime,
        redirect_uri: str | None = None,
    ) -> str:
        """Store a one-shot authorization code, as the consent screen would hand out."""
        value = secrets.token_urlsafe(24)
        self.codes[value] = AuthorizationCode(
            value=value,
            client_id=client_id,
            account_id=account_id,
            scopes=tuple(scopes),
            redirect_uri=redirect_uri,
            expires_at=now + timedelta(seconds=self.authorization_code_lifetime),
        )
        return value

    def exchange_code(
        self, *, client_id: str, code: str, redirect_uri: str | None, now: datetime
    ) -> dict[str, Any]:
        """Turn an authorization code into a new grant and return the token response."""
        stored = self.codes.pop(code, None)
        if stored is None or stored.client_id != client_id or stored.expires_at <= now:
            raise OAuthError(403, "invalid_grant", "Invalid authorization code")
        if stored.redirect_uri is not None and redirect_uri != stored.redirect_uri:
            raise OAuthError(403, "invalid_grant", "Invalid redirect_uri")
        return self.issue_grant(
            client_id=client_id, account_id=stored.account_id, scopes=stored.scopes, now=now
        )

    def issue_grant(
        self, *, client_id: str, account_id: str, scopes: Iterable[str], now: datetime
    ) -> dict[str, Any]:
        """Create a grant without the authorization step and return its first tokens."""
        grant = OAuthGrant(
            grant_id=uuid.uuid4().hex,
            client_id=client_id,
            account_id=account_id,
            scopes=tuple(scopes),
            created_at=now,
        )
        self.grants[grant.grant_id] = grant
        with_refresh = "offline_access" in grant.scopes
        return self._token_response(grant, now, with_refresh=with_refresh)

    def refresh(self, *, client_id: str, refresh_token: str, now: datetime) -> dict[str, Any]:
        """Rotate a refresh token: return new tokens and disable the one sent.

        A rotated token used again within the reuse leeway still succeeds. Used later, it
        revokes its grant, so every access and refresh token of that family stops working.
        """
        stored = self.refresh_tokens.get(refresh_token)
        if stored is None:
            raise OAuthError(403, "invalid_grant", UNKNOWN_REFRESH_TOKEN)
        grant = self.grants[stored.grant_id]
        if grant.client_id != client_id:
            raise OAuthError(403, "invalid_grant", UNKNOWN_REFRESH_TOKEN)
        if grant.revoked:
            raise OAuthError(403, "invalid_grant", EXPIRED_REFRESH_TOKEN)
        absolute_age = (now - grant.created_at).total_seconds()
        idle_age = (now - stored.issued_at).total_seconds()
        if absolute_age > self.refresh_absolute_lifetime or idle_age > self.refresh_idle_lifetime:
            raise OAuthError(403, "invalid_grant", EXPIRED_REFRESH_TOKEN)
        if stored.rotated_at is not None:
            since_rotation = (now - stored.rotated_at).total_seconds()
            if since_rotation > self.refresh_reuse_leeway:
                self.revoke_grant(grant.grant_id)
                raise OAuthError(403, "invalid_grant", UNKNOWN_REFRESH_TOKEN)
        else:
            stored.rotated_at = now
        return self._token_response(grant, now, with_refresh=True)

    def authenticate(self, access_token: str, now: datetime) -> OAuthGrant | None:
        """Return the grant of a live access token, or None if it is unknown, expired or revoked."""
        stored = self.access_tokens.get(access_token)
        if stored is None or stored.expires_at <= now:
            return None
        grant = self.grants[stored.grant_id]
        return None if grant.revoked else grant

    def revoke_grant(self, grant_id: str) -> None:
        self.grants[grant_id].revoked = True

    def _token_response(
        self, grant: OAuthGrant, now: datetime, *, with_refresh: bool
    ) -> dict[str, Any]:
        access = AccessToken(
            value=secrets.token_urlsafe(32),
            grant_id=grant.grant_id,
            expires_at=now + timedelta(seconds=self.access_token_lifetime),
        )
        self.access_tokens[access.value] = access
        response: dict[str, Any] = {
            "access_token": access.value,
            "expires_in": round(self.access_token_lifetime),
            "token_type": "Bearer",
            "scope": " ".join(grant.scopes),
        }
        if with_refresh:
            refresh = RefreshToken(
                value=secrets.token_urlsafe(32), grant_id=grant.grant_id, issued_at=now
            )
            self.refresh_tokens[refresh.value] = refresh
            response["refresh_token"] = refresh.value
        return response


@dataclass
class GateCounters:
    """Request counts by route template and status, 429s sent, points charged, faults fired."""

    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    throttled: int = 0
    points_used: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    # Attachment bytes served by the media route, and media requests that carried an
    # Authorization header (a client forwarding the site's credentials to another host).
    media_downloads: int = 0
    media_authorization: int = 0

    def count_request(self, route: str, status: str) -> None:
        by_status = self.requests.setdefault(route, {})
        by_status[status] = by_status.get(status, 0) + 1

    def count_fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


@dataclass
class GateState:
    """Everything the gate's middlewares and OAuth routes read and change at run time."""

    cloud_credentials: list[CloudCredential] = field(default_factory=list)
    datacenter_users: list[DataCenterUser] = field(default_factory=list)
    # Data Center personal access token -> account id
    personal_access_tokens: dict[str, str] = field(default_factory=dict)
    # OAuth client id -> client secret
    oauth_clients: dict[str, str] = field(default_factory=dict)
    cloud_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    site_name: str = "emulator"
    # URL listed by accessible-resources; None means the origin of the request
    site_url: str | None = None
    admin_account_ids: set[str] = field(default_factory=set)
    # Requests without credentials run as the anonymous user instead of being rejected.
    anonymous_access: bool = False
    # Deprecated v1 routes return 410 Gone to OAuth callers on the gateway root.
    v1_gone: bool = False
    tokens: TokenStore = field(default_factory=TokenStore)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    points: PointsQuotaSettings = field(default_factory=PointsQuotaSettings)
    faults: list[FaultRule] = field(default_factory=list)
    fault_seed: int = 0
    counters: GateCounters = field(default_factory=GateCounters)
    clock: Callable[[], datetime] = _utc_now
    monotonic: Callable[[], float] = time.monotonic
    # Hooks the server sets so space-based faults can see the site model.
    space_restricted: Callable[[str], bool] | None = None
    content_space_key: Callable[[str], str | None] | None = None
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    # points used in the current UTC hour, by OAuth client id
    points_used: dict[str, int] = field(default_factory=dict)
    points_hour: datetime | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.fault_seed)

    # Credentials

    def add_cloud_credential(self, credential: CloudCredential) -> None:
        self.cloud_credentials.append(credential)

    def add_oauth_client(self, client_id: str, client_secret: str) -> None:
        self.oauth_clients[client_id] = client_secret

    def issue_authorization_code(
        self,
        *,
        client_id: str,
        account_id: str,
        scopes: Iterable[str],
        redirect_uri: str | None = None,
    ) -> str:
        """Issue a one-shot authorization code that ``POST /oauth/token`` exchanges."""
        self._require_client(client_id)
        return self.tokens.issue_authorization_code(
            client_id=client_id,
            account_id=account_id,
            scopes=scopes,
            now=self.clock(),
            redirect_uri=redirect_uri,
        )

    def issue_grant(
        self, *, client_id: str, account_id: str, scopes: Iterable[str]
    ) -> dict[str, Any]:
        """Create a consent directly and return its token response."""
        self._require_client(client_id)
        return self.tokens.issue_grant(
            client_id=client_id, account_id=account_id, scopes=scopes, now=self.clock()
        )

    def set_token_lifetimes(
        self,
        *,
        access_token: float | None = None,
        refresh_reuse_leeway: float | None = None,
        refresh_idle: float | None = None,
        refresh_absolute: float | None = None,
    ) -> None:
        """Change OAuth token lifetimes in seconds; None keeps a value.

        New lifetimes apply to tokens issued afterwards and, for refresh tokens, to every
        later refresh, because refresh checks measure ages at refresh time.
        """
        values = {
            "access_token": access_token,
            "refresh_reuse_leeway": refresh_reuse_leeway,
            "refresh_idle": refresh_idle,
            "refresh_absolute": refresh_absolute,
        }
        for name, value in values.items():
            if value is not None and value <= 0:
                raise ValueError(
                    f"token lifetime {name}={value} is invalid; give a positive number of seconds"
                )
        store = self.tokens
        if access_token is not None:
            store.access_token_lifetime = access_token
        if refresh_reuse_leeway is not None:
            store.refresh_reuse_leeway = refresh_reuse_leeway
        if refresh_idle is not None:
            store.refresh_idle_lifetime = refresh_idle
        if refresh_absolute is not None:
            store.refresh_absolute_lifetime = refresh_absolute

    def _require_client(self, client_id: str) -> None:
        if client_id not in self.oauth_clients:
            known = ", ".join(sorted(self.oauth_clients)) or "none"
            raise ValueError(
                f"unknown OAuth client id {client_id!r}; register it with add_oauth_client "
                f"first (registered: {known})"
            )

    # Limits

    def set_rate_limit(
        self,
        *,
        enabled: bool | None = None,
        rate_per_second: float | None = None,
        burst: int | None = None,
        per_user: bool | None = None,
        anomaly: str | None = None,
    ) -> RateLimitSettings:
        """Change the burst limiter; arguments left as None keep their value.

        Changing the rate, the burst or per-user bucketing refills every bucket.
        """
        current = self.rate_limit
        updated = RateLimitSettings(
            enabled=current.enabled if enabled is None else enabled,
            rate_per_second=current.rate_per_second if rate_per_second is None else rate_per_second,
            burst=current.burst if burst is None else burst,
            per_user=current.per_user if per_user is None else per_user,
            anomaly=current.anomaly if anomaly is None else anomaly,
            reason=current.reason,
        )
        updated.validate()
        bucket_shape = (updated.rate_per_second, updated.burst, updated.per_user)
        if bucket_shape != (current.rate_per_second, current.burst, current.per_user):
            self.buckets.clear()
        self.rate_limit = updated
        return updated

    def set_points_quota(
        self,
        *,
        enabled: bool | None = None,
        quota_per_hour: int | None = None,
        enforced: bool | None = None,
        policy: str | None = None,
    ) -> PointsQuotaSettings:
        """Change the points-per-hour quota of OAuth callers; None keeps a value."""
        current = self.points
        updated = PointsQuotaSettings(
            enabled=current.enabled if enabled is None else enabled,
            quota_per_hour=current.quota_per_hour if quota_per_hour is None else quota_per_hour,
            enforced=current.enforced if enforced is None else enforced,
            policy=current.policy if policy is None else policy,
        )
        updated.validate()
        self.points = updated
        return updated

    # Faults

    def add_fault(self, rule: FaultRule) -> None:
        self.faults.append(rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reseed_faults(self, seed: int) -> None:
        self.fault_seed = seed
        self.rng = random.Random(seed)

    # Counters

    def snapshot_counters(self) -> dict[str, Any]:
        """Return a JSON-ready copy of the counters."""
        counters = self.counters
        return {
            "requests": {route: dict(by) for route, by in sorted(counters.requests.items())},
            "throttled": counters.throttled,
            "points_used": counters.points_used,
            "faults": dict(sorted(counters.faults.items())),
            "media_downloads": counters.media_downloads,
            "media_authorization": counters.media_authorization,
        }

    def reset_counters(self) -> None:
        self.counters = GateCounters()


# Middlewares


def route_template(request: web.Request) -> str:
    """Return the route of a request as a template relative to the API root.

    ``/wiki/rest/api/content/{id}`` and ``/ex/confluence/{cloudId}/wiki/rest/api/content/{id}``
    both give ``/content/{id}``, so the three roots share one counter per route.
    """
    resource = request.match_info.route.resource
    if resource is None:
        return "(no route)"
    canonical = resource.canonical
    _root, marker, rest = canonical.partition("/rest/api")
    if not marker:
        return canonical
    return rest or "/"


def request_counter_middleware(state: GateState) -> Middleware:
    """Build the middleware that counts every request by route template and status.

    Place it before the other gate middlewares so that it counts their refusals too. A
    connection closed by a fault counts under the status ``dropped``.
    """

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = f"{request.method} {route_template(request)}"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            state.counters.count_request(route, str(exc.status))
            raise
        status = "dropped" if request.get(GATE_DROPPED_KEY) else str(response.status)
        state.counters.count_request(route, status)
        return response

    return count_requests


def gate_middlewares(state: GateState) -> list[Middleware]:
    """Return the gate's middlewares in the order they must run after the routing one.

    Counting comes first, so it counts every refusal. Authentication precedes the limits
    because they are per user and per OAuth client. Faults run last, next to the handler.
    """
    # Imported here because auth imports this module.
    from emulator.auth import auth_middleware
    from emulator.faults import fault_middleware
    from emulator.limits import rate_limit_middleware

    return [
        request_counter_middleware(state),
        auth_middleware(state),
        rate_limit_middleware(state),
        fault_middleware(state),
    ]
