"""``confluence-producer check``: verify a source's settings against its server.

The checks run in order and each produces one row of the printed table:

1. credentials: ``GET /user/current`` returns the account.
2. scopes (cloud-oauth with OAuth 2.0 only): the grant carries every scope the source
   lists, as ``/oauth/token/accessible-resources`` reports them for its cloud id.
3. v1 reads: ``GET /space`` works (Cloud returns 410 Gone on the OAuth gateway).
4. CQL search: ``GET /search`` (Cloud) or ``/content/search`` (Data Center) works.
5. spaces: every configured include/exclude key exists; a misspelt key fails here.
6. time zone: CQL date literals need a zone: ``time_zone`` or the account's ``timeZone``.

Exit status: 0 when every check passed, 1 when one failed, 2 for configuration errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import requests

from producer.auth import OAuth2Auth
from producer.client import ConfluenceClient, redact_url
from producer.config import SourceConfig, load_source
from producer.errors import ConfigurationError, ProducerError

logger = logging.getLogger(__name__)

SOURCES_ENV = "CONFLUENCE_SOURCES"
DEFAULT_SOURCES = "sources.toml"
V1_FIX = (
    "use deployment 'cloud' with basic auth (email and API token) on "
    "https://SITE.atlassian.net, where Cloud still serves the v1 reads"
)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: its name, whether it passed, what was found, and the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``check`` to ``parser``."""
    parser.add_argument("--source", required=True, metavar="ID", help="id of the source to check")
    parser.add_argument(
        "--sources",
        type=Path,
        default=Path(os.environ.get(SOURCES_ENV, DEFAULT_SOURCES)),
        metavar="PATH",
        help=f"TOML sources file (default: ${SOURCES_ENV} or ./{DEFAULT_SOURCES})",
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments of ``confluence-producer check`` and run it."""
    parser = argparse.ArgumentParser(
        prog="confluence-producer check",
        description="Check a source's credentials, scopes, API surface and spaces.",
    )
    add_check_arguments(parser)
    return run_check(parser.parse_args(argv))


def run_check(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run every check of ``args.source`` and print the table; return the exit status."""
    stream = out or sys.stdout
    try:
        source = load_source(Path(args.sources), str(args.source))
        client = ConfluenceClient(source)
    except ConfigurationError as error:
        print(str(error), file=sys.stderr if out is None else stream)
        return 2
    with client:
        results = run_checks(source, client)
    print_table(source, results, stream)
    return 0 if all(result.ok for result in results) else 1


def run_checks(source: SourceConfig, client: ConfluenceClient) -> list[CheckResult]:
    """Run the checks in order; a failed credentials check skips the rest."""
    results: list[CheckResult] = []
    user = _check_credentials(source, client, results)
    if user is None:
        return results
    if source.deployment == "cloud-oauth" and isinstance(client.authenticator, OAuth2Auth):
        results.append(_check_scopes(source, client))
    v1_ok = _record(results, "v1 reads", lambda: _check_v1(client))
    _record(results, "CQL search", lambda: _check_search(source, client))
    if v1_ok:
        _record(results, "spaces", lambda: _check_spaces(source, client))
    else:
        results.append(CheckResult("spaces", False, "not verified: /space is not readable", V1_FIX))
    results.append(_check_time_zone(source, user))
    return results


def _record(results: list[CheckResult], name: str, check: Callable[[], CheckResult]) -> bool:
    try:
        result = check()
    except ProducerError as error:
        result = CheckResult(name, False, _describe(error), _fix_of(error))
    results.append(result)
    return result.ok


def _describe(error: ProducerError) -> str:
    status = f"HTTP {error.status}" if error.status is not None else type(error).__name__
    return f"{status}: {error.message}"


def _fix_of(error: ProducerError) -> str:
    if error.status == 410:
        return V1_FIX
    if error.status in (401, 403):
        return "check the credentials and the account's permissions"
    if error.status is None or error.status >= 500 or error.status == 429:
        return "the server is unavailable or rate limiting: run check again later"
    return "see the detail"


def _check_credentials(
    source: SourceConfig, client: ConfluenceClient, results: list[CheckResult]
) -> dict[str, Any] | None:
    try:
        user = client.current_user()
    except ProducerError as error:
        results.append(
            CheckResult(
                "credentials",
                False,
                _describe(error),
                f"check the {source.auth.method} credentials of sources.{source.id}.auth "
                f"and that {source.api_root} is the right API root",
            )
        )
        return None
    if user.get("type") == "anonymous":
        # Data Center treats an unknown personal access token as no credential at all
        # when anonymous access is on, so the crawl would see only public spaces.
        results.append(
            CheckResult(
                "credentials",
                False,
                "the server treated the request as anonymous",
                f"the credentials of sources.{source.id}.auth are wrong or expired: "
                "replace the token",
            )
        )
        return None
    name = user.get("displayName") or user.get("username") or user.get("publicName") or "?"
    account = user.get("accountId") or user.get("userKey") or user.get("username") or "?"
    results.append(CheckResult("credentials", True, f"signed in as {name} ({account})"))
    return user


def _check_scopes(source: SourceConfig, client: ConfluenceClient) -> CheckResult:
    url = f"{source.base_url}/oauth/token/accessible-resources"
    try:
        response = client.session.get(
            url,
            headers={
                "Accept": "application/json",
                "Authorization": client.authenticator.authorization(),
            },
            timeout=source.request_timeout,
        )
    except requests.RequestException as error:
        return CheckResult(
            "scopes", False, f"{redact_url(url)} failed: {type(error).__name__}", "retry later"
        )
    except ProducerError as error:
        return CheckResult("scopes", False, _describe(error), _fix_of(error))
    if response.status_code != 200:
        return CheckResult(
            "scopes",
            False,
            f"{redact_url(url)} returned HTTP {response.status_code}",
            "renew the OAuth grant",
        )

    try:
        resources = response.json()
    except ValueError:
        resources = None
    if not isinstance(resources, list):
        return CheckResult("scopes", False, "accessible-resources did not return a list", "")

    site = next(
        (
            item
            for item in resources
            if isinstance(item, dict) and item.get("id") == source.cloud_id
        ),
        None,
    )
    if site is None:
        known = ", ".join(
            f"{item.get('id')} ({item.get('url')})" for item in resources if isinstance(item, dict)
        )
        return CheckResult(
            "scopes",
            False,
            f"the grant does not cover cloud id {source.cloud_id}",
            f"set cloud_id to one of: {known or 'none (the grant covers no site)'}",
        )

    granted = {str(scope) for scope in site.get("scopes", [])}
    # offline_access yields the refresh token and is not listed per site.
    missing = sorted(set(source.auth.scopes) - granted - {"offline_access"})
    if missing:
        return CheckResult(
            "scopes",
            False,
            f"the grant lacks {', '.join(missing)}",
            "add the scopes to the OAuth app, run the consent flow again and write the "
            "new refresh token to refresh_token_file",
        )
    return CheckResult("scopes", True, f"{len(granted)} scopes granted for {site.get('url')}")


def _check_v1(client: ConfluenceClient) -> CheckResult:
    client.get("/space", {"limit": 1})
    client.get("/content", {"type": "page", "limit": 1})
    return CheckResult("v1 reads", True, "/space and /content work")


def _check_search(source: SourceConfig, client: ConfluenceClient) -> CheckResult:
    path = "/content/search" if source.deployment == "datacenter" else "/search"
    raw = client.get(path, {"cql": "type=page", "limit": 1})
    total = raw.get("totalSize", raw.get("size", "?"))
    return CheckResult("CQL search", True, f"{path} works (totalSize {total})")


def _check_spaces(source: SourceConfig, client: ConfluenceClient) -> CheckResult:
    selection = source.spaces
    wanted = sorted(set(selection.include) | set(selection.exclude))
    if not wanted:
        raw = client.get("/space", {"limit": 1})
        found = len(raw.get("results", []))
        detail = "no keys configured: every space matching the types and statuses"
        if found == 0:
            return CheckResult(
                "spaces", False, "the account sees no space", "grant the account space access"
            )
        return CheckResult("spaces", True, detail)
    missing = []
    for key in wanted:
        try:
            client.get(f"/space/{key}")
        except ProducerError as error:
            if error.status == 404:
                missing.append(key)
                continue
            raise
    if missing:
        return CheckResult(
            "spaces",
            False,
            f"space key(s) not found: {', '.join(missing)}",
            f"fix the spelling in sources.{source.id}.spaces (keys are case-sensitive) or "
            "grant the account access to the space",
        )
    return CheckResult("spaces", True, f"all {len(wanted)} configured keys exist")


def _check_time_zone(source: SourceConfig, user: dict[str, Any]) -> CheckResult:
    if source.time_zone is not None:
        return CheckResult("time zone", True, f"configured: {source.time_zone}")
    zone = user.get("timeZone")
    if isinstance(zone, str) and zone:
        return CheckResult("time zone", True, f"from /user/current: {zone}")
    return CheckResult(
        "time zone",
        False,
        "the account's timeZone is hidden and time_zone is not set",
        f"set time_zone in sources.{source.id} to the zone of the account or site",
    )


def print_table(source: SourceConfig, results: list[CheckResult], out: TextIO) -> None:
    """Print one row per check: name, ok/failed, detail and fix."""
    print(f"source {source.id} ({source.deployment}) at {source.api_root}", file=out)
    width = max(len(result.name) for result in results)
    for result in results:
        mark = "ok" if result.ok else "FAILED"
        print(f"  {result.name:<{width}}  {mark:<6}  {result.detail}", file=out)
        if not result.ok and result.fix:
            print(f"  {'':<{width}}  {'':<6}  fix: {result.fix}", file=out)
    failed = sum(1 for result in results if not result.ok)
    summary = "all checks passed" if not failed else f"{failed} of {len(results)} checks failed"
    print(summary, file=out)
