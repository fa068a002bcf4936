"""Rate limits of the emulator: a burst token bucket and the points-per-hour quota.

The burst limiter applies to every caller (one bucket per user, or one for the site). The
points quota applies to OAuth 2.0 (3LO) callers only, as on Cloud since 2026, where
API-token traffic stays under the burst limits. A GET costs 1 point plus 1 per core object
returned (pages, spaces, attachments) plus 2 per identity object (users, groups); a write
costs 1. The quota resets at the top of each UTC hour, and once it is used up every request
gets 429 until then.

Refusals follow Atlassian's documented headers: ``Retry-After`` in seconds,
``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (ISO-8601 to the minute),
``X-RateLimit-NearLimit`` under 20% remaining and ``RateLimit-Reason``. Data Center
responses add ``X-RateLimit-Interval-Seconds`` and ``X-RateLimit-FillRate``. The anomaly
switch reproduces refusals seen in the field: a ``Retry-After`` of Long.MAX_VALUE, a 429
without ``Retry-After``, a 503 with ``Retry-After`` and ``Retry-After`` as an HTTP-date.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from emulator.keys import (
    API_PATH_KEY,
    AUTH_KIND_KEY,
    CLIENT_ID_KEY,
    FLAVOUR_KEY,
    OBJECTS_RETURNED_KEY,
    USER_ID_KEY,
)

if TYPE_CHECKING:
    from emulator.gate import GateState

logger = logging.getLogger(__name__)

ANOMALY_NONE = "none"
ANOMALY_HUGE_RETRY_AFTER = "huge-retry-after"
ANOMALY_NO_RETRY_AFTER = "no-retry-after"
ANOMALY_SERVICE_UNAVAILABLE = "503-retry-after"
ANOMALY_HTTP_DATE = "http-date-retry-after"
ANOMALIES = (
    ANOMALY_NONE,
    ANOMALY_HUGE_RETRY_AFTER,
    ANOMALY_NO_RETRY_AFTER,
    ANOMALY_SERVICE_UNAVAILABLE,
    ANOMALY_HTTP_DATE,
)

# Long.MAX_VALUE, reported in Retry-After on Cloud attachment listings.
HUGE_RETRY_AFTER = "9223372036854775807"
NEAR_LIMIT_FRACTION = 0.2
# Beta-RateLimit carries the remaining points only past about 80% usage.
REMAINING_SHOWN_FRACTION = 0.8
DEFAULT_POINTS_PER_HOUR = 65_000


@dataclass
class RateLimitSettings:
    """Burst limiter: a token bucket refilled at ``rate_per_second`` up to ``burst``."""

    enabled: bool = False
    rate_per_second: float = 10.0
    burst: int = 100
    per_user: bool = True
    anomaly: str = ANOMALY_NONE
    reason: str = "confluence-quota-tenant-based"

    def validate(self) -> None:
        if self.rate_per_second <= 0:
            raise ValueError(
                f"rate limit rate_per_second={self.rate_per_second} is invalid; "
                "give a positive number of requests per second"
            )
        if self.burst < 1:
            raise ValueError(f"rate limit burst={self.burst} is invalid; give at least 1 request")
        if self.anomaly not in ANOMALIES:
            raise ValueError(
                f"rate limit anomaly {self.anomaly!r} is unknown; "
                f"use one of: {', '.join(ANOMALIES)}"
            )


@dataclass
class PointsQuotaSettings:
    """Points-per-hour quota of OAuth callers, counted per OAuth client id.

    With ``enforced`` off the headers carry the ``Beta-`` prefix and an exhausted quota
    only adds ``Beta-Retry-After``, as during Atlassian's announcement period.
    """

    enabled: bool = False
    quota_per_hour: int = DEFAULT_POINTS_PER_HOUR
    enforced: bool = True
    policy: str = "global-app-quota"

    def validate(self) -> None:
        if self.quota_per_hour < 1:
            raise ValueError(
                f"points quota_per_hour={self.quota_per_hour} is invalid; give at least 1"
            )
        if not self.policy or '"' in self.policy:
            raise ValueError(
                f"points policy name {self.policy!r} is invalid; give a name without quotes, "
                "such as global-app-quota or tenant-app-quota"
            )


@dataclass
class TokenBucket:
    capacity: float
    rate: float
    tokens: float
    updated: float

    def take(self, now: float) -> tuple[bool, float]:
        """Take one token; return whether it was there and the seconds until one is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0
        return False, (1.0 - self.tokens) / self.rate

    def seconds_to_full(self) -> float:
        return (self.capacity - self.tokens) / self.rate


