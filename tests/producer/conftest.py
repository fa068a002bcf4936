"""Fixtures that run the real emulator for producer tests and build sources pointing at it.

``start_emulator(**options)`` (from the ``start_emulator`` fixture) starts an emulator on
127.0.0.1 with a free port and the given ``ServerOptions`` overrides and returns an
``EmulatorSite``. The site builds ``SourceConfig`` objects for any deployment through the
real sources-file validation, with its secrets written to files under the test's
``tmp_path``, and wraps the control API. Every emulator started by a test is stopped at
its end.

Example::

    def test_something(start_emulator):
        site = start_emulator(rate_limit=5.0, dc_quirks=True)
        source = site.source("datacenter", auth="pat", page_size=25)
        with ConfluenceClient(source) as client:
            client.get("/space")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator.app import ServerThread
from emulator.config import ServerOptions
from producer.config import SourceConfig, parse_sources

API_TOKEN = "producer-test-token"
USER_EMAIL = "crawler@example.com"
OAUTH_SCOPES = (
    "read:confluence-space.summary",
    "read:confluence-content.summary",
    "read:confluence-content.all",
    "search:confluence",
    "read:confluence-user",
    "offline_access",
)


def emulator_options(**overrides: Any) -> ServerOptions:
    """Return test options: a small generated site on a free port, control API on."""
    values: dict[str, Any] = {
        "port": 0,
        "seed": 7,
        "pages": 120,
        "spaces": 3,
        "control": True,
        "api_token": API_TOKEN,
        "user_email": USER_EMAIL,
        "context_path": "/confluence",
    }
    values.update(overrides)
    return ServerOptions(**values)


@dataclass
class EmulatorSite:
    """A running emulator with helpers to build sources and call the control API."""

    server: ServerThread
    folder: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def urls(self) -> dict[str, str]:
        """``_links.base`` of every served root: ``cloud``, ``gateway``, ``datacenter``."""
        return self.server.urls

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_emulator{path}`` and return its JSON; fails the test on an error status."""
        response = requests.request(method, f"{self.origin}/_emulator{path}", json=body, timeout=30)
        assert response.status_code < 400, f"{method} {path}: {response.text[:500]}"
        return response.json()

    def oauth_grant(self, scopes: tuple[str, ...] = OAUTH_SCOPES) -> dict[str, Any]:
        """Create an OAuth consent for the emulator's client and return its tokens."""
        tokens: dict[str, Any] = self.control("POST", "/oauth/grant", {"scopes": list(scopes)})
        return tokens

    def write_secret(self, name: str, value: str) -> Path:
        path = self.folder / name
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def source_table(
        self,
        deployment: str = "cloud",
        *,
        auth: str | None = None,
        scopes: tuple[str, ...] = OAUTH_SCOPES,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Return the sources-file table of a source for this emulator (secrets in files)."""
        credentials = self.server.credentials
        method = (
            auth or {"cloud": "basic", "cloud-oauth": "oauth2", "datacenter": "pat"}[deployment]
        )
        table: dict[str, Any] = {
            "deployment": deployment,
            "base_url": self.origin,
            "rate_limit": 1000.0,
            "burst": 100,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 2.0,
            "request_timeout": 10.0,
        }
        if deployment == "datacenter":
            table["base_url"] = self.urls["datacenter"]
        if deployment == "cloud-oauth":
            table["cloud_id"] = self.server.options.cloud_id
        auth_table: dict[str, Any] = {"method": method}
        if method == "basic" and deployment == "datacenter":
            auth_table["username"] = credentials.username
            auth_table["token_file"] = str(self.write_secret("password", credentials.password))
        elif method == "basic":
            auth_table["username"] = credentials.email
            auth_table["token_file"] = str(self.write_secret("api-token", credentials.api_token))
        elif method == "pat":
            auth_table["token_file"] = str(
                self.write_secret("pat", credentials.personal_access_token)
            )
        else:
            grant = self.oauth_grant(scopes)
            auth_table["client_id_file"] = str(
                self.write_secret("client-id", credentials.oauth_client_id)
            )
            auth_table["client_secret_file"] = str(
                self.write_secret("client-secret", credentials.oauth_client_secret)
            )
            auth_table["refresh_token_file"] = str(
                self.write_secret("refresh-token", grant["refresh_token"])
            )
            auth_table["token_url"] = f"{self.origin}/oauth/token"
            auth_table["scopes"] = list(scopes)
        table["auth"] = auth_table
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(table.get(key), dict):
                table[key] = {**table[key], **value}
            else:
                table[key] = value
        return table

    def source(
        self,
        deployment: str = "cloud",
        *,
        source_id: str = "test",
        auth: str | None = None,
        **overrides: Any,
    ) -> SourceConfig:
        """Return a validated SourceConfig for this emulator; see ``source_table``."""
        table = self.source_table(deployment, auth=auth, **overrides)
        return parse_sources({"sources": {source_id: table}})[source_id]


StartEmulator = Callable[..., EmulatorSite]


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[StartEmulator]:
    """Return a function that starts an emulator with ``ServerOptions`` overrides."""
    servers: list[ServerThread] = []

    def start(**overrides: Any) -> EmulatorSite:
        server = ServerThread(emulator_options(**overrides)).start()
        servers.append(server)
        folder = tmp_path / f"emulator-{len(servers)}"
        folder.mkdir()
        return EmulatorSite(server=server, folder=folder)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def emulator_site(start_emulator: StartEmulator) -> EmulatorSite:
    """An emulator with default test options, of the test's own."""
    return start_emulator()
