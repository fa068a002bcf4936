"""Options of the emulator's HTTP server, parsed once at start-up."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from emulator.faults import parse_fault_rule

FLAVOURS = ("cloud", "datacenter", "all")
SITE_KINDS = ("generated", "corpus")
_RATE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*$")
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$")


class OptionError(ValueError):
    """An invalid server option; the message names the option, the value and the fix."""


def parse_rate(text: str) -> float:
    """Parse a ``--rate-limit`` value such as ``50/s`` or ``12.5`` into requests per second."""
    match = _RATE_PATTERN.match(text)
    if match is None:
        raise OptionError(
            f"invalid --rate-limit {text!r}: expected requests per second such as '50/s' or '50'"
        )
    return float(match.group(1))


def normalize_context_path(text: str) -> str:
    """Return a Data Center context path as ``""`` or ``/name`` without a trailing slash."""
    stripped = text.strip().strip("/")
    if not stripped:
        return ""
    if any(part in ("", ".", "..") for part in stripped.split("/")):
        raise OptionError(
            f"invalid --context-path {text!r}: use a path such as '/confluence' or ''"
        )
    return "/" + stripped


@dataclass(frozen=True)
class ServerOptions:
    """Everything the server needs to build its site, its roots and its gate."""

    host: str = "127.0.0.1"
    port: int = 8090
    site: str = "generated"
    seed: int = 1
    pages: int = 200
    spaces: int = 4
    corpus: Path | None = None
    flavour: str = "all"
    context_path: str = ""
    cloud_id: str = "11111111-2222-4333-8444-555555555555"
    time_zone: str = "Europe/Berlin"
    rate_limit: float | None = None
    burst: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # Fault rules in the gate's form `[METHOD ]ROUTE:KIND:WHEN[:ARG]`.
    faults: tuple[str, ...] = ()
    search_lag: float = 0.0
    dc_quirks: bool = False
    dc_limit_cap: int = 200
    cloud_quirks: bool = False
    search_short_page_rate: float = 0.1
    v1_gone: bool = False
    # Requests without credentials run as the anonymous user instead of being rejected.
    anonymous_access: bool = False
    control: bool = False
    user_email: str = "emulator@example.com"
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    site_name: str = "emulator"
    # The second user, whom generated read restrictions leave out.
    reader_email: str = "reader@example.com"
    reader_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # Host name that attachment downloads redirect to; None picks the other loopback
    # name (`localhost` for a request to 127.0.0.1, `127.0.0.1` otherwise).
    media_host: str | None = None

    def validate(self) -> None:
        """Raise OptionError naming every invalid option, on one line."""
        errors = self.problems()
        if errors:
            raise OptionError("; ".join(errors))

    def problems(self) -> list[str]:
        """Return a message for each invalid option; empty when all are valid."""
        errors: list[str] = []
        if self.flavour not in FLAVOURS:
            errors.append(f"invalid --flavour {self.flavour!r}: use one of {', '.join(FLAVOURS)}")
        if self.site not in SITE_KINDS:
            errors.append(f"invalid --site {self.site!r}: use one of {', '.join(SITE_KINDS)}")
        if not 0 <= self.port <= 65535:
            errors.append(f"invalid --port {self.port}: use 0..65535 (0 picks a free port)")
        if self.pages < 0 or self.spaces < 0:
            errors.append(
                f"invalid --pages {self.pages} or --spaces {self.spaces}: counts cannot be negative"
            )

        if self.site == "corpus" and self.corpus is None:
            errors.append("--site corpus needs --corpus PATH naming an HTML folder")
        if self.corpus is not None and not self.corpus.is_dir():
            errors.append(f"invalid --corpus {str(self.corpus)!r}: the folder does not exist")

        if self.rate_limit is not None and self.rate_limit <= 0:
            errors.append(
                f"invalid --rate-limit {self.rate_limit}: use a positive number of requests "
                "per second, or leave it out for no limit"
            )
        if self.burst is not None and self.burst < 1:
            errors.append(f"invalid --burst {self.burst}: use a positive number of requests")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            errors.append(
                f"invalid --latency {self.latency_ms} or --latency-jitter "
                f"{self.latency_jitter_ms}: milliseconds cannot be negative"
            )
        for rule in self.faults:
            try:
                parse_fault_rule(rule)
            except ValueError as error:
                errors.append(f"--fault: {error}")

        if self.search_lag < 0:
            errors.append(f"invalid --search-lag {self.search_lag}: seconds cannot be negative")
        if self.dc_limit_cap < 1:
            errors.append(f"invalid --dc-limit-cap {self.dc_limit_cap}: use a positive number")
        if not 0.0 <= self.search_short_page_rate <= 1.0:
            errors.append(
                f"invalid --search-short-pages {self.search_short_page_rate}: use a rate in 0..1"
            )

        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(
                f"invalid --time-zone {self.time_zone!r}: use an IANA name such as UTC or "
                "Europe/Berlin"
            )
        if ":" in self.user_email or not self.user_email:
            errors.append(f"invalid --user-email {self.user_email!r}: use an address without ':'")
        if not self.api_token:
            errors.append("invalid --api-token '': the token cannot be empty")
        if ":" in self.reader_email or not self.reader_email:
            errors.append(
                f"invalid --reader-email {self.reader_email!r}: use an address without ':'"
            )
        if self.reader_email.casefold() == self.user_email.casefold():
            errors.append(
                f"invalid --reader-email {self.reader_email!r}: it must differ from --user-email"
            )
        if not self.reader_api_token:
            errors.append("invalid --reader-token '': the token cannot be empty")
        if self.media_host is not None and not _HOST_PATTERN.match(self.media_host):
            errors.append(
                f"invalid --media-host {self.media_host!r}: use a host name or address, "
                "optionally with :port, such as localhost or localhost:8091"
            )
        return errors

    @property
    def serves_cloud(self) -> bool:
        """Whether the Cloud site root and the OAuth gateway root are served."""
        return self.flavour in ("cloud", "all")

    @property
    def serves_datacenter(self) -> bool:
        """Whether the Data Center root is served."""
        return self.flavour in ("datacenter", "all")
