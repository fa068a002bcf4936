"""Authentication of the emulator's three API roots, and the OAuth 2.0 (3LO) token server.

Each root authenticates the way its real counterpart does:

- Cloud site domain (flavour ``cloud``): Basic with email and API token. A rejected or
  missing credential gets Cloud's 403 JSON body, an unparsable Basic value or a bearer
  token gets Tomcat's 401 HTML page, and a scoped API token is refused here because it
  works only through the gateway.
- OAuth gateway (flavour ``gateway``): OAuth bearer access tokens, or Basic with a
  scoped or unscoped API token. Bad or expired tokens get
  ``{"code":401,"message":"Unauthorized"}``, a missing scope gets
  ``{"code":401,"message":"Unauthorized; scope does not match"}``, and with
  ``GateState.v1_gone`` the deprecated v1 routes return 410 GoneException while CQL
  search and ``user/current`` keep working.
- Data Center (flavour ``datacenter``): a personal access token as ``Bearer`` or Basic
  with username and password. A wrong PAT counts as anonymous when anonymous access is
  on.

The middleware sets ``request[USER_ID_KEY]`` (an account id, None for anonymous),
``request[AUTH_KIND_KEY]`` (``basic``, ``oauth``, ``pat`` or ``anonymous``) and, for OAuth
callers, ``request[CLIENT_ID_KEY]``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from emulator.gate import CloudCredential, GateState, OAuthError
from emulator.keys import API_PATH_KEY, AUTH_KIND_KEY, CLIENT_ID_KEY, FLAVOUR_KEY, USER_ID_KEY

logger = logging.getLogger(__name__)

TOMCAT_401_PAGE = (
    '<!doctype html><html lang="en"><head><title>HTTP Status 401 \u2013 Unauthorized</title>'
    '<style type="text/css">body {font-family:Tahoma,Arial,sans-serif;} h1, h2, h3, b '
    "{color:white;background-color:#525D76;} h1 {font-size:22px;} h2 {font-size:16px;} "
    "h3 {font-size:14px;} p {font-size:12px;} a {color:black;} .line {height:1px;"
    "background-color:#525D76;border:none;}</style></head><body>"
    '<h1>HTTP Status 401 \u2013 Unauthorized</h1><hr class="line" />'
    "<p><b>Type</b> Status Report</p><p><b>Description</b> The request has not been "
    "applied to the target resource because it lacks valid authentication credentials "
    'for that resource.</p><hr class="line" /><h3>Apache Tomcat</h3></body></html>'
)
CLOUD_FORBIDDEN_MESSAGE = (
    "com.atlassian.confluence.mvc.rest.common.exception.StacklessResponseStatusException: "
    '403 FORBIDDEN "Request rejected because caller cannot access Confluence"'
)
GONE_MESSAGE = (
    "com.atlassian.confluence.api.service.exceptions.pagesmodes.GoneException: "
    "This deprecated endpoint has been removed."
)
DATACENTER_UNAUTHORIZED_MESSAGE = "Client must be authenticated to access this resource."
# Headers Cloud sent on deprecated v1 routes before their removal.
DEPRECATION_HEADERS = {
    "Deprecation": "Wed, 1 Mar 2023 00:00:00 GMT",
    "Warning": '299 - "Deprecated API, will be removed on Mon, 31 Mar 2025 00:00:00 GMT"',
}

_GATEWAY_PATH = re.compile(r"^/ex/confluence/([^/]+)/")

# Scopes

CONTENT_SUMMARY = "read:confluence-content.summary"
CONTENT_ALL = "read:confluence-content.all"
SPACE_SUMMARY = "read:confluence-space.summary"
SEARCH = "search:confluence"
USER = "read:confluence-user"
ATTACHMENT_DOWNLOAD = "readonly:content.attachment:confluence"
PROPERTIES = "read:confluence-props"
WRITE_CONTENT = "write:confluence-content"
WRITE_SPACE = "write:confluence-space"


@dataclass(frozen=True)
class RouteRule:
    """OAuth scopes and deprecation status of one v1 route pattern."""

    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    template: str
    classic_scope: str
    granular_scopes: tuple[str, ...]
    deprecated: bool  # removed on the OAuth gateway once Cloud enforced the v1 deprecation
    needs_all_for_body: bool = False


def _rule(
    methods: str,
    pattern: str,
    template: str,
    classic: str,
    granular: Iterable[str],
    *,
    deprecated: bool = False,
    body: bool = False,
) -> RouteRule:
    return RouteRule(
        methods=tuple(methods.split(",")),
        pattern=re.compile(pattern),
        template=template,
        classic_scope=classic,
        granular_scopes=tuple(granular),
        deprecated=deprecated,
        needs_all_for_body=body,
    )


_ID = r"[^/]+"
# First match wins, so the download route comes before the generic child route. The
# classic scopes come from Atlassian's Cloud v1 OpenAPI document (x-atlassian-oauth2-scopes,
# early 2024); the deprecated set is the one Cloud removed from the OAuth gateway.
ROUTE_RULES: tuple[RouteRule, ...] = (
    _rule("GET", r"^/search$", "/search", SEARCH, ["read:content-details:confluence"]),
    _rule(
        "GET", r"^/content/search$", "/content/search", SEARCH, ["read:content-details:confluence"]
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/child/attachment/{_ID}/download$",
        "/content/{id}/child/attachment/{attachmentId}/download",
        ATTACHMENT_DOWNLOAD,
        ["read:attachment:confluence"],
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/restriction(/.*)?$",
        "/content/{id}/restriction",
        CONTENT_ALL,
        ["read:content-details:confluence"],
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/descendant(/{_ID})?$",
        "/content/{id}/descendant",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
        body=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/child(/{_ID})?$",
        "/content/{id}/child",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
        deprecated=True,
        body=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/label$",
        "/content/{id}/label",
        CONTENT_SUMMARY,
        ["read:label:confluence"],
        deprecated=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/history$",
        "/content/{id}/history",
        CONTENT_SUMMARY,
        ["read:content.metadata:confluence"],
        deprecated=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/version(/{_ID})?$",
        "/content/{id}/version",
        CONTENT_SUMMARY,
        ["read:content.metadata:confluence"],
        deprecated=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/property(/.*)?$",
        "/content/{id}/property",
        PROPERTIES,
        ["read:content.property:confluence"],
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}/state$",
        "/content/{id}/state",
        CONTENT_SUMMARY,
        ["read:content.metadata:confluence"],
    ),
    _rule(
        "GET",
        r"^/content$",
        "/content",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
        deprecated=True,
        body=True,
    ),
    _rule(
        "GET",
        rf"^/content/{_ID}$",
        "/content/{id}",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
        deprecated=True,
        body=True,
    ),
    _rule(
        "GET",
        rf"^/space/{_ID}/state/content$",
        "/space/{spaceKey}/state/content",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
    ),
    _rule(
        "GET",
        rf"^/space/{_ID}/content(/{_ID})?$",
        "/space/{spaceKey}/content",
        CONTENT_SUMMARY,
        ["read:content-details:confluence"],
        deprecated=True,
        body=True,
    ),
    _rule(
        "GET",
        rf"^/space(/{_ID})?$",
        "/space",
        SPACE_SUMMARY,
        ["read:space-details:confluence"],
        deprecated=True,
    ),
    _rule("GET", r"^/user(/.*)?$", "/user", USER, ["read:user:confluence"]),
    _rule("GET", r"^/label$", "/label", CONTENT_SUMMARY, ["read:label:confluence"]),
    _rule(
        "POST", r"^/content$", "/content", WRITE_CONTENT, ["write:page:confluence"], deprecated=True
    ),
    _rule(
        "POST,PUT,DELETE",
        r"^/content/.+$",
        "/content/{id}",
        WRITE_CONTENT,
        ["write:page:confluence"],
    ),
    _rule("POST,PUT,DELETE", r"^/space(/.*)?$", "/space", WRITE_SPACE, ["write:space:confluence"]),
)


def match_route(method: str, api_path: str) -> RouteRule | None:
    """Return the first route rule for ``method`` and ``api_path``, or None."""
    lookup = "GET" if method == "HEAD" else method
    for rule in ROUTE_RULES:
        if lookup in rule.methods and rule.pattern.match(api_path):
            return rule
    return None


def _wants_body(expansions: Iterable[str]) -> bool:
    return any("body" in item.split(".") for item in expansions)


def scope_alternatives(
    method: str, api_path: str, expansions: Iterable[str] = ()
) -> list[set[str]]:
    """Return the scope sets of which a caller needs any one; empty means no scope is needed.

    Bodies need ``read:confluence-content.all`` on top of the route's classic scope, as
    in Atlassian's scope descriptions.
    """
    rule = match_route(method, api_path)
    if rule is None:
        return []
    classic = {rule.classic_scope}
    if rule.needs_all_for_body and _wants_body(expansions):
        classic.add(CONTENT_ALL)
    return [classic, set(rule.granular_scopes)]


def is_deprecated_v1(method: str, api_path: str) -> bool:
    rule = match_route(method, api_path)
    return rule is not None and rule.deprecated


# Responses


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def cloud_forbidden() -> web.Response:
    return _json(403, {"statusCode": 403, "message": CLOUD_FORBIDDEN_MESSAGE})


def cloud_unauthorized_page(request: web.Request) -> web.Response:
    headers = {"WWW-Authenticate": f'OAuth realm="{_origin(request)}/wiki"'}
    return web.Response(
        status=401,
        text=TOMCAT_401_PAGE,
        content_type="text/html",
        charset="utf-8",
        headers=headers,
    )


def gateway_unauthorized(message: str = "Unauthorized") -> web.Response:
    return _json(401, {"code": 401, "message": message})


def gone() -> web.Response:
    data = {
        "authorized": True,
        "valid": True,
        "allowedInReadOnlyMode": True,
        "errors": [],
        "successful": False,
    }
    return _json(410, {"statusCode": 410, "data": data, "message": GONE_MESSAGE})


def datacenter_unauthorized(*, failed_login: bool) -> web.Response:
    data = {
        "authorized": False,
        "valid": True,
        "allowedInReadOnlyMode": True,
        "errors": [],
        "successful": False,
    }
    body = {
        "statusCode": 401,
        "data": data,
        "message": DATACENTER_UNAUTHORIZED_MESSAGE,
        "reason": "Unauthorized",
    }
    headers = {"WWW-Authenticate": 'Basic realm="Confluence"'}
    if failed_login:
        # Seraph, the Confluence Data Center login filter, marks rejected logins this way.
        headers["X-Seraph-LoginReason"] = "AUTHENTICATED_FAILED"
    return _json(401, body, headers)


# Credentials


@dataclass(frozen=True)
class _Authorization:
    scheme: str  # lower case
    credentials: str


def _read_authorization(request: web.Request) -> _Authorization | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return _Authorization(scheme=scheme.lower(), credentials=credentials.strip())


def _decode_basic(credentials: str) -> tuple[str, str] | None:
    """Return (user, secret) from a Basic value, or None when it does not decode."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, secret = decoded.partition(":")
    if not colon or not user:
        return None
    return user, secret


