"""Authentication of API requests: Basic, bearer PAT, and OAuth 2.0 with rotating tokens.

Every method returns the ``Authorization`` header value for the next request. OAuth 2.0
(3LO) access tokens last about an hour, and each refresh returns a new refresh token and
disables the one sent. ``OAuth2Auth`` therefore refreshes under a lock (one refresh at a
time across threads, the others wait and reuse its result) and persists the new refresh
token through its ``TokenStore`` before the new access token is used.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
import tenacity

from producer.config import AuthConfig
from producer.errors import ConfigurationError, FatalError, RetriableError, excerpt_of
from producer.secrets import Credentials, RefreshTokenFile, Secret

logger = logging.getLogger(__name__)

TOKEN_REQUEST_TIMEOUT = 30.0
TOKEN_REQUEST_ATTEMPTS = 4


class Authenticator(Protocol):
    """Produces the Authorization header of each request."""

    def authorization(self) -> str:
        """Return the header value for the next request."""
        ...

    def handle_unauthorized(self, sent: str) -> bool:
        """React to a 401 on a request sent with ``sent``; True when a retry may succeed."""
        ...


class TokenStore(Protocol):
    """Storage of the rotating refresh token between runs."""

    def load(self) -> Secret: ...

    def save(self, token: Secret) -> None: ...


class BasicAuth:
    """Basic auth: email and API token on Cloud, user name and password on Data Center."""

    def __init__(self, username: str, secret: Secret) -> None:
        raw = f"{username}:{secret.reveal()}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode("ascii")

    def authorization(self) -> str:
        return self._header

    def handle_unauthorized(self, sent: str) -> bool:
        return False


class BearerAuth:
    """A Data Center personal access token sent as ``Bearer``."""

    def __init__(self, token: Secret) -> None:
        self._header = "Bearer " + token.reveal()

    def authorization(self) -> str:
        return self._header

    def handle_unauthorized(self, sent: str) -> bool:
        return False


class _TokenEndpointUnavailable(Exception):
    """A transient token endpoint failure (5xx, 429, timeout), retried by tenacity."""

    def __init__(self, message: str, status: int | None, excerpt: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt


class OAuth2Auth:
    """OAuth 2.0 (3LO) bearer tokens, refreshed before expiry and once after a 401."""

    def __init__(
        self,
        *,
        client_id: Secret,
        client_secret: Secret,
        token_url: str,
        store: TokenStore,
        refresh_margin: float = 300.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.token_url = token_url
        self._store = store
        self._margin = refresh_margin
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._access: Secret | None = None
        self._refresh_at = 0.0
        self.granted_scopes: frozenset[str] = frozenset()
        self.refresh_count = 0

    def authorization(self) -> str:
        with self._lock:
            if self._access is None or self._clock() >= self._refresh_at:
                self._refresh_locked()
            assert self._access is not None
            return "Bearer " + self._access.reveal()

    def handle_unauthorized(self, sent: str) -> bool:
        with self._lock:
            current = None if self._access is None else "Bearer " + self._access.reveal()
            if current == sent:
                # No thread refreshed since this request was sent, so the token was rejected
                # before its expiry (revoked, or the server's clock runs ahead).
                logger.info("access token rejected with 401; refreshing it")
                self._refresh_locked()
            return True

    def _refresh_locked(self) -> None:
        refresh_token = self._store.load()
        try:
            payload = self._request_tokens(refresh_token)
        except _TokenEndpointUnavailable as error:
            raise RetriableError(
                f"OAuth token endpoint {self.token_url} failed: {error}; retry the job later",
                method="POST",
                url=self.token_url,
                status=error.status,
                excerpt=error.excerpt,
                attempts=TOKEN_REQUEST_ATTEMPTS,
            ) from None

        access = payload.get("access_token")
        new_refresh = payload.get("refresh_token")
        expires_in = payload.get("expires_in", 3600)
        if not isinstance(access, str) or not access:
            raise FatalError(
                "OAuth token endpoint returned no access_token; check token_url",
                method="POST",
                url=self.token_url,
                status=200,
            )
        if isinstance(new_refresh, str) and new_refresh:
            # Persist first: the refresh token just sent is now disabled, so a crash after
            # using the new access token but before saving would force a new consent.
            self._store.save(Secret(new_refresh))
        else:
            logger.warning(
                "OAuth token response carried no refresh_token; keeping the stored one "
                "(grant the offline_access scope to receive rotating refresh tokens)"
            )

        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = 3600
        self._access = Secret(access)
        # A token that lives shorter than twice the margin is refreshed at half its life,
        # so that short lifetimes do not cause a refresh before every request.
        lifetime = float(expires_in)
        self._refresh_at = self._clock() + max(lifetime - self._margin, lifetime / 2)

        scope = payload.get("scope")
        if isinstance(scope, str):
            self.granted_scopes = frozenset(scope.split())
        self.refresh_count += 1
        logger.info("refreshed OAuth access token expires_in=%s", expires_in)

    def _request_tokens(self, refresh_token: Secret) -> dict[str, Any]:
        body = {
            "grant_type": "refresh_token",
            "client_id": self._client_id.reveal(),
            "client_secret": self._client_secret.reveal(),
            "refresh_token": refresh_token.reveal(),
        }
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_TokenEndpointUnavailable),
            stop=tenacity.stop_after_attempt(TOKEN_REQUEST_ATTEMPTS),
            wait=tenacity.wait_random_exponential(multiplier=1, max=20),
            before_sleep=lambda state: logger.warning(
                "OAuth token request failed, retrying attempt=%d error=%s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._post_token_request(body)
        raise AssertionError("tenacity.Retrying ended without a result")  # pragma: no cover

    def _post_token_request(self, body: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._session.post(
                self.token_url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=TOKEN_REQUEST_TIMEOUT,
                allow_redirects=False,
            )
        except (requests.Timeout, requests.ConnectionError) as error:
            raise _TokenEndpointUnavailable(type(error).__name__, None, None) from None
        excerpt = excerpt_of(response.text)
        if response.status_code == 429 or response.status_code >= 500:
            raise _TokenEndpointUnavailable(
                f"HTTP {response.status_code}", response.status_code, excerpt
            )
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code == 200 and isinstance(payload, dict):
            return payload
        error_code = payload.get("error") if isinstance(payload, dict) else None
        description = payload.get("error_description") if isinstance(payload, dict) else None
        if error_code == "invalid_grant":
            raise FatalError(
                f"the OAuth refresh token was rejected (invalid_grant: {description}); the "
                "grant must be renewed: run the OAuth consent flow again with the "
                "offline_access scope and write the new refresh token to the "
                "refresh_token_file of this source",
                method="POST",
                url=self.token_url,
                status=response.status_code,
                excerpt=excerpt,
            )
        if error_code in ("access_denied", "invalid_client", "unauthorized_client"):
            raise FatalError(
                f"the OAuth token endpoint rejected the client ({error_code}: {description}); "
                "check the client id and client secret this source names",
                method="POST",
                url=self.token_url,
                status=response.status_code,
                excerpt=excerpt,
            )
        raise FatalError(
            f"the OAuth token endpoint returned HTTP {response.status_code} "
            f"({error_code or 'no error code'}); check token_url and the OAuth app",
            method="POST",
            url=self.token_url,
            status=response.status_code,
            excerpt=excerpt,
        )


def build_authenticator(
    auth: AuthConfig,
    credentials: Credentials,
    *,
    token_store: TokenStore | None = None,
    session: requests.Session | None = None,
) -> Authenticator:
    """Create the authenticator that ``auth`` describes from the secrets already read."""
    if auth.method == "basic":
        assert credentials.username is not None and credentials.token is not None
        return BasicAuth(credentials.username, credentials.token)
    if auth.method == "pat":
        assert credentials.token is not None
        return BearerAuth(credentials.token)
    if auth.method == "oauth2":
        assert credentials.client_id is not None and credentials.client_secret is not None
        if token_store is None:
            if auth.refresh_token_file is None:
                raise ConfigurationError(
                    ["auth.refresh_token_file: missing; name the refresh token file"]
                )
            token_store = RefreshTokenFile(auth.refresh_token_file)
        return OAuth2Auth(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            token_url=auth.token_url,
            store=token_store,
            refresh_margin=auth.refresh_margin.total_seconds(),
            session=session,
        )
    raise ConfigurationError(
        [f"auth.method: unknown method {auth.method!r}; use basic, pat or oauth2"]
    )
