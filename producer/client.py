"""HTTP client of the Confluence REST API v1 for one source.

Every request passes the shared rate limiter, carries the source's authentication and
is classified in one place, ``_classify``:

- 200 with a JSON object: returned.
- 429, 500, 502, 503, 504, timeouts, connection errors, undecodable compressed bodies
  and truncated or invalid JSON:
  retried up to ``max_retries`` times. ``Retry-After`` (seconds or HTTP-date, clamped to
  ``max_retry_after``) sets the wait; without it the wait doubles from
  ``backoff_initial`` with jitter. A 429 pauses every worker of the source. After the
  last retry: ``RetriableError``.
- 401: one token refresh (OAuth) and one retry, then ``FatalError``.
- 403 and 404: ``SkippableError``, except Cloud's 403 for rejected credentials, which
  is ``FatalError``.
- 400, 410 (v1 removed on the OAuth gateway), redirects and other statuses:
  ``FatalError``, because retrying the same request cannot help.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from producer.auth import Authenticator, TokenStore, build_authenticator
from producer.config import SourceConfig
from producer.errors import (
    FatalError,
    ProducerError,
    RetriableError,
    SkippableError,
    excerpt_of,
)
from producer.limiter import RateLimiter, backoff_delay, parse_retry_after
from producer.secrets import load_credentials

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Query parameters whose values are secrets (signed download links, OAuth flows).
SECRET_QUERY_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
        "code",
        "jwt",
        "signature",
        "sig",
        "password",
        "api_key",
        "apikey",
    }
)
# Cloud's 403 bodies when the credential itself is rejected, not one resource.
REJECTED_CREDENTIAL_MARKERS = (
    "caller cannot access Confluence",
    "Current user not permitted to use Confluence",
)
USER_AGENT = "confluence-stream-producer/0.1"
# Seconds of requests at the configured rate that the client leaves unused of the burst.
# The server counts a request when it arrives, and while its bucket is full, every
# millisecond a request spends in thread scheduling or a busy server's queue is refill the
# server drops but the client counts. With the client's burst equal to the server's, that
# alone brings a 429, whose wait (Retry-After, at least a second) costs far more than the
# requests held back. NOTE: an estimate, from the emulator on a loaded 2-core machine,
# which counted requests up to 110 ms later than the client sent them.
BURST_RESERVE_SECONDS = 0.1
MAX_REDIRECTS = 5
DOWNLOAD_CHUNK_BYTES = 1 << 16


def redact_url(url: str) -> str:
    """Return ``url`` without user info and with secret query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        redacted = [
            (key, "***" if key.lower() in SECRET_QUERY_KEYS else value) for key, value in pairs
        ]
        query = urlencode(redacted, safe="/:,=*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass
class RequestStats:
    """Counters of one client's requests, safe to update from several threads."""

    api_calls: int = 0
    retries: int = 0
    rate_limit_waits: int = 0  # waits for the client-side limiter or a server 429
    rate_limit_wait_seconds: float = 0.0
    backoff_seconds: float = 0.0  # waits before retries of 5xx, timeouts and bad bodies
    by_status: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_call(self, status: int | None) -> None:
        with self._lock:
            self.api_calls += 1
            if status is not None:
                self.by_status[status] = self.by_status.get(status, 0) + 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def count_rate_limit_wait(self, seconds: float) -> None:
        with self._lock:
            self.rate_limit_waits += 1
            self.rate_limit_wait_seconds += seconds

    def count_backoff(self, seconds: float) -> None:
        with self._lock:
            self.backoff_seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        """Return a consistent copy of the counters."""
        with self._lock:
            return {
                "api_calls": self.api_calls,
                "retries": self.retries,
                "rate_limit_waits": self.rate_limit_waits,
                "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
                "backoff_seconds": round(self.backoff_seconds, 3),
                "by_status": dict(self.by_status),
            }


@dataclass(frozen=True)
class _Retry:
    """A retriable outcome: why, and the wait the server asked for (None: use backoff)."""

    reason: str
    status: int | None
    retry_after: float | None = None
    excerpt: str | None = None


class ConfluenceClient:
    """Thread-safe GET client of one source's REST API v1 root."""

    def __init__(
        self,
        source: SourceConfig,
        *,
        token_store: TokenStore | None = None,
        session: requests.Session | None = None,
        authenticator: Authenticator | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.stats = RequestStats()
        self._owns_session = session is None
        self.session = session or requests.Session()
        if self._owns_session:
            # Each worker can have one request in flight and one fetching its next page
            # ahead, so up to twice the concurrency of connections are in use at once.
            adapter = HTTPAdapter(
                pool_connections=2, pool_maxsize=max(2 * source.concurrency, 1), max_retries=0
            )
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
            self.session.headers["User-Agent"] = USER_AGENT
        if authenticator is None:
            credentials = load_credentials(source.auth, where=f"sources.{source.id}.auth")
            authenticator = build_authenticator(
                source.auth, credentials, token_store=token_store, session=self.session
            )
        self.authenticator = authenticator
        self.limiter = limiter or RateLimiter(source.rate_limit, client_burst(source))
        self._sleep = sleep
        self._rng = rng or random.Random()
        root = urlsplit(source.api_root)
        self._origin = f"{root.scheme}://{root.netloc}"
        self._base_path = root.path.removesuffix("/rest/api")

    # URLs

    def url_for(self, path: str) -> str:
        """Return the absolute URL of an API path or a ``_links`` link.

        ``/space`` is relative to the API root. ``/rest/api/...`` (a ``_links.next``) is
        context-relative and joined onto ``_links.base``. ``/wiki/rest/api/...`` (a path
        that already carries the context) is joined onto the origin. An absolute URL must
        point at the source's own origin, so credentials never go to another host.
        """
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            if f"{parts.scheme}://{parts.netloc}" != self._origin:
                raise FatalError(
                    f"refusing to send credentials to {redact_url(path)}: it is not on the "
                    f"source's origin {self._origin}; check base_url",
                    method="GET",
                    url=redact_url(path),
                )
            return path
        if not path.startswith("/"):
            path = "/" + path
        if path == "/rest/api" or path.startswith(("/rest/api/", "/rest/api?")):
            return self._origin + self._base_path + path
        if self._base_path and path.startswith(self._base_path + "/rest/api"):
            return self._origin + path
        return self.source.api_root + path

    # Requests

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """GET an API path or link and return its JSON object; see the module doc.

        ``max_retries`` overrides the source's retries of 5xx, timeouts and broken bodies
        for this request (paginators lower it to halve the page size sooner). A 429
        always gets the source's ``max_retries``, because a smaller page does not help.
        """
        url = self.url_for(path)
        query = {key: str(value) for key, value in (params or {}).items()}
        limits = {
            "throttled": self.source.max_retries,
            "failed": self.source.max_retries if max_retries is None else max_retries,
        }
        attempts = {"throttled": 0, "failed": 0}
        refreshed = False
        while True:
            waited = self.limiter.acquire()
            if waited > 0:
                self.stats.count_rate_limit_wait(waited)
            sent_authorization = self.authenticator.authorization()
            outcome = self._send(url, query, sent_authorization)
            if isinstance(outcome, dict):
                return outcome
            if isinstance(outcome, _Unauthorized):
                if refreshed or not self.authenticator.handle_unauthorized(sent_authorization):
                    raise outcome.error
                refreshed = True
                continue
            kind = "throttled" if outcome.status == 429 else "failed"
            attempts[kind] += 1
            if attempts[kind] > limits[kind]:
                raise RetriableError(
                    f"{outcome.reason} persisted after {limits[kind]} retries; the server "
                    "may be overloaded or rate limiting: retry the job later or lower "
                    "rate_limit/page_size",
                    method="GET",
                    url=redact_url(response_url(url, query)),
                    status=outcome.status,
                    excerpt=outcome.excerpt,
                    attempts=attempts[kind],
                )
            self.stats.count_retry()
            self._wait_before_retry(url, query, outcome, attempts[kind], limits[kind])

    def download(self, link: str, *, max_bytes: int | None = None) -> bytes:
        """Download an attachment from its ``_links.download`` link and return the bytes.

        Redirects are followed here, not by requests: Authorization goes only to the
        source's own origin, so Cloud's redirect to its media service (another host,
        authorized by a token in the query) gets no credentials. Raises SkippableError
        for 403, 404 and files above ``max_bytes``, RetriableError once 429, 5xx or
        network errors persist, and FatalError for other statuses.
        """
        url = self.link_url(link)
        failures = 0
        hops = 0
        while True:
            same_origin = _origin_of(url) == self._origin
            headers = {"Accept": "*/*"}
            if same_origin:
                headers["Authorization"] = self.authenticator.authorization()
                waited = self.limiter.acquire()
                if waited > 0:
                    self.stats.count_rate_limit_wait(waited)
            outcome = self._fetch_bytes(url, headers, max_bytes)
            if isinstance(outcome, bytes):
                return outcome
            if isinstance(outcome, str):
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise FatalError(
                        f"download of {redact_url(link)} redirected more than {MAX_REDIRECTS} "
                        "times; check the link",
                        method="GET",
                        url=redact_url(url),
                    )
                url = outcome
                continue
            failures += 1
            if failures > self.source.max_retries:
                raise RetriableError(
                    f"download failed: {outcome.reason} persisted after "
                    f"{self.source.max_retries} retries; retry the job later",
                    method="GET",
                    url=redact_url(url),
                    status=outcome.status,
                    excerpt=outcome.excerpt,
                    attempts=failures,
                )
            self.stats.count_retry()
            self._wait_before_retry(url, {}, outcome, failures, self.source.max_retries)

    def link_url(self, link: str) -> str:
        """Return the absolute URL of a context-relative ``_links`` link.

        ``_links.next`` and ``_links.download`` are relative to ``_links.base``, which
        ends in ``/wiki`` on Cloud and in the context path on Data Center.
        """
        if link.startswith(("http://", "https://")):
            return link
        if link.startswith("/rest/api") or (
            self._base_path and link.startswith(self._base_path + "/")
        ):
            return self.url_for(link)
        return self.source.api_base + ("" if link.startswith("/") else "/") + link

    def current_user(self) -> dict[str, Any]:
        """Return ``/user/current``: account id, display name and ``timeZone``."""
        return self.get("/user/current")

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> ConfluenceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Internals

    def _wait_before_retry(
        self, url: str, query: Mapping[str, str], outcome: _Retry, attempt: int, allowed: int
    ) -> None:
        backoff = backoff_delay(
            attempt,
            initial=self.source.backoff_initial,
            maximum=self.source.backoff_max,
            rng=self._rng,
        )
        # Retry-After is the minimum wait, as Atlassian's rate-limiting guide recommends, so a
        # Data Center "Retry-After: 0" still backs off.
        if outcome.retry_after is not None and outcome.retry_after >= backoff:
            wait = outcome.retry_after
            source_of_wait = "Retry-After"
        else:
            wait = backoff
            source_of_wait = "backoff"
        wait = min(wait, self.source.max_retry_after)
        level = logging.WARNING if attempt > 1 or outcome.status != 429 else logging.INFO
        logger.log(
            level,
            "retrying request reason=%s status=%s wait=%.2fs wait_from=%s attempt=%d/%d url=%s",
            outcome.reason,
            outcome.status,
            wait,
            source_of_wait,
            attempt,
            allowed,
            redact_url(response_url(url, query)),
        )
        if outcome.status == 429:
            # Every worker of the source stops until the server's window has passed.
            # The wait itself happens, and is counted, in the next limiter.acquire().
            self.limiter.pause(wait)
            return
        self.stats.count_backoff(wait)
        if wait > 0:
            self._sleep(wait)

    def _send(
        self, url: str, query: Mapping[str, str], authorization: str
    ) -> dict[str, Any] | _Retry | _Unauthorized:
        headers = {"Accept": "application/json", "Authorization": authorization}
        started = time.monotonic()
        timeout = (min(10.0, self.source.request_timeout), self.source.request_timeout)
        try:
            response = self.session.get(
                url, params=query, headers=headers, timeout=timeout, allow_redirects=False
            )
            body = response.content  # read here, so a cut-off body raises here
        except requests.Timeout as error:
            self.stats.count_call(None)
            self._log_request(url, query, None, started)
            return _Retry(f"timeout ({type(error).__name__})", None)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            self.stats.count_call(None)
            self._log_request(url, query, None, started)
            return _Retry(f"connection error ({type(error).__name__})", None)
        except requests.exceptions.ContentDecodingError as error:
            # A gzip body cut off in transit; the same request usually succeeds again.
            self.stats.count_call(None)
            self._log_request(url, query, None, started)
            return _Retry(f"undecodable compressed body ({type(error).__name__})", None)
        self.stats.count_call(response.status_code)
        self._log_request(url, query, response.status_code, started)
        return self._classify(url, query, response, body)

    def _fetch_bytes(
        self, url: str, headers: Mapping[str, str], max_bytes: int | None
    ) -> bytes | str | _Retry:
        """GET a download URL once: the bytes, a redirect target (str), or a retry."""
        started = time.monotonic()
        try:
            response = self.session.get(
                url,
                headers=dict(headers),
                timeout=(min(10.0, self.source.request_timeout), self.source.request_timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout as error:
            self.stats.count_call(None)
            return _Retry(f"timeout ({type(error).__name__})", None)
        except requests.ConnectionError as error:
            self.stats.count_call(None)
            return _Retry(f"connection error ({type(error).__name__})", None)
        with response:
            status = response.status_code
            self.stats.count_call(status)
            self._log_request(url, {}, status, started)
            location = response.headers.get("Location")
            if 300 <= status < 400 and location:
                return urljoin(url, location)
            if status == 200:
                return self._read_limited(response, url, max_bytes)
            body = response.raw.read(4096, decode_content=True) or b""
        evidence: dict[str, Any] = {
            "method": "GET",
            "url": redact_url(url),
            "status": status,
            "excerpt": excerpt_of(body),
        }
        if status in RETRIED_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return _Retry(f"HTTP {status}", status, retry_after, evidence["excerpt"])
        if status in (403, 404):
            raise SkippableError(
                f"download failed with HTTP {status}: the attachment is gone or not "
                "visible to the account",
                **evidence,
            )
        raise FatalError(f"download failed with unexpected HTTP {status}", **evidence)

    @staticmethod
    def _read_limited(
        response: requests.Response, url: str, max_bytes: int | None
    ) -> bytes | _Retry:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise SkippableError(
                        f"download is larger than max_bytes={max_bytes}; skipped",
                        method="GET",
                        url=redact_url(url),
                        status=200,
                    )
                chunks.append(chunk)
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as error:
            return _Retry(f"download cut off ({type(error).__name__})", None)
        return b"".join(chunks)

    def _classify(
        self, url: str, query: Mapping[str, str], response: requests.Response, body: bytes
    ) -> dict[str, Any] | _Retry | _Unauthorized:
        status = response.status_code
        if status == 200:
            # The evidence of a failure is built only when parsing fails: decoding a
            # body of several megabytes for an excerpt on every response costs CPU time.
            return self._parse_json(body, lambda: self._evidence(url, query, status, body))

        evidence = self._evidence(url, query, status, body)
        excerpt = evidence["excerpt"]

        if status in RETRIED_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return _Retry(f"HTTP {status}", status, retry_after, excerpt)

        if status == 401:
            return _Unauthorized(
                FatalError(
                    f"authentication failed (HTTP 401) with auth method "
                    f"{self.source.auth.method!r}: {self._credential_fix()}",
                    **evidence,
                )
            )

        if status == 403:
            text = body.decode("utf-8", errors="replace")
            if any(marker in text for marker in REJECTED_CREDENTIAL_MARKERS):
                raise FatalError(
                    f"Confluence rejected the credentials (HTTP 403): {self._credential_fix()}",
                    **evidence,
                )
            raise SkippableError(
                "permission denied (HTTP 403): the account cannot read this resource; "
                "grant it access or exclude the resource",
                **evidence,
            )

        if status == 404:
            raise SkippableError(
                "not found (HTTP 404): the resource does not exist or is not visible to "
                "the account",
                **evidence,
            )

        if status == 410:
            raise FatalError(
                "the endpoint was removed (HTTP 410 Gone): Cloud removed deprecated v1 "
                "reads from the OAuth gateway; use deployment 'cloud' with basic auth "
                "(email and API token) on https://SITE.atlassian.net",
                **evidence,
            )

        if status == 400:
            raise FatalError(
                "the server rejected the request as invalid (HTTP 400); the query the "
                "producer built is wrong for this server, see the excerpt",
                **evidence,
            )

        if 300 <= status < 400:
            location = redact_url(response.headers.get("Location", ""))
            raise FatalError(
                f"unexpected redirect (HTTP {status}) to {location!r}: check base_url and "
                "that the server does not send API clients to a login page",
                **evidence,
            )
        raise FatalError(f"unexpected HTTP {status} from the API", **evidence)

    @staticmethod
    def _evidence(url: str, query: Mapping[str, str], status: int, body: bytes) -> dict[str, Any]:
        return {
            "method": "GET",
            "url": redact_url(response_url(url, query)),
            "status": status,
            "excerpt": excerpt_of(body),
        }

    @staticmethod
    def _parse_json(body: bytes, evidence: Callable[[], dict[str, Any]]) -> dict[str, Any] | _Retry:
        try:
            payload = orjson.loads(body)
        except ValueError:
            return _Retry("truncated or invalid JSON body", 200, None, excerpt_of(body))
        if not isinstance(payload, dict):
            raise SkippableError(
                f"expected a JSON object, got a JSON {type(payload).__name__}", **evidence()
            )
        return payload

    def _credential_fix(self) -> str:
        method = self.source.auth.method
        if method == "basic" and self.source.deployment == "cloud":
            return (
                "check the account email and that the API token is valid and unscoped "
                "(scoped tokens work only through the gateway, api.atlassian.com)"
            )
        if method == "basic":
            return "check the user name and password or API token"
        if method == "pat":
            return "check that the personal access token is valid and not expired"
        return (
            "the refreshed OAuth access token was refused as well; check cloud_id and "
            "that the grant has the scopes this request needs"
        )

    def _log_request(
        self, url: str, query: Mapping[str, str], status: int | None, started: float
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "GET %s status=%s elapsed_ms=%.0f",
                redact_url(response_url(url, query)),
                status if status is not None else "none",
                (time.monotonic() - started) * 1000,
            )


@dataclass(frozen=True)
class _Unauthorized:
    """A 401, with the error to raise when a refresh does not help."""

    error: ProducerError


def client_burst(source: SourceConfig) -> int:
    """Return the burst of the client's limiter: the source's, less ``BURST_RESERVE_SECONDS``."""
    reserve = math.ceil(source.rate_limit * BURST_RESERVE_SECONDS)
    return max(1, source.burst - reserve)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def response_url(url: str, query: Mapping[str, str]) -> str:
    """Return ``url`` with ``query`` appended, as requests sends it."""
    if not query:
        return url
    separator = "&" if urlsplit(url).query else "?"
    return url + separator + urlencode(query)
