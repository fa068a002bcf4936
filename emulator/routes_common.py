"""State and helpers shared by the emulator's route handlers."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulator.config import ServerOptions
from emulator.keys import AUTH_KIND_KEY, FLAVOUR_KEY, SHAPE_KEY, STATE_KEY, USER_ID_KEY
from emulator.model import Content, ContentStatus, ContentType, Site
from emulator.paging import LimitPolicy, PageRequest, PagingError, parse_page
from emulator.shapes import Expand, ExpansionError, ShapeContext, expand_paths, parse_expand

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
BAD_REQUEST_CLASS = "com.atlassian.confluence.api.service.exceptions.BadRequestException"
NOT_FOUND_CLASS = "com.atlassian.confluence.api.service.exceptions.api.NotFoundException"


class ApiError(Exception):
    """An error response with a Confluence-shaped JSON body (or none for ``body=None``)."""

    def __init__(
        self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class ListingCache:
    """Filtered listings kept until the site changes, so repeated pages avoid re-filtering.

    Every entry is dropped when ``Site.change_sequence`` moves, which every content
    mutation of the model advances.
    """

    max_entries: int = 256
    sequence: int = -1
    entries: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def get(self, site: Site, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """Return the cached value for ``key``, building it when missing or stale."""
        if site.change_sequence != self.sequence:
            self.entries.clear()
            self.sequence = site.change_sequence
        value = self.entries.get(key)
        if value is None:
            if len(self.entries) >= self.max_entries:
                self.entries.pop(next(iter(self.entries)))
            value = build()
            self.entries[key] = value
        return value


@dataclass
class Credentials:
    """The credentials the emulator accepts, printed at start-up."""

    email: str
    api_token: str
    username: str
    password: str
    personal_access_token: str
    oauth_client_id: str
    oauth_client_secret: str
    account_id: str
    # The second user, left out of some read restrictions. It signs in with the same
    # secret everywhere: Cloud API token, Data Center password and personal access token.
    reader_email: str
    reader_username: str
    reader_token: str
    reader_account_id: str


@dataclass
class Latency:
    """Fixed latency plus uniform jitter in milliseconds, changeable at run time."""

    fixed_ms: float = 0.0
    jitter_ms: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def draw(self) -> float:
        """Return the delay of one response in milliseconds."""
        if self.jitter_ms <= 0:
            return self.fixed_ms
        return self.fixed_ms + self.rng.uniform(0.0, self.jitter_ms)


@dataclass
class EmulatorState:
    """Everything the handlers share: the site, the options and settings the control API
    changes while the server runs."""

    site: Site
    options: ServerOptions
    short_page_rate: float = 0.1
    dc_quirks: bool = False
    dc_limit_cap: int = 200
    # Maximum number of spaces on a Data Center `/space` page with the quirks on. Data Center
    # caps it at `DefaultRestSpaceManager.MAX_SIZE`; one client report saw 500.
    dc_space_cap: int = 500
    cloud_quirks: bool = False
    # Characters of `body.storage` that `/search` hits carry; None serves the full body.
    search_body_limit: int | None = 1024
    media_secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    listings: ListingCache = field(default_factory=ListingCache)
    searches: ListingCache = field(default_factory=lambda: ListingCache(max_entries=64))

    @property
    def search_lag(self) -> float:
        """Seconds the search index lags behind changes (kept by the site model)."""
        return self.site.index_lag

    @search_lag.setter
    def search_lag(self, seconds: float) -> None:
        self.site.index_lag = seconds

    def media_token(self, attachment_id: str, version: int) -> str:
        """Return the signed token the attachment redirect puts into the media URL."""
        message = f"{attachment_id}:{version}".encode()
        return hmac.new(self.media_secret, message, hashlib.sha256).hexdigest()[:40]


def state_of(request: web.Request) -> EmulatorState:
    """Return the EmulatorState of the application serving ``request``."""
    return request.app[STATE_KEY]


def shape_of(request: web.Request) -> ShapeContext:
    """Return the ShapeContext the root middleware stored for this request."""
    ctx = request[SHAPE_KEY]
    assert isinstance(ctx, ShapeContext)
    return ctx


def caller_id(request: web.Request) -> str | None:
    """Return the account id of the caller, or None for an anonymous caller.

    A request that did not pass the authentication middleware (a handler called outside
    the gate) runs as the site's API user.
    """
    if request.get(AUTH_KIND_KEY) is None:
        return state_of(request).site.current_user_id
    return request.get(USER_ID_KEY)


def hidden_ids(request: web.Request) -> frozenset[str]:
    """Return the ids of the content whose read restrictions exclude the caller."""
    return state_of(request).site.hidden_from(caller_id(request))


def readable(request: web.Request, items: Sequence[Content]) -> Sequence[Content]:
    """Leave out the items the caller may not read; Confluence lists them nowhere."""
    hidden = hidden_ids(request)
    if not hidden:
        return items
    return [item for item in items if item.id not in hidden]


def flavour_of(request: web.Request) -> str:
    """Return ``cloud``, ``gateway`` or ``datacenter`` for an API request."""
    return str(request.get(FLAVOUR_KEY, "cloud"))


class JsonResponse(web.Response):
    """A JSON response that remembers how many objects it returns.

    The points quota charges per object returned; counting here spares the gate from
    parsing the serialized body again.
    """

    objects: int = 1


def count_objects(body: Any) -> int:
    """Count the objects a response body returns: list rows, child-map rows, or one object."""
    if isinstance(body, list):
        return len(body)
    if not isinstance(body, dict):
        return 0
    results = body.get("results")
    if isinstance(results, list):
        return len(results)
    child_rows = [
        len(child["results"])
        for child in body.values()
        if isinstance(child, dict) and isinstance(child.get("results"), list)
    ]
    return sum(child_rows) if child_rows else 1


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Serialize ``body`` with orjson into a JSON response."""
    response = JsonResponse(body=orjson.dumps(body), status=status, headers=headers)
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    response.objects = count_objects(body)
    return response