def _find_cloud_credential(state: GateState, email: str, token: str) -> CloudCredential | None:
    for credential in state.cloud_credentials:
        if credential.email.lower() == email.lower() and credential.api_token == token:
            return credential
    return None


def _set_identity(
    request: web.Request, user_id: str | None, kind: str, client_id: str | None = None
) -> None:
    request[USER_ID_KEY] = user_id
    request[AUTH_KIND_KEY] = kind
    request[CLIENT_ID_KEY] = client_id


def _authenticate_cloud_site(state: GateState, request: web.Request) -> web.Response | None:
    authorization = _read_authorization(request)
    if authorization is None:
        if state.anonymous_access:
            _set_identity(request, None, "anonymous")
            return None
        return cloud_forbidden()
    if authorization.scheme != "basic":
        # OAuth tokens work only through api.atlassian.com, so the site domain returns 401.
        return cloud_unauthorized_page(request)
    decoded = _decode_basic(authorization.credentials)
    if decoded is None:
        return cloud_unauthorized_page(request)
    credential = _find_cloud_credential(state, *decoded)
    if credential is None:
        return cloud_forbidden()
    if credential.scoped:
        return cloud_unauthorized_page(request)
    _set_identity(request, credential.account_id, "basic")
    return None


def _gateway_cloud_id(request: web.Request) -> str | None:
    cloud_id = request.match_info.get("cloudId")
    if cloud_id is not None:
        return cloud_id
    match = _GATEWAY_PATH.match(request.path)
    return match.group(1) if match else None


