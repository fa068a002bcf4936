"""Application factory of the emulator, and helpers to run it in a thread or a process."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import threading

from aiohttp import web

from emulator.auth import add_oauth_routes
from emulator.config import OptionError, ServerOptions
from emulator.control import add_control_routes
from emulator.corpus import import_corpus
from emulator.faults import parse_fault_rule
from emulator.gate import CloudCredential, DataCenterUser, GateState, gate_middlewares
from emulator.generator import generate_site
from emulator.keys import CREDENTIALS_KEY, GATE_KEY, LATENCY_KEY, STATE_KEY
from emulator.limits import RateLimitSettings
from emulator.model import Site, User
from emulator.routes import (
    error_middleware,
    latency_middleware,
    register_routes,
    roots_for,
    routing_middleware,
)
from emulator.routes_common import (
    Credentials,
    EmulatorState,
    Latency,
)

logger = logging.getLogger(__name__)

OAUTH_CLIENT_ID = "emulator-client"


def build_site(options: ServerOptions) -> Site:
    """Build the site the options describe: seeded generator or imported HTML corpus."""
    if options.site == "corpus":
        return _import_corpus(options)
    try:
        return generate_site(
            options.seed,
            max(1, options.pages),
            spaces=options.spaces or None,
            time_zone=options.time_zone,
            site_name=options.site_name,
        )
    except ValueError as error:
        # The generator rejects impossible sizes, such as fewer pages than spaces.
        raise OptionError(f"invalid --pages/--spaces: {error}") from error


def _import_corpus(options: ServerOptions) -> Site:
    assert options.corpus is not None
    return import_corpus(
        options.corpus,
        seed=options.seed,
        time_zone=options.time_zone,
        site_name=options.site_name,
    )


READER_ACCOUNT_ID = "5b10ac8d82e05b22cc7d4ef6"


def _add_reader(site: Site, email: str) -> User:
    """Add the second user to the site, or return it when the site already has it.

    Generated sites put only their own users into read restrictions, so this user is left
    out of every restricted item and its subtree.
    """
    existing = site.user(READER_ACCOUNT_ID)
    if existing is not None:
        return existing
    return site.add_user(
        User(
            account_id=READER_ACCOUNT_ID,
            display_name="Emulator Reader",
            email=email,
            time_zone="America/New_York",
            username="reader",
            user_key="8a7f808a7a1b2c3d017a1b2c3d4e0002",
        )
    )


def build_gate(options: ServerOptions, site: Site) -> tuple[GateState, Credentials]:
    """Create the gate state: credentials of the API user, limits, faults and site hooks."""
    user = site.user(site.current_user_id)
    assert user is not None, "the site has no API user"
    # The API user signs in with this email, so `/user/current` must show the same one.
    user.email = options.user_email
    reader = _add_reader(site, options.reader_email)
    credentials = Credentials(
        email=options.user_email,
        api_token=options.api_token,
        username=user.username,
        password=options.api_token,
        personal_access_token=options.api_token,
        oauth_client_id=OAUTH_CLIENT_ID,
        oauth_client_secret=secrets.token_urlsafe(18),
        account_id=user.account_id,
        reader_email=reader.email,
        reader_username=reader.username,
        reader_token=options.reader_api_token,
        reader_account_id=reader.account_id,
    )
    gate = GateState(cloud_id=options.cloud_id, site_name=options.site_name)
    gate.add_cloud_credential(
        CloudCredential(
            email=credentials.email,
            api_token=credentials.api_token,
            account_id=credentials.account_id,
        )
    )
    gate.datacenter_users.append(
        DataCenterUser(
            username=credentials.username,
            password=credentials.password,
            account_id=credentials.account_id,
        )
    )
    gate.personal_access_tokens[credentials.personal_access_token] = credentials.account_id
    gate.add_cloud_credential(
        CloudCredential(
            email=reader.email,
            api_token=options.reader_api_token,
            account_id=reader.account_id,
        )
    )
    gate.datacenter_users.append(
        DataCenterUser(
            username=reader.username,
            password=options.reader_api_token,
            account_id=reader.account_id,
        )
    )
    gate.personal_access_tokens[options.reader_api_token] = reader.account_id
    gate.add_oauth_client(credentials.oauth_client_id, credentials.oauth_client_secret)
    gate.admin_account_ids.add(credentials.account_id)
    gate.v1_gone = options.v1_gone
    gate.anonymous_access = options.anonymous_access
    gate.clock = site.now
    gate.reseed_faults(options.seed)
    if options.rate_limit is not None:
        gate.rate_limit = RateLimitSettings(
            enabled=True,
            rate_per_second=options.rate_limit,
            burst=options.burst if options.burst is not None else max(1, round(options.rate_limit)),
        )
    for rule in options.faults:
        gate.add_fault(parse_fault_rule(rule))

    def space_restricted(key: str) -> bool:
        space = site.space(key)
        return space is not None and space.restricted_for_api

    def content_space_key(content_id: str) -> str | None:
        content = site.content(content_id)
        return content.space_key if content is not None else None

    gate.space_restricted = space_restricted
    gate.content_space_key = content_space_key
    return gate, credentials


def create_app(options: ServerOptions, site: Site | None = None) -> web.Application:
    """Build the aiohttp application for these options (and this site, when given)."""
    options.validate()
    if site is None:
        site = build_site(options)
    site.time_zone = options.time_zone

    gate, credentials = build_gate(options, site)
    latency = Latency(options.latency_ms, options.latency_jitter_ms, random.Random(options.seed))
    roots = roots_for(options.serves_cloud, options.serves_datacenter, options.context_path)
    app = web.Application(
        middlewares=[
            routing_middleware(roots),
            *gate_middlewares(gate),
            latency_middleware(latency.draw),
            error_middleware,
        ],
        client_max_size=4 * 1024 * 1024,
    )

    app[STATE_KEY] = EmulatorState(
        site=site,
        options=options,
        short_page_rate=options.search_short_page_rate,
        dc_quirks=options.dc_quirks,
        dc_limit_cap=options.dc_limit_cap,
        cloud_quirks=options.cloud_quirks,
    )
    site.index_lag = options.search_lag
    app[GATE_KEY] = gate
    app[LATENCY_KEY] = latency
    app[CREDENTIALS_KEY] = credentials

    register_routes(app, roots)
    add_oauth_routes(app, gate)
    if options.control:
        add_control_routes(app)
    return app


def base_urls(options: ServerOptions, host: str, port: int) -> dict[str, str]:
    """Return the base URL of every served root (what a client takes as its site URL)."""
    origin = f"http://{host}:{port}"
    urls: dict[str, str] = {}
    if options.serves_cloud:
        urls["cloud"] = origin + "/wiki"
        urls["gateway"] = f"{origin}/ex/confluence/{options.cloud_id}/wiki"
    if options.serves_datacenter:
        urls["datacenter"] = origin + options.context_path
    if options.control:
        urls["control"] = origin + "/_emulator"
    return urls


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app`` on ``host:port`` and return the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    tcp_site = web.TCPSite(runner, host, port, backlog=1024)
    await tcp_site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else port
    return runner, bound


class ServerThread:
    """The emulator served from a background thread with its own event loop.

    Tests and benchmarks use it to run the real server in-process:
    ``with ServerThread(options) as server: requests.get(server.urls["cloud"] + ...)``.
    The site must only be changed from the server thread (through the control API) or
    while no request is in flight.
    """

    def __init__(self, options: ServerOptions, site: Site | None = None) -> None:
        self.options = options
        self.app = create_app(options, site)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="confluence-emulator", daemon=True)

    @property
    def site(self) -> Site:
        return self.app[STATE_KEY].site

    @property
    def gate(self) -> GateState:
        return self.app[GATE_KEY]

    @property
    def credentials(self) -> Credentials:
        return self.app[CREDENTIALS_KEY]

    @property
    def urls(self) -> dict[str, str]:
        return base_urls(self.options, self.options.host, self.port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.port = self._loop.run_until_complete(
                start_site(self.app, self.options.host, self.options.port)
            )
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> ServerThread:
        """Start the thread and wait until the server accepts connections."""
        self._thread.start()
        self._ready.wait(timeout=60)
        if self._error is not None:
            raise RuntimeError(
                f"the emulator failed to start on {self.options.host}:{self.options.port}: "
                f"{self._error}"
            ) from self._error
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
