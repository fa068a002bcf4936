"""Control API of the emulator under ``/_emulator/``: not part of Confluence.

Tests and demos use it to change the site and the server while it runs. It creates,
edits, moves, trashes, restores and purges content, archives spaces, adds and removes
labels and sets the model clock. It also changes rate limits, faults, search lag and
latency, and reads or resets the request counters. Every endpoint takes and returns JSON; errors are
``{"error": "<message naming the bad value>"}`` with status 400 or 404.

Endpoints (all under ``/_emulator``):

- ``GET /site``: content counts by type and status, the clock and the served base URLs.
- ``POST /content``: create (``type``, ``space``, ``title``, ``body``, ``parent_id``,
  ``container_id``, ``labels``, ``status``, ``media_type``, ``file_size``,
  ``comment_location``).
- ``POST /content/{id}/edit`` (``title``, ``body``, ``message``, ``minor_edit``),
  ``/move`` (``parent_id``, ``space``, ``position``), ``/trash``, ``/restore``,
  ``/purge``, ``/archive``, ``/unarchive``.
- ``POST /content/{id}/labels`` (``name``, ``prefix``) and
  ``DELETE /content/{id}/labels/{name}``.
- ``POST /content/{id}/restrictions`` (``users``: account ids, ``groups``: group names):
  replace the read restrictions; empty lists remove them.
- ``POST /space/{key}/archive`` and ``/unarchive``; ``POST /space/{key}/restrict``
  (``restricted``: the space the ``403space`` fault refuses).
- ``GET``/``POST /clock`` (``when`` ISO-8601, ``offset_seconds``, ``advance_seconds``,
  ``frozen``).
- ``GET``/``POST /rate-limit`` (``enabled``, ``rate_per_second``, ``burst``, ``per_user``,
  ``anomaly``) and ``POST /points`` (``enabled``, ``quota_per_hour``, ``enforced``,
  ``policy``).
- ``GET``/``POST``/``DELETE /faults`` (``rule``: ``[METHOD ]ROUTE:KIND:WHEN[:ARG]``).
- ``GET``/``POST /search`` (``lag_seconds``, ``short_page_rate``, ``body_limit``).
- ``GET``/``POST /server`` (``latency_ms``, ``latency_jitter_ms``, ``dc_quirks``,
  ``dc_limit_cap``, ``dc_space_cap``, ``cloud_quirks``, ``v1_gone``,
  ``anonymous_access``).
- ``GET /counters`` and ``POST /counters/reset``.
- ``POST /oauth/grant`` (``scopes``): a consent for the emulator's OAuth client, returning
  its tokens.
- ``GET``/``POST /oauth/lifetimes`` (``access_token_seconds``,
  ``refresh_reuse_leeway_seconds``, ``refresh_idle_seconds``,
  ``refresh_absolute_seconds``): OAuth token lifetimes; new values apply to tokens issued
  afterwards and to every later refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from emulator.faults import parse_fault_rule
from emulator.gate import GateState
from emulator.keys import CREDENTIALS_KEY, GATE_KEY, LATENCY_KEY, STATE_KEY
from emulator.model import Content, ContentStatus, ContentType, InvalidOperation, NotFound, Space
from emulator.routes_common import (
    EmulatorState,
    json_response,
)
from emulator.shapes import format_time

logger = logging.getLogger(__name__)

PREFIX = "/_emulator"

ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(Exception):
    """A rejected control request; the message names the bad value and the fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _gate(request: web.Request) -> GateState:
    return request.app[GATE_KEY]