def _authenticate_gateway(state: GateState, request: web.Request) -> web.Response | None:
    authorization = _read_authorization(request)
    if authorization is None:
        return gateway_unauthorized()
    granted: set[str] | None  # None: an unscoped API token, which no scope check applies to
    if authorization.scheme == "bearer":
        grant = state.tokens.authenticate(authorization.credentials, state.clock())
        if grant is None:
            return gateway_unauthorized()
        _set_identity(request, grant.account_id, "oauth", grant.client_id)
        granted = set(grant.scopes)
    elif authorization.scheme == "basic":
        decoded = _decode_basic(authorization.credentials)
        credential = _find_cloud_credential(state, *decoded) if decoded else None
        if credential is None:
            return gateway_unauthorized()
        _set_identity(request, credential.account_id, "basic")
        granted = set(credential.scopes) if credential.scoped else None
    else:
        return gateway_unauthorized()

    # NOTE: no recorded gateway response for a foreign cloud id was available, so this
    # returns the gateway's 401 for a token that is not valid for the site.
    if _gateway_cloud_id(request) != state.cloud_id:
        return gateway_unauthorized()

    api_path = str(request[API_PATH_KEY])
    # The removal applies to OAuth apps: an API token sent through the gateway was
    # measured reading `/space/{key}` after the gateway had removed it for OAuth callers.
    oauth = authorization.scheme == "bearer"
    if state.v1_gone and oauth and is_deprecated_v1(request.method, api_path):
        return gone()
    if granted is not None:
        expansions = ",".join(request.query.getall("expand", [])).split(",")
        alternatives = scope_alternatives(request.method, api_path, expansions)
        if alternatives and not any(needed <= granted for needed in alternatives):
            logger.info(
                "scope check failed path=%s needed=%s granted=%s",
                api_path,
                " or ".join(",".join(sorted(needed)) for needed in alternatives),
                ",".join(sorted(granted)),
            )
            return gateway_unauthorized("Unauthorized; scope does not match")
    return None