def bad_request(message: str, request: web.Request) -> ApiError:
    """Build a 400 with Confluence's BadRequestException body."""
    if flavour_of(request) == "datacenter":
        return ApiError(
            400,
            {
                "statusCode": 400,
                "data": {
                    "authorized": False,
                    "valid": True,
                    "allowedInReadOnlyMode": True,
                    "errors": [],
                    "successful": False,
                },
                "message": message,
                "reason": "Bad Request",
            },
        )
    return ApiError(
        400,
        {
            "statusCode": 400,
            "data": {
                "authorized": True,
                "valid": True,
                "allowedInReadOnlyMode": True,
                "errors": [],
                "successful": False,
            },
            "message": f"{BAD_REQUEST_CLASS}: {message}",
        },
    )


def not_found(message: str, request: web.Request) -> ApiError:
    """Build a 404 with Confluence's NotFoundException body."""
    if flavour_of(request) == "datacenter":
        return ApiError(
            404,
            {
                "statusCode": 404,
                "data": {
                    "authorized": False,
                    "valid": True,
                    "allowedInReadOnlyMode": True,
                    "errors": [],
                    "successful": False,
                },
                "message": message,
                "reason": "Not Found",
            },
        )
    return ApiError(
        404,
        {
            "statusCode": 404,
            "message": f"{NOT_FOUND_CLASS}: {message}",
        },
    )


def content_not_found(content_id: str, request: web.Request) -> ApiError:
    """Build the 404 Confluence sends for a missing, purged or invisible content id."""
    if flavour_of(request) == "datacenter":
        return not_found(f"No content found with id: ContentId{{id={content_id}}}", request)
    return not_found(f"No content found with id : {content_id}", request)


