"""Fault injection: rules that make chosen API requests fail the way Confluence fails.

A rule names a route pattern, a kind and when it fires. The pattern is a glob on the
path after ``/rest/api``, such as ``/content/*``, and a pattern without wildcards must
match the whole path. After ``re:`` it is a regular expression searched in that path.
A rule fires with a probability drawn from the gate's seeded RNG, or exactly on the Nth
matching request, or on the next N.

Rule strings for the command line have the form ``[METHOD ]ROUTE:KIND:WHEN[:ARG]``:
``/content/search:502:0.1``, ``/content:latency:1.0:50``, ``GET /space:drop:nth=3``,
``*:503:next=2:30``. ``WHEN`` is a probability from 0 to 1, ``nth=N`` or ``next=N``.

Kinds (``ARG`` in brackets):

- ``500``, ``502``, ``503`` [Retry-After seconds], ``504``, ``403``: an error response
  with a realistic body (502 and 504 are HTML pages from a proxy).
- ``429`` [seconds to wait]: a rate-limit refusal in the current anomaly shape.
- ``latency`` (milliseconds, ``50`` or ``50-200``): delay, then serve normally.
- ``truncate`` [fraction sent, default 0.5]: send a prefix of the real body under the
  full ``Content-Length``, then close the connection.
- ``badjson``: a complete 200 response whose JSON body is cut short.
- ``drop``: close the connection without any response.
- ``403space`` [space keys, comma-separated]: 403 for requests that name a chosen space
  by ``spaceKey``, the ``/space/{key}`` path, CQL ``space``, or a content id in that space.
  Without keys, the server's ``space_restricted`` hook chooses.
- ``504limit`` [limit threshold, default 50]: 504 when ``expand`` requests a body and
  ``limit`` is above the threshold.
- ``504bytes`` (bytes): 504 when the real response body is larger.
- ``500perm``: Data Center's 500 for permission expansions (``expand=permissions``) by a
  user who is not an administrator.
- ``404ancestors`` [content id]: Cloud's 404 of a whole batch when ``expand`` requests
  ancestor restrictions.
- ``500expand`` [expansion names, comma-separated, default ``permissions``]: 500 for any
  caller when one ``expand`` path has a segment with one of these names, such as
  ``restrictions`` in ``content.restrictions.read`` or ``permissions`` in
  ``space.permissions``. The same request without that expansion succeeds, so a
  crawler's retry without an optional expansion can be tested.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from emulator.keys import API_PATH_KEY, FLAVOUR_KEY, GATE_DROPPED_KEY, USER_ID_KEY
from emulator.limits import build_refusal

if TYPE_CHECKING:
    import random

    from emulator.gate import GateState

logger = logging.getLogger(__name__)

STATUS_KINDS = ("500", "502", "503", "504", "403", "429")
CONDITIONAL_KINDS = ("403space", "504limit", "500perm", "404ancestors", "500expand")
RESPONSE_KINDS = ("truncate", "badjson", "504bytes")
KINDS = (*STATUS_KINDS, "latency", "drop", *CONDITIONAL_KINDS, *RESPONSE_KINDS)
_ARG_REQUIRED = ("latency", "504bytes")
_ARG_FORBIDDEN = ("500", "502", "504", "403", "badjson", "drop", "500perm")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_WHEN_HELP = "a probability from 0 to 1, nth=N or next=N"

DEFAULT_BODY_LIMIT_THRESHOLD = 50
DEFAULT_TRUNCATE_FRACTION = 0.5
DEFAULT_PAGE_LIMIT = 25
DEFAULT_FAILING_EXPANSIONS = "permissions"

_PROXY_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_PROXY_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n"
)
_CQL_SPACE = re.compile(
    r"\bspace(?:\.key)?\s*(?:=|\bin\b)\s*(\([^)]*\)|\"[^\"]*\"|'[^']*'|[^\s()]+)",
    re.IGNORECASE,
)


class FaultRuleError(ValueError):
    """A fault rule string or value that cannot be used, with the cause in ``reason``."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(
            f"invalid fault rule {rule!r}: {reason}. The form is [METHOD ]ROUTE:KIND:WHEN[:ARG] "
            f"with WHEN {_WHEN_HELP} and KIND one of: {', '.join(KINDS)}"
        )
        self.rule = rule
        self.reason = reason