def format_reset(when: datetime) -> str:
    """Format a reset time as ``yyyy-MM-ddTHH:mmZ``, rounded up to the minute."""
    rounded = when.replace(second=0, microsecond=0)
    if rounded < when:
        rounded += timedelta(minutes=1)
    return rounded.strftime("%Y-%m-%dT%H:%MZ")


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def build_refusal(
    state: GateState,
    *,
    wait_seconds: float,
    limit: int,
    reason: str,
    extra_headers: dict[str, str] | None = None,
) -> web.Response:
    """Build the 429 (or anomalous) response for a caller that must wait ``wait_seconds``.

    The shape follows ``state.rate_limit.anomaly``. Every refusal built here is counted
    in ``state.counters.throttled``.
    """
    now = state.clock()
    retry_after = max(1, math.ceil(wait_seconds))
    # The refusal's own values win over extra headers such as Data Center's Retry-After 0.
    headers = dict(extra_headers or {})
    headers.update(
        {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": format_reset(now + timedelta(seconds=retry_after)),
            "RateLimit-Reason": reason,
            "Retry-After": str(retry_after),
        }
    )
    status = 429
    # NOTE: Atlassian documents the 429 headers but not a body, so this JSON body follows
    # the Cloud error shape {statusCode, message}.
    message = f"Rate limit exceeded. Retry after {retry_after} seconds."
    anomaly = state.rate_limit.anomaly
    if anomaly == ANOMALY_HUGE_RETRY_AFTER:
        headers["Retry-After"] = HUGE_RETRY_AFTER
        headers["X-RateLimit-Limit"] = "0"
        headers["X-RateLimit-FillRate"] = "0"
        headers["X-RateLimit-Interval-Seconds"] = "1"
    elif anomaly == ANOMALY_NO_RETRY_AFTER:
        del headers["Retry-After"]
        headers["X-Failure-Category"] = "FAILURE CLIENT RATE LIMITED"
        headers["X-RateLimit-Limit"] = "360000"
        message = "Rate limit exceeded."
    elif anomaly == ANOMALY_SERVICE_UNAVAILABLE:
        status = 503
        message = "Service Unavailable"
    elif anomaly == ANOMALY_HTTP_DATE:
        headers["Retry-After"] = format_datetime(now + timedelta(seconds=retry_after), usegmt=True)
    state.counters.throttled += 1
    return _json_response(status, {"statusCode": status, "message": message}, headers)


def _bucket_key(state: GateState, request: web.Request) -> str:
    if not state.rate_limit.per_user:
        return "*"
    user_id = request.get(USER_ID_KEY)
    return str(user_id) if user_id is not None else "anonymous"


def _burst_headers(state: GateState, request: web.Request, bucket: TokenBucket) -> dict[str, str]:
    settings = state.rate_limit
    remaining = math.floor(bucket.tokens)
    headers = {
        "X-RateLimit-Limit": str(settings.burst),
        "X-RateLimit-Remaining": str(remaining),
    }
    if request.get(FLAVOUR_KEY) == "datacenter":
        # Data Center describes its bucket as FillRate tokens every Interval-Seconds, and
        # sends Retry-After 0 while tokens remain.
        if settings.rate_per_second >= 1:
            interval, fill = 1, round(settings.rate_per_second)
        else:
            interval, fill = round(1 / settings.rate_per_second), 1
        headers["X-RateLimit-Interval-Seconds"] = str(interval)
        headers["X-RateLimit-FillRate"] = str(fill)
        headers["Retry-After"] = "0"
    else:
        reset = state.clock() + timedelta(seconds=bucket.seconds_to_full())
        headers["X-RateLimit-Reset"] = format_reset(reset)
        if remaining < settings.burst * NEAR_LIMIT_FRACTION:
            headers["X-RateLimit-NearLimit"] = "true"
    return headers


def _top_of_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _roll_points_hour(state: GateState) -> datetime:
    """Clear the points when a new UTC hour started; return the next reset time."""
    hour = _top_of_hour(state.clock())
    if state.points_hour != hour:
        state.points_hour = hour
        state.points_used.clear()
    return hour + timedelta(hours=1)


def _points_headers(
    state: GateState, used: int, reset: datetime, *, exhausted: bool
) -> dict[str, str]:
    settings = state.points
    prefix = "" if settings.enforced else "Beta-"
    quota = settings.quota_per_hour
    remaining = max(0, quota - used)
    seconds_to_reset = max(0, math.ceil((reset - state.clock()).total_seconds()))
    quota_state = f'"{settings.policy}"'
    if used >= quota * REMAINING_SHOWN_FRACTION:
        quota_state += f";r={remaining}"
    quota_state += f";t={seconds_to_reset}"
    headers = {
        f"{prefix}RateLimit-Policy": f'"{settings.policy}";q={quota};w=3600',
        f"{prefix}RateLimit": quota_state,
    }
    if remaining < quota * NEAR_LIMIT_FRACTION:
        headers["X-RateLimit-NearLimit"] = "true"
    if exhausted and not settings.enforced:
        headers["Beta-Retry-After"] = str(seconds_to_reset)
    return headers


