"""Typed keys of the values the emulator stores on its application and on each request.

aiohttp 3.12+ warns (``NotAppKeyWarning``) when a request or an application stores a value
under a plain string, so every shared value has a typed key here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from emulator.gate import GateState
    from emulator.routes_common import Credentials, EmulatorState, Latency
    from emulator.shapes import ShapeContext

# Application values, set once by `create_app`.
STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator")
GATE_KEY: web.AppKey[GateState] = web.AppKey("gate")
LATENCY_KEY: web.AppKey[Latency] = web.AppKey("latency")
CREDENTIALS_KEY: web.AppKey[Credentials] = web.AppKey("credentials")

# Request values set by the routing middleware: the root (`cloud`, `gateway` or
# `datacenter`), the path after `/rest/api`, the context-relative path `/rest/api/...`
# and the context that shapes response bodies.
FLAVOUR_KEY: web.RequestKey[str] = web.RequestKey("flavour")
API_PATH_KEY: web.RequestKey[str] = web.RequestKey("api_path")
API_PATH_FULL_KEY: web.RequestKey[str] = web.RequestKey("api_path_full")
SHAPE_KEY: web.RequestKey[ShapeContext] = web.RequestKey("shape")

# Request values set by the authentication middleware: the caller's account id (None for
# an anonymous caller), how it authenticated (`basic`, `oauth`, `pat` or `anonymous`) and,
# for OAuth callers, the client id.
USER_ID_KEY: web.RequestKey[str | None] = web.RequestKey("user_id")
AUTH_KIND_KEY: web.RequestKey[str] = web.RequestKey("auth_kind")
CLIENT_ID_KEY: web.RequestKey[str | None] = web.RequestKey("client_id")

# Request values set on the way out: the number of objects a JSON response carries (the
# points rate limit charges for them) and whether a fault dropped the connection.
OBJECTS_RETURNED_KEY: web.RequestKey[int] = web.RequestKey("objects_returned")
GATE_DROPPED_KEY: web.RequestKey[bool] = web.RequestKey("gate_dropped")