@dataclass
class FaultRule:
    """One fault: where it applies, what it does and when it fires."""

    kind: str
    route: str = "*"
    method: str | None = None
    probability: float = 1.0
    nth: int | None = None  # fire only on the Nth matching request, counted from 1
    next_count: int | None = None  # fire on each of the next N matching requests
    arg: str | None = None
    matched: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate_rule(self)
        if self.route.startswith("re:"):
            self._regex = re.compile(self.route[3:])
        if self.method is not None:
            self.method = self.method.upper()

    def applies_to(self, method: str, api_path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self._regex is not None:
            return self._regex.search(api_path) is not None
        return fnmatch.fnmatchcase(api_path, self.route)

    def fires(self, rng: random.Random) -> bool:
        """Count one matching request and decide whether the fault fires on it."""
        self.matched += 1
        if self.nth is not None:
            fire = self.matched == self.nth
        elif self.next_count is not None:
            fire = self.fired < self.next_count
        else:
            fire = rng.random() < self.probability
        if fire:
            self.fired += 1
        return fire

    def describe(self) -> str:
        if self.nth is not None:
            when = f"nth={self.nth}"
        elif self.next_count is not None:
            when = f"next={self.next_count}"
        else:
            when = f"{self.probability:g}"
        method = f"{self.method} " if self.method else ""
        arg = f":{self.arg}" if self.arg is not None else ""
        return f"{method}{self.route}:{self.kind}:{when}{arg}"


def _invalid(rule: str, reason: str) -> FaultRuleError:
    return FaultRuleError(rule, reason)


def _validate_rule(rule: FaultRule) -> None:
    text = rule.describe()
    if rule.kind not in KINDS:
        raise _invalid(text, f"unknown kind {rule.kind!r}")
    if not 0.0 <= rule.probability <= 1.0:
        raise _invalid(text, f"probability {rule.probability} is outside 0 to 1")
    for name, value in (("nth", rule.nth), ("next", rule.next_count)):
        if value is not None and value < 1:
            raise _invalid(text, f"{name}={value} must be at least 1")
    if rule.nth is not None and rule.next_count is not None:
        raise _invalid(text, "give nth or next, not both")
    if rule.route.startswith("re:"):
        try:
            re.compile(rule.route[3:])
        except re.error as exc:
            raise _invalid(text, f"the regular expression does not compile ({exc})") from None
    elif not rule.route.startswith(("/", "*")):
        raise _invalid(text, "the route must start with '/', '*' or 're:'")
    if rule.arg is None:
        if rule.kind in _ARG_REQUIRED:
            raise _invalid(text, f"kind {rule.kind} needs an argument")
        return
    if rule.kind in _ARG_FORBIDDEN:
        raise _invalid(text, f"kind {rule.kind} takes no argument")
    _validate_arg(text, rule.kind, rule.arg)


def _validate_arg(text: str, kind: str, arg: str) -> None:
    try:
        if kind == "latency":
            low, high = _latency_range(arg)
            if low < 0 or high < low:
                raise ValueError(arg)
        elif kind == "truncate":
            if not 0.0 <= float(arg) < 1.0:
                raise ValueError(arg)
        elif (kind in ("503", "429", "504limit", "504bytes") and int(arg) < 0) or (
            kind == "500expand" and not _expansion_names(arg)
        ):
            raise ValueError(arg)
    except ValueError:
        expected = {
            "latency": "milliseconds such as 50 or 50-200",
            "truncate": "the fraction of the body to send, from 0 to below 1",
            "500expand": "expansion names such as restrictions,permissions",
        }.get(kind, "a non-negative integer")
        raise _invalid(text, f"argument {arg!r} of kind {kind} is not {expected}") from None


def _expansion_names(arg: str) -> set[str]:
    names = {name.strip() for name in arg.split(",")}
    if not names or any(not name or "." in name for name in names):
        return set()
    return names


def _latency_range(arg: str) -> tuple[float, float]:
    low, _, high = arg.partition("-")
    return float(low), float(high or low)


def parse_fault_rule(text: str) -> FaultRule:
    """Parse ``[METHOD ]ROUTE:KIND:WHEN[:ARG]`` into a FaultRule.

    The route may itself contain colons (in a regular expression), so the kind is the
    first field after the route that names a known kind and is followed by WHEN.
    """
    source = text.strip()
    method: str | None = None
    head, space, rest = source.partition(" ")
    if space and head.upper() in _METHODS:
        method, source = head.upper(), rest.strip()
    parts = source.split(":")
    for index in range(1, len(parts) - 1):
        if parts[index] not in KINDS:
            continue
        route = ":".join(parts[:index])
        when = parts[index + 1]
        arg = ":".join(parts[index + 2 :]) or None
        probability, nth, next_count = _parse_when(text, when)
        try:
            return FaultRule(
                kind=parts[index],
                route=route,
                method=method,
                probability=probability,
                nth=nth,
                next_count=next_count,
                arg=arg,
            )
        except FaultRuleError as exc:
            # Name the rule as the user wrote it, not as FaultRule.describe() prints it.
            raise _invalid(text, exc.reason) from None
    known = [part for part in parts if part in KINDS]
    if known:
        raise _invalid(text, f"kind {known[0]!r} is not followed by WHEN")
    raise _invalid(text, "no known kind found")


def _parse_when(text: str, when: str) -> tuple[float, int | None, int | None]:
    name, equals, value = when.partition("=")
    try:
        if equals and name == "nth":
            return 1.0, int(value), None
        if equals and name == "next":
            return 1.0, None, int(value)
        return float(when), None, None
    except ValueError:
        raise _invalid(text, f"WHEN {when!r} is not {_WHEN_HELP}") from None


# Responses


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _datacenter_error(status: int, message: str, reason: str) -> web.Response:
    data = {
        "authorized": status != 403,
        "valid": True,
        "allowedInReadOnlyMode": True,
        "errors": [],
        "successful": False,
    }
    body = {"statusCode": status, "data": data, "message": message, "reason": reason}
    return _json(status, body)


def _status_response(request: web.Request, rule: FaultRule, state: GateState) -> web.Response:
    datacenter = request.get(FLAVOUR_KEY) == "datacenter"
    kind = rule.kind
    if kind == "502":
        return web.Response(status=502, text=_PROXY_502, content_type="text/html")
    if kind == "504":
        return web.Response(status=504, text=_PROXY_504, content_type="text/html")
    if kind == "503":
        headers = {"Retry-After": rule.arg} if rule.arg is not None else None
        return _json(503, {"statusCode": 503, "message": "Service Unavailable"}, headers)
    if kind == "429":
        wait = float(rule.arg) if rule.arg is not None else 1.0
        return build_refusal(
            state, wait_seconds=wait, limit=state.rate_limit.burst, reason=state.rate_limit.reason
        )
    if kind == "403":
        message = "com.atlassian.confluence.api.service.exceptions.PermissionException: Forbidden"
        if datacenter:
            return _datacenter_error(403, message, "Forbidden")
        return _json(403, {"statusCode": 403, "message": message})
    message = "java.lang.RuntimeException: Internal server error"
    if datacenter:
        return _datacenter_error(500, message, "Internal Server Error")
    return _json(500, {"statusCode": 500, "message": message})


def _expansions(request: web.Request) -> list[str]:
    expand = ",".join(request.query.getall("expand", []))
    return [item.strip() for item in expand.split(",") if item.strip()]


def _named_space_keys(state: GateState, request: web.Request, api_path: str) -> set[str]:
    keys = {key for value in request.query.getall("spaceKey", []) for key in value.split(",")}
    segments = api_path.strip("/").split("/")
    if len(segments) >= 2 and segments[0] == "space":
        keys.add(segments[1])
    by_content_id = len(segments) >= 2 and segments[0] == "content" and segments[1].isdigit()
    if by_content_id and state.content_space_key is not None:
        owner = state.content_space_key(segments[1])
        if owner is not None:
            keys.add(owner)
    for cql in request.query.getall("cql", []):
        for match in _CQL_SPACE.finditer(cql):
            for key in match.group(1).strip("()").split(","):
                keys.add(key.strip().strip("\"'"))
    return {key for key in keys if key}


def _restricted_space(
    state: GateState, rule: FaultRule, request: web.Request, api_path: str
) -> str | None:
    named = _named_space_keys(state, request, api_path)
    if rule.arg is not None:
        # CQL space keys are case-insensitive.
        chosen = {key.strip().upper() for key in rule.arg.split(",") if key.strip()}
        hits = sorted(key for key in named if key.upper() in chosen)
    elif state.space_restricted is not None:
        hits = sorted(key for key in named if state.space_restricted(key))
    else:
        hits = []
    return hits[0] if hits else None


def _requested_limit(request: web.Request) -> int:
    try:
        return int(request.query.get("limit", DEFAULT_PAGE_LIMIT))
    except ValueError:
        return DEFAULT_PAGE_LIMIT


def _conditional_response(
    state: GateState, rule: FaultRule, request: web.Request, api_path: str
) -> web.Response | None:
    """Return the fault response if the rule's condition holds for this request."""
    expansions = _expansions(request)
    if rule.kind == "403space":
        key = _restricted_space(state, rule, request, api_path)
        if key is None:
            return None
        # NOTE: the message text is modelled on Confluence's PermissionException; no
        # recorded body of this refusal was available.
        message = (
            "com.atlassian.confluence.api.service.exceptions.PermissionException: "
            f"Could not view space with key {key}"
        )
        if request.get(FLAVOUR_KEY) == "datacenter":
            return _datacenter_error(403, message, "Forbidden")
        return _json(403, {"statusCode": 403, "message": message})
    if rule.kind == "504limit":
        threshold = int(rule.arg) if rule.arg is not None else DEFAULT_BODY_LIMIT_THRESHOLD
        wants_body = any("body" in item.split(".") for item in expansions)
        if not wants_body or _requested_limit(request) <= threshold:
            return None
        return web.Response(status=504, text=_PROXY_504, content_type="text/html")
    if rule.kind == "500perm":
        wants_permissions = any(item.split(".")[-1] == "permissions" for item in expansions)
        user_id = request.get(USER_ID_KEY)
        is_admin = user_id is not None and user_id in state.admin_account_ids
        if request.get(FLAVOUR_KEY) != "datacenter" or not wants_permissions or is_admin:
            return None
        # NOTE: Data Center returns a 500 in place of a 403 here. No recorded body was
        # available, so this body follows Data Center's error shape.
        message = (
            "java.lang.NullPointerException: permission expansion failed for a user "
            "without Confluence administrator permission"
        )
        return _datacenter_error(500, message, "Internal Server Error")
    if rule.kind == "500expand":
        names = _expansion_names(rule.arg or DEFAULT_FAILING_EXPANSIONS)
        failing = next((item for item in expansions if not names.isdisjoint(item.split("."))), None)
        if failing is None:
            return None
        # NOTE: the body follows the error shape of each root; the message is modelled on
        # the server errors Confluence sends for a failing expansion, not recorded.
        message = f"java.lang.RuntimeException: failed to expand {failing}"
        if request.get(FLAVOUR_KEY) == "datacenter":
            return _datacenter_error(500, message, "Internal Server Error")
        return _json(500, {"statusCode": 500, "message": message})
    if rule.kind == "404ancestors":
        # /search prefixes Content expansions with "content.".
        prefixes = ("ancestors.restrictions", "content.ancestors.restrictions")
        if not any(item.startswith(prefixes) for item in expansions):
            return None
        content_id = rule.arg or "0"
        errors = [
            {
                "message": {
                    "translation": f"No content with id <ContentId{{id={content_id}}}> can be found"
                }
            }
        ]
        body = {
            "statusCode": 404,
            "data": {"authorized": False, "valid": False, "errors": errors, "successful": False},
        }
        return _json(404, body)
    return None


def _close_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def _send_truncated(
    request: web.Request, response: web.StreamResponse, body: bytes, fraction: float
) -> web.StreamResponse:
    """Send a prefix of ``body`` under its full Content-Length, then close the connection."""
    stream = web.StreamResponse(status=response.status, reason=response.reason)
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            stream.headers[name] = value
    stream.content_length = len(body)
    await stream.prepare(request)
    cut = int(len(body) * fraction)
    if cut:
        await stream.write(body[:cut])
    _close_connection(request)
    return stream


def _response_body(response: web.StreamResponse) -> bytes | None:
    if isinstance(response, web.Response) and isinstance(response.body, bytes | bytearray):
        return bytes(response.body)
    return None


def fault_middleware(state: GateState) -> Middleware:
    """Build the middleware that applies ``state.faults`` to API requests.

    Rules are tried in order. Latency rules delay and let later rules run; the first
    other rule that fires decides the response. Requests outside the API roots (no
    ``request[API_PATH_KEY]``) pass untouched.
    """

    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        api_path = request.get(API_PATH_KEY)
        if api_path is None or not state.faults:
            return await handler(request)
        api_path = str(api_path)
        after_handler: list[FaultRule] = []
        for rule in list(state.faults):
            if not rule.applies_to(request.method, api_path):
                continue
            if rule.kind in RESPONSE_KINDS:
                after_handler.append(rule)
                continue
            conditional: web.Response | None = None
            if rule.kind in CONDITIONAL_KINDS:
                conditional = _conditional_response(state, rule, request, api_path)
                if conditional is None:
                    continue
            if not rule.fires(state.rng):
                continue
            state.counters.count_fault(rule.kind)
            logger.info("injecting fault rule=%s path=%s", rule.describe(), request.path_qs)
            if rule.kind == "latency":
                low, high = _latency_range(rule.arg or "0")
                delay_ms = low if high == low else state.rng.uniform(low, high)
                await asyncio.sleep(delay_ms / 1000.0)
                continue
            if rule.kind == "drop":
                # Once the transport is closed, aiohttp fails to write this response and
                # treats it as a client disconnection, so nothing reaches the client.
                request[GATE_DROPPED_KEY] = True
                _close_connection(request)
                return web.Response(status=500)
            if conditional is not None:
                return conditional
            return _status_response(request, rule, state)

        response = await handler(request)
        for rule in after_handler:
            body = _response_body(response)
            if body is None:
                continue
            if rule.kind == "504bytes" and len(body) <= int(rule.arg or "0"):
                continue
            if not rule.fires(state.rng):
                continue
            state.counters.count_fault(rule.kind)
            logger.info("injecting fault rule=%s path=%s", rule.describe(), request.path_qs)
            if rule.kind == "504bytes":
                return web.Response(status=504, text=_PROXY_504, content_type="text/html")
            if rule.kind == "badjson":
                cut = body[: max(1, len(body) // 2)]
                return web.Response(
                    status=response.status, body=cut, content_type="application/json"
                )
            fraction = float(rule.arg) if rule.arg is not None else DEFAULT_TRUNCATE_FRACTION
            request[GATE_DROPPED_KEY] = True
            return await _send_truncated(request, response, body, fraction)
        return response

    return inject_faults