def space_not_found(space_key: str, request: web.Request) -> ApiError:
    """Build the 404 Confluence sends for an unknown space key."""
    return not_found(f"No space with key : {space_key}", request)


def request_expand(
    request: web.Request, *, defaults: Iterable[str] = (), use_defaults_when_absent: bool = True
) -> Expand:
    """Parse the ``expand`` parameter (all occurrences), applying route defaults when absent."""
    values = request.query.getall("expand", [])
    raw = ",".join(values)
    try:
        if not values and use_defaults_when_absent:
            return parse_expand(None, defaults=defaults)
        return parse_expand(raw)
    except ExpansionError as error:
        raise bad_request_raw(str(error)) from None


def bad_request_raw(message: str) -> ApiError:
    """Build a 400 whose ``message`` is given in full (already carrying its class name)."""
    return ApiError(400, {"statusCode": 400, "message": message})


def request_page(
    request: web.Request,
    policy: LimitPolicy,
    expand: Expand,
    *,
    silent_cap: int | None = None,
) -> PageRequest:
    """Validate ``start`` and ``limit`` of an offset list; raise ApiError with Cloud's 400."""
    state = state_of(request)
    try:
        return parse_page(
            request.query.get("start"),
            request.query.get("limit"),
            policy,
            expand_paths=expand_paths(expand),
            silent_cap=silent_cap,
            next_past_end=state.cloud_quirks and flavour_of(request) != "datacenter",
        )
    except PagingError as error:
        raise ApiError(error.status, error.body) from None


def carried_params(request: web.Request, *, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Return the query parameters that next, prev and self links carry.

    ``start``, ``limit`` and the ``next``/``prev`` markers are left out, and so is every
    name in ``drop``.
    """
    excluded = {"start", "limit", "next", "prev", *drop}
    return [(key, value) for key, value in request.query.items() if key not in excluded]


def parse_content_id(raw: str, request: web.Request) -> str:
    """Check that a content id from the path is numeric; Confluence returns 400 otherwise."""
    if not raw.isdigit():
        raise bad_request(f"Invalid content id: {raw}", request)
    return raw.lstrip("0") or "0"


def visible_statuses(request: web.Request, *, default: str = "current") -> set[ContentStatus]:
    """Parse the repeatable ``status`` parameter of ``/content`` and ``/content/{id}``.

    ``any`` means current and trashed, as Confluence documents; ``historical`` is not
    supported and gives 400.
    """
    values: list[str] = []
    for raw in request.query.getall("status", []) or [default]:
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    statuses: set[ContentStatus] = set()
    for value in values:
        if value == "any":
            statuses.update({ContentStatus.CURRENT, ContentStatus.TRASHED})
        elif value == "deleted":
            statuses.add(ContentStatus.TRASHED)
        elif value == "historical":
            raise bad_request(
                "status 'historical' is not supported; use current, trashed, draft or any",
                request,
            )
        else:
            try:
                statuses.add(ContentStatus(value))
            except ValueError:
                raise bad_request(
                    f"Invalid status value '{value}': use current, trashed, draft, archived or any",
                    request,
                ) from None
    return statuses


def require_content(
    request: web.Request, raw_id: str, statuses: set[ContentStatus] | None = None
) -> Content:
    """Return the content named in the path, or raise the 404 Confluence sends.

    By default only current content is visible, as on Confluence: trashed, draft and
    archived items need an explicit ``status``.
    """
    content_id = parse_content_id(raw_id, request)
    content = state_of(request).site.content(content_id)
    allowed = statuses if statuses is not None else {ContentStatus.CURRENT}
    if content is None or content.status not in allowed or content_id in hidden_ids(request):
        raise content_not_found(content_id, request)
    return content


def current_children(items: Iterable[Content]) -> list[Content]:
    """Keep the current items of a listing."""
    return [item for item in items if item.status is ContentStatus.CURRENT]


CONTENT_TYPES_BY_NAME = {content_type.value: content_type for content_type in ContentType}