def _authenticate_datacenter(state: GateState, request: web.Request) -> web.Response | None:
    authorization = _read_authorization(request)
    if authorization is None:
        if state.anonymous_access:
            _set_identity(request, None, "anonymous")
            return None
        return datacenter_unauthorized(failed_login=False)
    if authorization.scheme == "bearer":
        account_id = state.personal_access_tokens.get(authorization.credentials)
        if account_id is not None:
            _set_identity(request, account_id, "pat")
            return None
        # Data Center treats an unknown PAT as no credential at all.
        if state.anonymous_access:
            _set_identity(request, None, "anonymous")
            return None
        return datacenter_unauthorized(failed_login=False)
    if authorization.scheme == "basic":
        decoded = _decode_basic(authorization.credentials)
        if decoded is not None:
            username, password = decoded
            for user in state.datacenter_users:
                if user.username == username and user.password == password:
                    _set_identity(request, user.account_id, "basic")
                    return None
        return datacenter_unauthorized(failed_login=True)
    return datacenter_unauthorized(failed_login=False)


def auth_middleware(state: GateState) -> Middleware:
    """Build the middleware that authenticates API requests per ``request[FLAVOUR_KEY]``.

    The server's routing middleware must run first and set ``request[FLAVOUR_KEY]`` and
    ``request[API_PATH_KEY]``; requests without them (such as the OAuth routes) pass
    untouched.
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        flavour = request.get(FLAVOUR_KEY)
        if flavour is None or request.get(API_PATH_KEY) is None:
            return await handler(request)
        if flavour == "cloud":
            refusal = _authenticate_cloud_site(state, request)
        elif flavour == "gateway":
            refusal = _authenticate_gateway(state, request)
        elif flavour == "datacenter":
            refusal = _authenticate_datacenter(state, request)
        else:
            raise ValueError(
                f"request flavour {flavour!r} is unknown; the routing middleware must set "
                "'cloud', 'gateway' or 'datacenter'"
            )
        if refusal is not None:
            logger.debug(
                "request rejected flavour=%s status=%d method=%s path=%s",
                flavour,
                refusal.status,
                request.method,
                request.path,
            )
            return refusal
        response = await handler(request)
        deprecated = flavour != "datacenter" and is_deprecated_v1(
            request.method, str(request[API_PATH_KEY])
        )
        if deprecated and not response.prepared:
            response.headers.update(DEPRECATION_HEADERS)
        return response

    return authenticate


# OAuth token server


async def _read_token_request(request: web.Request) -> dict[str, str]:
    """Read the token request parameters from a JSON or form body."""
    if request.content_type == "application/json":
        try:
            payload = await request.json(loads=orjson.loads)
        except orjson.JSONDecodeError:
            raise OAuthError(400, "invalid_request", "The request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise OAuthError(400, "invalid_request", "The request body must be a JSON object")
        return {str(key): str(value) for key, value in payload.items() if value is not None}
    form = await request.post()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _require(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise OAuthError(400, "invalid_request", f"Missing required parameter: {name}")
    return value


def _exchange(state: GateState, params: dict[str, str]) -> dict[str, Any]:
    grant_type = _require(params, "grant_type")
    client_id = _require(params, "client_id")
    client_secret = params.get("client_secret", "")
    if state.oauth_clients.get(client_id) != client_secret:
        # NOTE: Atlassian's body for a wrong client secret is not recorded; this is the
        # access_denied form its authorization server uses for rejected clients.
        raise OAuthError(401, "access_denied", "Unauthorized")
    now = state.clock()
    if grant_type == "refresh_token":
        return state.tokens.refresh(
            client_id=client_id, refresh_token=_require(params, "refresh_token"), now=now
        )
    if grant_type == "authorization_code":
        return state.tokens.exchange_code(
            client_id=client_id,
            code=_require(params, "code"),
            redirect_uri=params.get("redirect_uri"),
            now=now,
        )
    raise OAuthError(
        400,
        "unsupported_grant_type",
        f"Unsupported grant type: {grant_type}; use authorization_code or refresh_token",
    )


def _bearer_grant_scopes(state: GateState, request: web.Request) -> list[str] | None:
    authorization = _read_authorization(request)
    if authorization is None or authorization.scheme != "bearer":
        return None
    grant = state.tokens.authenticate(authorization.credentials, state.clock())
    return None if grant is None else list(grant.scopes)


def add_oauth_routes(app: web.Application, state: GateState) -> None:
    """Register ``POST /oauth/token`` and ``GET /oauth/token/accessible-resources``.

    On Cloud they live on auth.atlassian.com and api.atlassian.com; the emulator serves
    them at the root of its own origin.
    """

    async def token(request: web.Request) -> web.Response:
        params: dict[str, str] = {}
        try:
            params = await _read_token_request(request)
            response = _exchange(state, params)
        except OAuthError as exc:
            logger.info(
                "token request rejected grant_type=%s status=%d error=%s",
                params.get("grant_type"),
                exc.status,
                exc.error,
            )
            return _json(exc.status, exc.body())
        logger.info(
            "token issued grant_type=%s client_id=%s",
            params.get("grant_type"),
            params.get("client_id"),
        )
        return _json(200, response, {"Cache-Control": "no-store"})

    async def accessible_resources(request: web.Request) -> web.Response:
        scopes = _bearer_grant_scopes(state, request)
        if scopes is None:
            return gateway_unauthorized()
        site_url = state.site_url or _origin(request)
        resources = [
            {
                "id": state.cloud_id,
                "name": state.site_name,
                "url": site_url,
                "scopes": scopes,
                "avatarUrl": f"{site_url}/wiki/images/logo/default-space-logo.svg",
            }
        ]
        return _json(200, resources)

    app.router.add_post("/oauth/token", token)
    app.router.add_get("/oauth/token/accessible-resources", accessible_resources)