def _count_objects(value: Any) -> int:
    """Count the objects a JSON response returns: list rows, child maps, or one object."""
    if isinstance(value, list):
        return len(value)
    if not isinstance(value, dict):
        return 0
    results = value.get("results")
    if isinstance(results, list):
        return len(results)
    child_lists = [
        child["results"]
        for child in value.values()
        if isinstance(child, dict) and isinstance(child.get("results"), list)
    ]
    if child_lists:
        return sum(len(rows) for rows in child_lists)
    return 1


def request_cost(request: web.Request, response: web.StreamResponse | None) -> int:
    """Return the points a request costs once its response is known.

    The server may set ``request[OBJECTS_RETURNED_KEY]`` to skip parsing the body.
    """
    # NOTE: only top-level rows are counted as objects. Objects expanded inside a row,
    # such as version.by users or labels, are not charged, although Atlassian may count
    # them.
    if request.method != "GET":
        return 1
    if response is None or response.status >= 400:
        return 1
    objects = request.get(OBJECTS_RETURNED_KEY)
    if objects is None:
        body = response.body if isinstance(response, web.Response) else None
        if not isinstance(body, bytes | bytearray) or not body:
            return 1
        try:
            objects = _count_objects(orjson.loads(body))
        except orjson.JSONDecodeError:
            return 1
    api_path = str(request.get(API_PATH_KEY) or "")
    per_object = 2 if api_path.startswith(("/user", "/group")) else 1
    return 1 + per_object * int(objects)


def _points_reason(state: GateState) -> str:
    if state.points.policy.startswith("tenant"):
        return "confluence-quota-tenant-based"
    return "confluence-quota-global-based"


def rate_limit_middleware(state: GateState) -> Middleware:
    """Build the middleware that applies the burst limiter and the points quota.

    It runs after authentication, because buckets are per user and points are per OAuth
    client. Requests outside the API roots (no ``request[API_PATH_KEY]``) pass untouched.
    """

    @web.middleware
    async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.get(API_PATH_KEY) is None:
            return await handler(request)
        extra_headers: dict[str, str] = {}

        points_client: str | None = None
        if state.points.enabled and request.get(AUTH_KIND_KEY) == "oauth":
            points_client = str(request.get(CLIENT_ID_KEY) or "")
            reset = _roll_points_hour(state)
            used = state.points_used.get(points_client, 0)
            exhausted = used >= state.points.quota_per_hour
            points_headers = _points_headers(state, used, reset, exhausted=exhausted)
            if exhausted and state.points.enforced:
                logger.info(
                    "points quota exhausted client_id=%s used=%d quota=%d",
                    points_client,
                    used,
                    state.points.quota_per_hour,
                )
                wait = (reset - state.clock()).total_seconds()
                return build_refusal(
                    state,
                    wait_seconds=wait,
                    limit=state.points.quota_per_hour,
                    reason=_points_reason(state),
                    extra_headers=points_headers,
                )

        if state.rate_limit.enabled:
            key = _bucket_key(state, request)
            bucket = state.buckets.get(key)
            now = state.monotonic()
            if bucket is None:
                settings = state.rate_limit
                bucket = TokenBucket(
                    capacity=float(settings.burst),
                    rate=settings.rate_per_second,
                    tokens=float(settings.burst),
                    updated=now,
                )
                state.buckets[key] = bucket
            allowed, wait = bucket.take(now)
            if not allowed:
                logger.debug("burst limit reached key=%s wait=%.3fs", key, wait)
                return build_refusal(
                    state,
                    wait_seconds=wait,
                    limit=state.rate_limit.burst,
                    reason=state.rate_limit.reason,
                    extra_headers=_burst_headers(state, request, bucket)
                    if request.get(FLAVOUR_KEY) == "datacenter"
                    else None,
                )
            extra_headers.update(_burst_headers(state, request, bucket))

        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _finish_points(state, request, exc, points_client, exc.headers)
            exc.headers.update(extra_headers)
            raise
        _finish_points(state, request, response, points_client, extra_headers)
        if not response.prepared:
            response.headers.update(extra_headers)
        return response

    return limit_requests


def _finish_points(
    state: GateState,
    request: web.Request,
    response: web.StreamResponse | None,
    client_id: str | None,
    headers: Any,
) -> None:
    """Charge the request's points and put the quota headers into ``headers``."""
    if client_id is None:
        return
    cost = request_cost(request, response)
    reset = _roll_points_hour(state)
    used = state.points_used.get(client_id, 0) + cost
    state.points_used[client_id] = used
    state.counters.points_used += cost
    exhausted = used >= state.points.quota_per_hour
    headers.update(_points_headers(state, used, reset, exhausted=exhausted))
