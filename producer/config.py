"""Sources file: one TOML table per Confluence source, validated all at once.

The file contains ``[sources.ID]`` tables (see ``examples/sources.toml``). Secrets never
appear in it: the ``auth`` table names environment variables (``*_env``) or files
(``*_file``) that hold them, and ``producer.secrets`` reads them when a client is built.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from producer.errors import ConfigurationError

DEPLOYMENTS = ("cloud", "cloud-oauth", "datacenter")
AUTH_METHODS = ("basic", "pat", "oauth2")
SPACE_TYPES = frozenset({"global", "personal"})
SPACE_STATUSES = frozenset({"current", "archived"})
CONTENT_TYPES = frozenset({"page", "blogpost", "comment", "attachment", "label"})
DEFAULT_TOKEN_URL = "https://auth.atlassian.com/oauth/token"
# Classic scopes a read-only crawl needs on the OAuth gateway, per Atlassian's Cloud v1
# OpenAPI document (x-atlassian-oauth2-scopes); offline_access yields the refresh token.
DEFAULT_OAUTH_SCOPES = (
    "read:confluence-space.summary",
    "read:confluence-content.summary",
    "read:confluence-content.all",
    "search:confluence",
    "read:confluence-user",
    "offline_access",
)

_SOURCE_ID = re.compile(r"^[a-z0-9_]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPACE_KEY = re.compile(r"^~?[A-Za-z0-9_.\-:]+$")
# Keys that would hold a secret in the file itself; each maps to where the secret goes.
_INLINE_SECRETS = {
    "token": "token_env or token_file",
    "api_token": "token_env or token_file",
    "password": "token_env or token_file",
    "pat": "token_env or token_file",
    "client_secret": "client_secret_env or client_secret_file",
    "refresh_token": "refresh_token_file",
    "access_token": "refresh_token_file (the producer obtains access tokens itself)",
}
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class SecretRef:
    """Location of one secret: an environment variable or a file, never the value."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        """Return the location for messages, e.g. ``environment variable TOKEN``."""
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"file {self.file}"


@dataclass(frozen=True)
class AuthConfig:
    """Authentication method of a source and the locations of its secrets."""

    method: str  # "basic" | "pat" | "oauth2"
    username: str | None = None  # basic: the account email on Cloud, the user name on DC
    username_env: str | None = None  # basic: environment variable holding the user name
    token: SecretRef | None = None  # basic: API token or password; pat: the token
    client_id: SecretRef | None = None
    client_secret: SecretRef | None = None
    # The rotating OAuth refresh token; the producer rewrites this file after each refresh.
    refresh_token_file: Path | None = None
    token_url: str = DEFAULT_TOKEN_URL
    scopes: tuple[str, ...] = DEFAULT_OAUTH_SCOPES  # scopes `check` expects on cloud-oauth
    refresh_margin: timedelta = timedelta(minutes=5)  # refresh this long before expiry


@dataclass(frozen=True)
class SpaceSelection:
    """Selection of the spaces a source crawls: keys, exclusions, types and statuses."""

    include: tuple[str, ...] = ()  # empty: every space that matches types and statuses
    exclude: tuple[str, ...] = ()
    types: frozenset[str] = SPACE_TYPES
    statuses: frozenset[str] = frozenset({"current"})


@dataclass(frozen=True)
class SourceConfig:
    """Settings of one Confluence source; one job crawls one source."""

    id: str
    deployment: str
    base_url: str
    cloud_id: str | None
    auth: AuthConfig
    spaces: SpaceSelection
    content_types: frozenset[str]
    concurrency: int
    rate_limit: float  # requests per second, client side, shared by all workers
    burst: int  # the server's burst, of which the client leaves 0.1 s of requests unused
    page_size: int
    overlap: timedelta
    time_zone: str | None
    request_timeout: float  # seconds
    max_retries: int
    max_retry_after: float  # seconds; longer Retry-After values are clamped to this
    backoff_initial: float = 2.0  # seconds before the first retry without Retry-After
    backoff_max: float = 60.0  # seconds; cap of the doubling backoff

    @property
    def api_root(self) -> str:
        """Absolute URL of the REST v1 root, ending in ``/rest/api``."""
        if self.deployment == "cloud":
            return f"{self.base_url}/wiki/rest/api"
        if self.deployment == "cloud-oauth":
            return f"{self.base_url}/ex/confluence/{self.cloud_id}/wiki/rest/api"
        return f"{self.base_url}/rest/api"

    @property
    def api_base(self) -> str:
        """The ``_links.base`` of the root: ``api_root`` without ``/rest/api``."""
        return self.api_root.removesuffix("/rest/api")


# Defaults of the optional keys of a source table.
DEFAULTS: dict[str, Any] = {
    "content_types": ["page", "blogpost", "comment", "attachment", "label"],
    "concurrency": 4,
    "rate_limit": 10.0,
    "burst": 10,
    "page_size": 50,
    "overlap_minutes": 15,
    "time_zone": None,
    "request_timeout": 60.0,
    "max_retries": 6,
    "max_retry_after": 300.0,
    "backoff_initial": 2.0,
    "backoff_max": 60.0,
}
SOURCE_KEYS = frozenset({"deployment", "base_url", "cloud_id", "auth", "spaces", *DEFAULTS.keys()})
AUTH_KEYS = frozenset(
    {
        "method",
        "username",
        "username_env",
        "token_env",
        "token_file",
        "client_id_env",
        "client_id_file",
        "client_secret_env",
        "client_secret_file",
        "refresh_token_file",
        "token_url",
        "scopes",
        "refresh_margin_seconds",
    }
)
SPACE_KEYS = frozenset({"include", "exclude", "types", "statuses"})


def _suggest(key: str, known: frozenset[str] | set[str]) -> str:
    matches = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if matches:
        return f"did you mean {matches[0]!r}?"
    return "known keys: " + ", ".join(sorted(known))


class _Collector:
    """Gathers every problem of a sources file so that all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], known: frozenset[str]) -> None:
        for key in table:
            if key in known:
                continue
            if key in _INLINE_SECRETS:
                self.add(
                    f"{where}.{key}",
                    "secrets must not be written in the sources file (value not shown); "
                    f"remove it and set {_INLINE_SECRETS[key]} instead",
                )
            else:
                self.add(f"{where}.{key}", f"unknown key; {_suggest(key, known)}")


