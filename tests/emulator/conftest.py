"""Fixtures that run the real emulator on 127.0.0.1 (a free port) in a background thread.

``emulator`` is one shared, read-only server for the whole session. Tests that change the
site or the server settings use ``fresh_emulator``, which starts a server of their own.
``Api`` wraps one root of a server with the credentials that root accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from emulator.app import ServerThread
from emulator.config import ServerOptions

API_TOKEN = "emulator-test-token"
USER_EMAIL = "crawler@example.com"


def make_options(**overrides: Any) -> ServerOptions:
    """Return test options: a small generated site on a free port, control API on."""
    values: dict[str, Any] = {
        "port": 0,
        "seed": 11,
        "pages": 160,
        "spaces": 3,
        "control": True,
        "api_token": API_TOKEN,
        "user_email": USER_EMAIL,
        "search_short_page_rate": 0.3,
        "context_path": "/confluence",
    }
    values.update(overrides)
    return ServerOptions(**values)


@dataclass
class Api:
    """One root of a running emulator, with a session that authenticates on it."""

    server: ServerThread
    flavour: str
    session: requests.Session

    @property
    def base(self) -> str:
        """The ``_links.base`` of this root, e.g. ``http://127.0.0.1:PORT/wiki``."""
        return self.server.urls["gateway" if self.flavour == "gateway" else self.flavour]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        """Return the absolute URL of an API path such as ``/content``."""
        return f"{self.base}/rest/api{path}"

    def get(self, path: str, **params: Any) -> requests.Response:
        """GET an API path with query parameters."""
        return self.session.get(self.url(path), params=params, timeout=30)

    def get_json(self, path: str, **params: Any) -> Any:
        """GET an API path and return its JSON body, failing on any status but 200."""
        response = self.get(path, **params)
        assert response.status_code == 200, f"{response.status_code} {response.text[:500]}"
        return response.json()

    def follow(self, link: str) -> requests.Response:
        """GET a context-relative ``_links.next``/``prev`` link, prefixed with the base."""
        return self.session.get(self.base + link, timeout=30)

    def control(self, method: str, path: str, body: Any = None) -> requests.Response:
        """Call the control API, which needs no credentials."""
        return requests.request(method, f"{self.origin}/_emulator{path}", json=body, timeout=30)


def api_for(server: ServerThread, flavour: str) -> Api:
    """Return an Api for one root of ``server`` with the credentials it accepts."""
    session = requests.Session()
    credentials = server.credentials
    if flavour == "datacenter":
        session.auth = (credentials.username, credentials.password)
    else:
        session.auth = (credentials.email, credentials.api_token)
    return Api(server=server, flavour=flavour, session=session)


@pytest.fixture(scope="session")
def emulator() -> Iterator[ServerThread]:
    """A shared emulator; tests must not change its site or settings."""
    with ServerThread(make_options()) as server:
        yield server


@pytest.fixture
def fresh_emulator() -> Iterator[ServerThread]:
    """An emulator of the test's own, which it may change."""
    with ServerThread(make_options()) as server:
        yield server


@pytest.fixture(params=["cloud", "gateway", "datacenter"])
def any_root(request: pytest.FixtureRequest, emulator: ServerThread) -> Api:
    """Each of the three roots of the shared emulator in turn."""
    return api_for(emulator, str(request.param))


@pytest.fixture
def cloud(emulator: ServerThread) -> Api:
    """The Cloud site root of the shared emulator."""
    return api_for(emulator, "cloud")


@pytest.fixture
def datacenter(emulator: ServerThread) -> Api:
    """The Data Center root of the shared emulator."""
    return api_for(emulator, "datacenter")