async def _payload(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ControlError(
            f"request body is not valid JSON ({error}); send a JSON object"
        ) from None
    if not isinstance(payload, dict):
        raise ControlError(f"request body is a JSON {type(payload).__name__}; send an object")
    return payload


def _field(
    payload: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    value = payload.get(name, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise ControlError(f"field {name!r} is {value!r}; expected {expected}")
    return value


def _required(payload: dict[str, Any], name: str, kind: type) -> Any:
    value = _field(payload, name, kind)
    if value is None:
        raise ControlError(f"field {name!r} is missing; it is required here")
    return value


def content_summary(content: Content) -> dict[str, Any]:
    """Return the short description of a content item that control endpoints send back."""
    return {
        "id": content.id,
        "type": content.type.value,
        "status": content.status.value,
        "title": content.title,
        "space": content.space_key,
        "parent_id": content.parent_id,
        "container_id": content.container_id,
        "version": content.version.number,
        "last_modified": format_time(content.last_modified),
    }


def space_summary(space: Space) -> dict[str, Any]:
    """Return the short description of a space that control endpoints send back."""
    return {
        "id": space.id,
        "key": space.key,
        "name": space.name,
        "type": space.type,
        "status": space.status,
        "homepage_id": space.homepage_id,
        "restricted_for_api": space.restricted_for_api,
    }


def _guard(handler: ControlHandler) -> ControlHandler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ControlError as error:
            return json_response({"error": str(error)}, status=error.status)
        except NotFound as error:
            return json_response({"error": str(error)}, status=404)
        except (InvalidOperation, ValueError) as error:
            return json_response({"error": str(error)}, status=400)

    return guarded


# --- site and content ---------------------------------------------------------------


async def site_info(request: web.Request) -> web.Response:
    state = _state(request)
    site = state.site
    return json_response(
        {
            "counts": site.counts(),
            "spaces": [space_summary(space) for space in site.spaces.values()],
            "now": format_time(site.now()),
            "clock_frozen": site.clock_frozen,
            "change_sequence": site.change_sequence,
            "current_user": site.current_user_id,
        }
    )


def _content_type(payload: dict[str, Any]) -> ContentType:
    raw = _field(payload, "type", str, "page")
    try:
        return ContentType(raw)
    except ValueError:
        raise ControlError(
            f"field 'type' is {raw!r}; use page, blogpost, comment or attachment"
        ) from None


async def create_content(request: web.Request) -> web.Response:
    state = _state(request)
    payload = await _payload(request)
    content_type = _content_type(payload)
    container_id = _field(payload, "container_id", str)
    space_key = _field(payload, "space", str)
    if space_key is None and container_id is not None:
        container = state.site.content(container_id)
        if container is None:
            raise ControlError(f"container_id {container_id!r} does not exist", status=404)
        space_key = container.space_key
    if space_key is None:
        raise ControlError("field 'space' is missing; name the space key of the new content")

    status_raw = _field(payload, "status", str, "current")
    try:
        status = ContentStatus(status_raw)
    except ValueError:
        raise ControlError(
            f"field 'status' is {status_raw!r}; use current, draft or archived"
        ) from None
    labels = _field(payload, "labels", list, [])
    if not all(isinstance(label, str) for label in labels):
        raise ControlError(f"field 'labels' is {labels!r}; expected a list of label names")

    content = state.site.create_content(
        type=content_type,
        space_key=space_key,
        title=_required(payload, "title", str),
        body_storage=_field(payload, "body", str, ""),
        parent_id=_field(payload, "parent_id", str),
        container_id=container_id,
        author=_field(payload, "author", str),
        status=status,
        labels=labels,
        position=_field(payload, "position", int),
        comment_location=_field(payload, "comment_location", str),
        media_type=_field(payload, "media_type", str),
        file_size=_field(payload, "file_size", int),
    )
    logger.info("control: created %s %s in space %s", content.type, content.id, space_key)
    return json_response(content_summary(content), status=201)


def _content_id(request: web.Request) -> str:
    return request.match_info["id"]


async def edit_content(request: web.Request) -> web.Response:
    payload = await _payload(request)
    content = _state(request).site.edit_content(
        _content_id(request),
        title=_field(payload, "title", str),
        body_storage=_field(payload, "body", str),
        author=_field(payload, "author", str),
        message=_field(payload, "message", str, ""),
        minor_edit=_field(payload, "minor_edit", bool, False),
    )
    return json_response(content_summary(content))


async def move_content(request: web.Request) -> web.Response:
    payload = await _payload(request)
    content = _state(request).site.move_content(
        _content_id(request),
        new_parent_id=_field(payload, "parent_id", str),
        new_space_key=_field(payload, "space", str),
        position=_field(payload, "position", int),
    )
    return json_response(content_summary(content))


async def trash_content(request: web.Request) -> web.Response:
    content = _state(request).site.trash_content(_content_id(request))
    return json_response(content_summary(content))


async def restore_content(request: web.Request) -> web.Response:
    content = _state(request).site.restore_content(_content_id(request))
    return json_response(content_summary(content))


async def purge_content(request: web.Request) -> web.Response:
    content_id = _content_id(request)
    _state(request).site.purge_content(content_id)
    return json_response({"id": content_id, "purged": True})


async def archive_content(request: web.Request) -> web.Response:
    content = _state(request).site.archive_content(_content_id(request))
    return json_response(content_summary(content))


async def unarchive_content(request: web.Request) -> web.Response:
    content = _state(request).site.unarchive_content(_content_id(request))
    return json_response(content_summary(content))


async def add_label(request: web.Request) -> web.Response:
    payload = await _payload(request)
    label = _state(request).site.add_label(
        _content_id(request),
        _required(payload, "name", str),
        prefix=_field(payload, "prefix", str, "global"),
    )
    return json_response({"prefix": label.prefix, "name": label.name, "id": label.id}, status=201)


async def remove_label(request: web.Request) -> web.Response:
    _state(request).site.remove_label(_content_id(request), request.match_info["name"])
    return json_response({"removed": request.match_info["name"]})


def _names(payload: dict[str, Any], name: str) -> list[str]:
    values = _field(payload, name, list, [])
    if not all(isinstance(value, str) for value in values):
        raise ControlError(f"field {name!r} is {values!r}; expected a list of strings")
    return list(values)


async def set_restrictions(request: web.Request) -> web.Response:
    payload = await _payload(request)
    users = _names(payload, "users")
    groups = _names(payload, "groups")
    content = _state(request).site.set_read_restrictions(
        _content_id(request), users=users, groups=groups
    )
    return json_response(
        {
            **content_summary(content),
            "read_restriction_users": content.read_restriction_users,
            "read_restriction_groups": content.read_restriction_groups,
        }
    )


def _space_key(request: web.Request) -> str:
    return request.match_info["key"]


async def archive_space(request: web.Request) -> web.Response:
    space = _state(request).site.archive_space(_space_key(request))
    return json_response(space_summary(space))


async def unarchive_space(request: web.Request) -> web.Response:
    space = _state(request).site.unarchive_space(_space_key(request))
    return json_response(space_summary(space))


async def restrict_space(request: web.Request) -> web.Response:
    payload = await _payload(request)
    key = _space_key(request)
    space = _state(request).site.space(key)
    if space is None:
        raise ControlError(f"space {key!r} does not exist", status=404)
    space.restricted_for_api = _field(payload, "restricted", bool, True)
    return json_response(space_summary(space))


# --- clock ---------------------------------------------------------------------------


def _clock_body(state: EmulatorState) -> dict[str, Any]:
    return {"now": format_time(state.site.now()), "frozen": state.site.clock_frozen}


async def get_clock(request: web.Request) -> web.Response:
    return json_response(_clock_body(_state(request)))


async def set_clock(request: web.Request) -> web.Response:
    state = _state(request)
    payload = await _payload(request)
    when_raw = _field(payload, "when", str)
    when: datetime | None = None
    if when_raw is not None:
        try:
            when = datetime.fromisoformat(when_raw.replace("Z", "+00:00"))
        except ValueError:
            raise ControlError(
                f"field 'when' is {when_raw!r}; use ISO-8601 such as 2024-03-31T01:30:00Z"
            ) from None
        if when.tzinfo is None:
            raise ControlError(f"field 'when' is {when_raw!r} without a zone; add Z or +hh:mm")
        when = when.astimezone(UTC)
    offset = _field(payload, "offset_seconds", float)
    frozen = _field(payload, "frozen", bool)
    advance = _field(payload, "advance_seconds", float)
    if when is not None or offset is not None or frozen is not None:
        state.site.set_clock(when, offset_seconds=offset, frozen=frozen)
    if advance is not None:
        state.site.advance_clock(advance)
    return json_response(_clock_body(state))


# --- gate: limits, faults, counters, OAuth ---------------------------------------------


def _rate_limit_body(request: web.Request) -> dict[str, Any]:
    gate = _gate(request)
    settings = gate.rate_limit
    points = gate.points
    return {
        "enabled": settings.enabled,
        "rate_per_second": settings.rate_per_second,
        "burst": settings.burst,
        "per_user": settings.per_user,
        "anomaly": settings.anomaly,
        "points": {
            "enabled": points.enabled,
            "quota_per_hour": points.quota_per_hour,
            "enforced": points.enforced,
            "policy": points.policy,
        },
    }


async def get_rate_limit(request: web.Request) -> web.Response:
    return json_response(_rate_limit_body(request))


async def set_rate_limit(request: web.Request) -> web.Response:
    payload = await _payload(request)
    _gate(request).set_rate_limit(
        enabled=_field(payload, "enabled", bool),
        rate_per_second=_field(payload, "rate_per_second", float),
        burst=_field(payload, "burst", int),
        per_user=_field(payload, "per_user", bool),
        anomaly=_field(payload, "anomaly", str),
    )
    return json_response(_rate_limit_body(request))


async def set_points(request: web.Request) -> web.Response:
    payload = await _payload(request)
    _gate(request).set_points_quota(
        enabled=_field(payload, "enabled", bool),
        quota_per_hour=_field(payload, "quota_per_hour", int),
        enforced=_field(payload, "enforced", bool),
        policy=_field(payload, "policy", str),
    )
    return json_response(_rate_limit_body(request))


def _faults_body(request: web.Request) -> dict[str, Any]:
    return {
        "faults": [
            {"rule": rule.describe(), "matched": rule.matched, "fired": rule.fired}
            for rule in _gate(request).faults
        ]
    }


async def get_faults(request: web.Request) -> web.Response:
    return json_response(_faults_body(request))


async def add_fault(request: web.Request) -> web.Response:
    payload = await _payload(request)
    rule_text = _required(payload, "rule", str)
    _gate(request).add_fault(parse_fault_rule(rule_text))
    if "seed" in payload:
        _gate(request).reseed_faults(_required(payload, "seed", int))
    return json_response(_faults_body(request), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    _gate(request).clear_faults()
    return json_response(_faults_body(request))


def _search_body(state: EmulatorState) -> dict[str, Any]:
    return {
        "lag_seconds": state.search_lag,
        "short_page_rate": state.short_page_rate,
        "body_limit": state.search_body_limit,
    }


async def get_search(request: web.Request) -> web.Response:
    return json_response(_search_body(_state(request)))


async def set_search(request: web.Request) -> web.Response:
    state = _state(request)
    payload = await _payload(request)
    lag = _field(payload, "lag_seconds", float)
    if lag is not None:
        if lag < 0:
            raise ControlError(f"field 'lag_seconds' is {lag}; use 0 or more seconds")
        state.search_lag = lag
    rate = _field(payload, "short_page_rate", float)
    if rate is not None:
        if not 0.0 <= rate <= 1.0:
            raise ControlError(f"field 'short_page_rate' is {rate}; use a rate from 0 to 1")
        state.short_page_rate = rate
    if "body_limit" in payload:
        limit = _field(payload, "body_limit", int)
        if limit is not None and limit < 0:
            raise ControlError(f"field 'body_limit' is {limit}; use 0 or more, or null")
        state.search_body_limit = limit
    return json_response(_search_body(state))


def _server_body(request: web.Request) -> dict[str, Any]:
    state = _state(request)
    latency = request.app[LATENCY_KEY]
    return {
        "latency_ms": latency.fixed_ms,
        "latency_jitter_ms": latency.jitter_ms,
        "dc_quirks": state.dc_quirks,
        "dc_limit_cap": state.dc_limit_cap,
        "dc_space_cap": state.dc_space_cap,
        "cloud_quirks": state.cloud_quirks,
        "v1_gone": _gate(request).v1_gone,
        "anonymous_access": _gate(request).anonymous_access,
    }


async def get_server(request: web.Request) -> web.Response:
    return json_response(_server_body(request))


async def set_server(request: web.Request) -> web.Response:
    state = _state(request)
    payload = await _payload(request)
    latency = request.app[LATENCY_KEY]
    for name in ("latency_ms", "latency_jitter_ms"):
        value = _field(payload, name, float)
        if value is not None and value < 0:
            raise ControlError(f"field {name!r} is {value}; milliseconds cannot be negative")
    fixed = _field(payload, "latency_ms", float)
    if fixed is not None:
        latency.fixed_ms = fixed
    jitter = _field(payload, "latency_jitter_ms", float)
    if jitter is not None:
        latency.jitter_ms = jitter
    quirks = _field(payload, "dc_quirks", bool)
    if quirks is not None:
        state.dc_quirks = quirks
    cloud_quirks = _field(payload, "cloud_quirks", bool)
    if cloud_quirks is not None:
        state.cloud_quirks = cloud_quirks
    cap = _field(payload, "dc_limit_cap", int)
    if cap is not None:
        if cap < 1:
            raise ControlError(f"field 'dc_limit_cap' is {cap}; use a positive number")
        state.dc_limit_cap = cap
    space_cap = _field(payload, "dc_space_cap", int)
    if space_cap is not None:
        if space_cap < 1:
            raise ControlError(f"field 'dc_space_cap' is {space_cap}; use a positive number")
        state.dc_space_cap = space_cap
    v1_gone = _field(payload, "v1_gone", bool)
    if v1_gone is not None:
        _gate(request).v1_gone = v1_gone
    anonymous = _field(payload, "anonymous_access", bool)
    if anonymous is not None:
        _gate(request).anonymous_access = anonymous
    return json_response(_server_body(request))


async def get_counters(request: web.Request) -> web.Response:
    return json_response(_gate(request).snapshot_counters())


async def reset_counters(request: web.Request) -> web.Response:
    _gate(request).reset_counters()
    return json_response(_gate(request).snapshot_counters())


def _lifetimes_body(gate: GateState) -> dict[str, float]:
    store = gate.tokens
    return {
        "access_token_seconds": store.access_token_lifetime,
        "refresh_reuse_leeway_seconds": store.refresh_reuse_leeway,
        "refresh_idle_seconds": store.refresh_idle_lifetime,
        "refresh_absolute_seconds": store.refresh_absolute_lifetime,
    }


async def get_token_lifetimes(request: web.Request) -> web.Response:
    return json_response(_lifetimes_body(_gate(request)))


async def set_token_lifetimes(request: web.Request) -> web.Response:
    payload = await _payload(request)
    gate = _gate(request)
    try:
        gate.set_token_lifetimes(
            access_token=_field(payload, "access_token_seconds", float),
            refresh_reuse_leeway=_field(payload, "refresh_reuse_leeway_seconds", float),
            refresh_idle=_field(payload, "refresh_idle_seconds", float),
            refresh_absolute=_field(payload, "refresh_absolute_seconds", float),
        )
    except ValueError as error:
        raise ControlError(str(error)) from None
    return json_response(_lifetimes_body(gate))


async def oauth_grant(request: web.Request) -> web.Response:
    payload = await _payload(request)
    scopes = _field(payload, "scopes", list, [])
    if not all(isinstance(scope, str) for scope in scopes):
        raise ControlError(f"field 'scopes' is {scopes!r}; expected a list of scope names")
    credentials = request.app[CREDENTIALS_KEY]
    account_id = _field(payload, "account_id", str, credentials.account_id)
    tokens = _gate(request).issue_grant(
        client_id=credentials.oauth_client_id, account_id=account_id, scopes=scopes
    )
    return json_response(tokens, status=201)


async def unknown_control_route(request: web.Request) -> web.Response:
    return json_response(
        {"error": f"no control endpoint {request.method} {request.path}; see GET /_emulator/site"},
        status=404,
    )


CONTROL_ROUTES: tuple[tuple[str, str, ControlHandler], ...] = (
    ("GET", "/site", site_info),
    ("POST", "/content", create_content),
    ("POST", "/content/{id}/edit", edit_content),
    ("POST", "/content/{id}/move", move_content),
    ("POST", "/content/{id}/trash", trash_content),
    ("POST", "/content/{id}/restore", restore_content),
    ("POST", "/content/{id}/purge", purge_content),
    ("POST", "/content/{id}/archive", archive_content),
    ("POST", "/content/{id}/unarchive", unarchive_content),
    ("POST", "/content/{id}/labels", add_label),
    ("DELETE", "/content/{id}/labels/{name}", remove_label),
    ("POST", "/content/{id}/restrictions", set_restrictions),
    ("POST", "/space/{key}/archive", archive_space),
    ("POST", "/space/{key}/unarchive", unarchive_space),
    ("POST", "/space/{key}/restrict", restrict_space),
    ("GET", "/clock", get_clock),
    ("POST", "/clock", set_clock),
    ("GET", "/rate-limit", get_rate_limit),
    ("POST", "/rate-limit", set_rate_limit),
    ("POST", "/points", set_points),
    ("GET", "/faults", get_faults),
    ("POST", "/faults", add_fault),
    ("DELETE", "/faults", clear_faults),
    ("GET", "/search", get_search),
    ("POST", "/search", set_search),
    ("GET", "/server", get_server),
    ("POST", "/server", set_server),
    ("GET", "/counters", get_counters),
    ("POST", "/counters/reset", reset_counters),
    ("POST", "/oauth/grant", oauth_grant),
    ("GET", "/oauth/lifetimes", get_token_lifetimes),
    ("POST", "/oauth/lifetimes", set_token_lifetimes),
)


def add_control_routes(app: web.Application) -> None:
    """Register the control API under ``/_emulator``."""
    for method, path, handler in CONTROL_ROUTES:
        app.router.add_route(method, PREFIX + path, _guard(handler))
    app.router.add_route("*", PREFIX + "{tail:(/.*)?}", unknown_control_route)