def _typed(
    problems: _Collector,
    where: str,
    value: Any,
    check: Callable[[Any], bool],
    expected: str,
) -> bool:
    if check(value):
        return True
    problems.add(where, f"invalid value {value!r}: expected {expected}")
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_list(problems: _Collector, where: str, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    problems.add(where, f"invalid value {value!r}: expected a list of strings")
    return None


def _choice_set(
    problems: _Collector, where: str, value: Any, allowed: frozenset[str]
) -> frozenset[str] | None:
    items = _string_list(problems, where, value)
    if items is None:
        return None
    bad = [item for item in items if item not in allowed]
    if bad:
        problems.add(
            where,
            f"invalid value(s) {', '.join(map(repr, bad))}: "
            f"use any of {', '.join(sorted(allowed))}",
        )
        return None
    if not items:
        problems.add(where, f"empty list: name at least one of {', '.join(sorted(allowed))}")
        return None
    return frozenset(items)


def _normalize_base_url(
    problems: _Collector, where: str, value: Any, deployment: str | None
) -> str | None:
    if not _typed(problems, where, value, lambda v: isinstance(v, str) and bool(v), "a URL"):
        return None
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add(where, f"invalid URL {value!r}: use https://HOST[/path]")
        return None
    if parts.query or parts.fragment or "@" in parts.netloc:
        problems.add(
            where,
            f"invalid URL {value!r}: remove the query, fragment or user part "
            "(credentials belong in the auth table)",
        )
        return None
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        problems.add(
            where,
            f"insecure URL {value!r}: use https, because credentials are sent with every "
            "request (plain http is accepted for 127.0.0.1 and localhost only)",
        )
        return None
    if text.endswith("/rest/api"):
        problems.add(where, f"invalid URL {value!r}: give the site URL without /rest/api")
        return None
    if deployment == "cloud" and parts.path not in ("", "/wiki"):
        problems.add(
            where,
            f"invalid Cloud site URL {value!r}: use the site origin such as "
            "https://SITE.atlassian.net",
        )
        return None
    if deployment == "cloud":
        text = text.removesuffix("/wiki")
    if deployment == "cloud-oauth" and parts.path:
        problems.add(
            where,
            f"invalid gateway URL {value!r}: use the gateway origin such as "
            "https://api.atlassian.com; the cloud id goes in cloud_id",
        )
        return None
    return text


def _secret_ref(
    problems: _Collector, where: str, table: Mapping[str, Any], name: str, *, required: bool
) -> SecretRef | None:
    env = table.get(f"{name}_env")
    file = table.get(f"{name}_file")
    if env is not None and file is not None:
        problems.add(
            f"{where}.{name}_env",
            f"both {name}_env and {name}_file are set: keep one of them",
        )
        return None
    if env is not None:
        if not (isinstance(env, str) and _ENV_NAME.match(env)):
            problems.add(
                f"{where}.{name}_env",
                f"invalid environment variable name {env!r}: use letters, digits and '_'",
            )
            return None
        return SecretRef(env=env)
    if file is not None:
        if not (isinstance(file, str) and file.strip()):
            problems.add(f"{where}.{name}_file", f"invalid path {file!r}: expected a file path")
            return None
        return SecretRef(file=Path(file).expanduser())
    if required:
        problems.add(where, f"missing {name}_env or {name}_file: name where the {name} is stored")
    return None


def _parse_auth(
    problems: _Collector, where: str, table: Any, deployment: str | None
) -> AuthConfig | None:
    if not isinstance(table, dict):
        problems.add(where, "missing table: add an [sources.ID.auth] table with a method")
        return None
    problems.unknown_keys(where, table, AUTH_KEYS)
    method = table.get("method")
    if method not in AUTH_METHODS:
        problems.add(
            f"{where}.method", f"invalid value {method!r}: use one of {', '.join(AUTH_METHODS)}"
        )
        return None
    allowed = {
        "cloud": ("basic",),
        "cloud-oauth": ("oauth2", "basic"),
        "datacenter": ("basic", "pat"),
    }
    if deployment in allowed and method not in allowed[deployment]:
        problems.add(
            f"{where}.method",
            f"method {method!r} does not work with deployment {deployment!r}: use "
            f"{' or '.join(allowed[deployment])}",
        )

    username: str | None = None
    username_env: str | None = None
    token: SecretRef | None = None
    client_id: SecretRef | None = None
    client_secret: SecretRef | None = None
    refresh_file: Path | None = None
    if method == "basic":
        username_value = table.get("username")
        username_env_value = table.get("username_env")
        if username_value is None and username_env_value is None:
            problems.add(
                where,
                "missing username: set username (the account email on Cloud, the user "
                "name on Data Center) or username_env",
            )
        elif username_value is not None:
            if _typed(
                problems,
                f"{where}.username",
                username_value,
                lambda v: isinstance(v, str) and bool(v) and ":" not in v,
                "a non-empty user name without ':'",
            ):
                username = str(username_value)
        elif not (isinstance(username_env_value, str) and _ENV_NAME.match(username_env_value)):
            problems.add(
                f"{where}.username_env",
                f"invalid environment variable name {username_env_value!r}: "
                "use letters, digits and '_'",
            )
        else:
            username_env = username_env_value
        token = _secret_ref(problems, where, table, "token", required=True)
    elif method == "pat":
        token = _secret_ref(problems, where, table, "token", required=True)
    else:
        client_id = _secret_ref(problems, where, table, "client_id", required=True)
        client_secret = _secret_ref(problems, where, table, "client_secret", required=True)
        refresh_value = table.get("refresh_token_file")
        if refresh_value is None:
            problems.add(
                where,
                "missing refresh_token_file: name the file that holds the rotating refresh "
                "token (the producer rewrites it after every refresh)",
            )
        elif _typed(
            problems,
            f"{where}.refresh_token_file",
            refresh_value,
            lambda v: isinstance(v, str) and bool(v.strip()),
            "a file path",
        ):
            refresh_file = Path(refresh_value).expanduser()
        if "token_env" in table or "token_file" in table:
            problems.add(
                where,
                "token_env/token_file are not used with method 'oauth2': remove them",
            )

    token_url = table.get("token_url", DEFAULT_TOKEN_URL)
    if _typed(
        problems,
        f"{where}.token_url",
        token_url,
        lambda v: isinstance(v, str) and urlsplit(v).scheme in ("http", "https"),
        "an http(s) URL",
    ):
        token_host = urlsplit(token_url).hostname
        if urlsplit(token_url).scheme == "http" and token_host not in _LOCAL_HOSTS:
            problems.add(
                f"{where}.token_url",
                f"insecure URL {token_url!r}: use https (http only for 127.0.0.1)",
            )
    scopes: tuple[str, ...] | None = DEFAULT_OAUTH_SCOPES
    if "scopes" in table:
        scopes = _string_list(problems, f"{where}.scopes", table["scopes"])
    margin = table.get("refresh_margin_seconds", 300)
    _typed(
        problems,
        f"{where}.refresh_margin_seconds",
        margin,
        lambda v: _is_number(v) and 0 <= v < 3600,
        "seconds from 0 to 3599",
    )
    if not _is_number(margin):
        margin = 300
    return AuthConfig(
        method=method,
        username=username,
        username_env=username_env,
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token_file=refresh_file,
        token_url=str(token_url),
        scopes=scopes or DEFAULT_OAUTH_SCOPES,
        refresh_margin=timedelta(seconds=float(margin)),
    )


def _parse_spaces(problems: _Collector, where: str, table: Any) -> SpaceSelection:
    if table is None:
        return SpaceSelection()
    if not isinstance(table, dict):
        problems.add(where, f"invalid value {table!r}: expected a table")
        return SpaceSelection()
    problems.unknown_keys(where, table, SPACE_KEYS)
    include = _string_list(problems, f"{where}.include", table.get("include", [])) or ()
    exclude = _string_list(problems, f"{where}.exclude", table.get("exclude", [])) or ()
    for field_name, keys in (("include", include), ("exclude", exclude)):
        for key in keys:
            if not _SPACE_KEY.match(key):
                problems.add(
                    f"{where}.{field_name}",
                    f"invalid space key {key!r}: use the key shown in the space URL, "
                    "e.g. 'ENG' or '~jdoe'",
                )
    both = sorted(set(include) & set(exclude))
    if both:
        problems.add(
            f"{where}.exclude",
            f"space key(s) {', '.join(both)} are both included and excluded: keep one",
        )
    types = _choice_set(
        problems, f"{where}.types", table.get("types", sorted(SPACE_TYPES)), SPACE_TYPES
    )
    statuses = _choice_set(
        problems, f"{where}.statuses", table.get("statuses", ["current"]), SPACE_STATUSES
    )
    return SpaceSelection(
        include=include,
        exclude=exclude,
        types=types or SPACE_TYPES,
        statuses=statuses or frozenset({"current"}),
    )


def _parse_source(problems: _Collector, source_id: str, table: Any) -> SourceConfig | None:
    where = f"sources.{source_id}"
    if not _SOURCE_ID.match(source_id):
        problems.add(
            where,
            f"invalid source id {source_id!r}: use lower-case letters, digits and '_' "
            "(it names the MongoDB collection source_ID_stream)",
        )
    if not isinstance(table, dict):
        problems.add(where, f"invalid value {table!r}: expected a table")
        return None
    problems.unknown_keys(where, table, SOURCE_KEYS)
    values = {**DEFAULTS, **table}

    deployment = values.get("deployment")
    if deployment not in DEPLOYMENTS:
        problems.add(
            f"{where}.deployment",
            f"invalid value {deployment!r}: use one of {', '.join(DEPLOYMENTS)}",
        )
        deployment = None
    base_url = _normalize_base_url(
        problems, f"{where}.base_url", values.get("base_url"), deployment
    )

    cloud_id = values.get("cloud_id")
    if deployment == "cloud-oauth":
        if not (isinstance(cloud_id, str) and re.fullmatch(r"[A-Za-z0-9\-]+", cloud_id)):
            problems.add(
                f"{where}.cloud_id",
                f"invalid value {cloud_id!r}: set the site's cloud id, which "
                "https://SITE.atlassian.net/_edge/tenant_info returns as cloudId",
            )
            cloud_id = None
    elif cloud_id is not None:
        problems.add(
            f"{where}.cloud_id",
            f"cloud_id is used only with deployment 'cloud-oauth' (got {deployment!r}): remove it",
        )
        cloud_id = None

    auth = _parse_auth(problems, f"{where}.auth", values.get("auth"), deployment)
    spaces = _parse_spaces(problems, f"{where}.spaces", values.get("spaces"))
    content_types = _choice_set(
        problems, f"{where}.content_types", values["content_types"], CONTENT_TYPES
    )

    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("concurrency", lambda v: _is_int(v) and 1 <= v <= 64, "an integer from 1 to 64"),
        ("rate_limit", lambda v: _is_number(v) and v > 0, "requests per second above 0"),
        ("burst", lambda v: _is_int(v) and v >= 1, "an integer of at least 1"),
        ("page_size", lambda v: _is_int(v) and 1 <= v <= 1000, "an integer from 1 to 1000"),
        ("overlap_minutes", lambda v: _is_number(v) and v >= 0, "minutes, 0 or more"),
        ("request_timeout", lambda v: _is_number(v) and v > 0, "seconds above 0"),
        ("max_retries", lambda v: _is_int(v) and 0 <= v <= 100, "an integer from 0 to 100"),
        ("max_retry_after", lambda v: _is_number(v) and v > 0, "seconds above 0"),
        ("backoff_initial", lambda v: _is_number(v) and v >= 0, "seconds, 0 or more"),
        ("backoff_max", lambda v: _is_number(v) and v >= 0, "seconds, 0 or more"),
    ]
    valid = True
    for key, check, expected in checks:
        valid &= _typed(problems, f"{where}.{key}", values[key], check, expected)

    time_zone = values["time_zone"]
    if time_zone is not None:
        try:
            zoneinfo.ZoneInfo(str(time_zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.add(
                f"{where}.time_zone",
                f"unknown time zone {time_zone!r}: use an IANA name such as 'Europe/Berlin', "
                "or leave it out to read the zone from /user/current",
            )
            valid = False

    if not valid or deployment is None or base_url is None or auth is None:
        return None
    if content_types is None:
        return None
    return SourceConfig(
        id=source_id,
        deployment=deployment,
        base_url=base_url,
        cloud_id=cloud_id,
        auth=auth,
        spaces=spaces,
        content_types=content_types,
        concurrency=int(values["concurrency"]),
        rate_limit=float(values["rate_limit"]),
        burst=int(values["burst"]),
        page_size=int(values["page_size"]),
        overlap=timedelta(minutes=float(values["overlap_minutes"])),
        time_zone=None if time_zone is None else str(time_zone),
        request_timeout=float(values["request_timeout"]),
        max_retries=int(values["max_retries"]),
        max_retry_after=float(values["max_retry_after"]),
        backoff_initial=float(values["backoff_initial"]),
        backoff_max=float(values["backoff_max"]),
    )


def parse_sources(
    document: Mapping[str, Any], *, origin: str = "sources file"
) -> dict[str, SourceConfig]:
    """Validate a parsed sources document; raise ConfigurationError listing every problem."""
    problems = _Collector()
    problems.unknown_keys("(top level)", document, frozenset({"sources"}))
    tables = document.get("sources")
    if not isinstance(tables, dict) or not tables:
        problems.add(
            "sources",
            "no sources defined: add a [sources.ID] table for each Confluence site",
        )
        raise ConfigurationError(problems.problems, source=origin)
    sources: dict[str, SourceConfig] = {}
    for source_id, table in tables.items():
        parsed = _parse_source(problems, source_id, table)
        if parsed is not None:
            sources[source_id] = parsed
    if problems.problems:
        raise ConfigurationError(problems.problems, source=origin)
    return sources


def load_sources(path: Path) -> dict[str, SourceConfig]:
    """Read and validate a TOML sources file; raise ConfigurationError with every problem."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(
            [f"sources file {str(path)!r} not found: pass --sources PATH naming a TOML file"]
        ) from None
    except OSError as error:
        raise ConfigurationError(
            [
                f"sources file {str(path)!r} cannot be read ({error.strerror}): check its path "
                "and permissions"
            ]
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            [f"sources file {str(path)!r} is not valid TOML: {error}"]
        ) from None
    return parse_sources(document, origin=str(path))


def select_source(sources: Mapping[str, SourceConfig], source_id: str) -> SourceConfig:
    """Return one source by id; an unknown id is a ConfigurationError with a hint."""
    try:
        return sources[source_id]
    except KeyError:
        hint = _suggest(source_id, set(sources))
        raise ConfigurationError(
            [f"--source {source_id!r} is not defined in the sources file; {hint}"]
        ) from None


def load_source(path: Path, source_id: str) -> SourceConfig:
    """Read the sources file and return the source ``source_id``."""
    return select_source(load_sources(path), source_id)
