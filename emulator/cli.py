"""Command line of the Confluence emulator: ``confluence-emulator serve ...``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import warnings
from pathlib import Path

from aiohttp import web

from emulator.config import (
    FLAVOURS,
    SITE_KINDS,
    OptionError,
    ServerOptions,
    normalize_context_path,
    parse_rate,
)
from emulator.corpus import CorpusError

logger = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``confluence-emulator``."""
    parser = _Parser(
        prog="confluence-emulator",
        description="Serve a local Confluence REST API v1 site for demos, tests and benchmarks.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve a generated or imported site over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8090, help="TCP port (default 8090; 0 picks a free port)"
    )
    serve.add_argument(
        "--site", default="generated", help=f"site source: {' or '.join(SITE_KINDS)}"
    )
    serve.add_argument("--seed", type=int, default=1, help="seed of the site generator")
    serve.add_argument(
        "--pages", type=int, default=200, help="pages of the generated site (default 200)"
    )
    serve.add_argument(
        "--spaces",
        type=int,
        default=0,
        help="global spaces of the generated site (default: grows with --pages)",
    )
    serve.add_argument("--corpus", type=Path, help="folder of HTML files to import (--site corpus)")
    serve.add_argument(
        "--flavour", default="all", help=f"roots to serve: {', '.join(FLAVOURS)} (default all)"
    )
    serve.add_argument(
        "--context-path", default="", help="Data Center context path, e.g. /confluence"
    )
    serve.add_argument(
        "--cloud-id", default=ServerOptions.cloud_id, help="cloud id of the OAuth gateway root"
    )
    serve.add_argument(
        "--time-zone",
        default=ServerOptions.time_zone,
        help="site time zone for CQL date literals (IANA name)",
    )
    serve.add_argument(
        "--rate-limit", help="burst limit in requests per second, e.g. 50/s (default: none)"
    )
    serve.add_argument("--burst", type=int, help="token bucket size in requests")
    serve.add_argument(
        "--latency", type=float, default=0.0, help="fixed delay of every API response in ms"
    )
    serve.add_argument(
        "--latency-jitter", type=float, default=0.0, help="extra random delay of up to this many ms"
    )
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ROUTE:KIND:PROB",
        help="fault rule, repeatable, e.g. '/content/search:503:0.1' or '*:latency:1.0:50'",
    )
    serve.add_argument(
        "--search-lag",
        type=float,
        default=0.0,
        help="seconds before a change becomes visible to CQL search",
    )
    serve.add_argument(
        "--search-short-pages",
        type=float,
        default=ServerOptions.search_short_page_rate,
        help="share of mid-walk CQL search pages that come back short (0..1)",
    )
    serve.add_argument(
        "--dc-quirks",
        action="store_true",
        help="Data Center quirks: silently capped limit with an over-counted next start, "
        "and /search without a next link",
    )
    serve.add_argument(
        "--dc-limit-cap",
        type=int,
        default=ServerOptions.dc_limit_cap,
        help="rows a Data Center /content page serves at most with --dc-quirks",
    )
    serve.add_argument(
        "--cloud-quirks",
        action="store_true",
        help="Cloud quirk: offset lists send a next link with a full last page and with "
        "the empty page past the end",
    )
    serve.add_argument(
        "--v1-gone",
        action="store_true",
        help="respond to deprecated v1 reads on the OAuth gateway with 410 Gone",
    )
    serve.add_argument("--control", action="store_true", help="enable the /_emulator control API")
    serve.add_argument(
        "--user-email", default=ServerOptions.user_email, help="email of the API user"
    )
    serve.add_argument("--api-token", help="API token of the API user (default: generated)")
    serve.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    return parser


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Turn parsed arguments into validated ServerOptions; raise OptionError if invalid."""
    rate = parse_rate(args.rate_limit) if args.rate_limit is not None else None
    token_kwargs = {"api_token": args.api_token} if args.api_token is not None else {}
    options = ServerOptions(
        host=args.host,
        port=args.port,
        site=args.site,
        seed=args.seed,
        pages=args.pages,
        spaces=args.spaces,
        corpus=args.corpus,
        flavour=args.flavour,
        context_path=normalize_context_path(args.context_path),
        cloud_id=args.cloud_id,
        time_zone=args.time_zone,
        rate_limit=rate,
        burst=args.burst,
        latency_ms=args.latency,
        latency_jitter_ms=args.latency_jitter,
        faults=tuple(args.fault),
        search_lag=args.search_lag,
        search_short_page_rate=args.search_short_pages,
        dc_quirks=args.dc_quirks,
        dc_limit_cap=args.dc_limit_cap,
        cloud_quirks=args.cloud_quirks,
        v1_gone=args.v1_gone,
        control=args.control,
        user_email=args.user_email,
        **token_kwargs,
    )
    options.validate()
    return options


def _banner(options: ServerOptions, port: int, credentials: object) -> list[str]:
    from emulator.app import base_urls
    from emulator.routes_common import Credentials

    assert isinstance(credentials, Credentials)
    urls = base_urls(options, options.host, port)
    lines = [f"confluence-emulator listening on http://{options.host}:{port}"]
    labels = {
        "cloud": "Cloud site base URL",
        "gateway": "OAuth gateway base URL",
        "datacenter": "Data Center base URL",
        "control": "Control API",
    }
    for name, url in urls.items():
        lines.append(f"{labels[name]}: {url}")
    lines.append(
        f"Cloud Basic credentials: email={credentials.email} api_token={credentials.api_token}"
    )
    lines.append(
        f"Data Center credentials: username={credentials.username} "
        f"password={credentials.password} personal_access_token="
        f"{credentials.personal_access_token}"
    )
    lines.append(
        f"OAuth client: client_id={credentials.oauth_client_id} "
        f"client_secret={credentials.oauth_client_secret}"
    )
    return lines


async def _serve(options: ServerOptions) -> None:
    from emulator.app import create_app, start_site
    from emulator.routes_common import CREDENTIALS_KEY

    # Handlers go in first: a caller may signal as soon as it has read the banner.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(options)
    runner, port = await start_site(app, options.host, options.port)
    # A local test server prints its credentials on purpose: clients need them.
    for line in _banner(options, port, app[CREDENTIALS_KEY]):
        print(line, flush=True)
    try:
        await stop.wait()
    finally:
        logger.info("stopping the emulator on port %d", port)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run ``confluence-emulator``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2

    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        sys.stderr.write(
            f"confluence-emulator: error: invalid --log-level {args.log_level!r}: "
            "use DEBUG, INFO, WARNING or ERROR\n"
        )
        return 2

    try:
        options = options_from_args(args)
    except OptionError as error:
        sys.stderr.write(f"confluence-emulator: error: {error}\n")
        return 2

    # The gate and the routing middleware share per-request values under the string keys
    # of their interface (``flavour``, ``api_path``, ``user_id``), which aiohttp reports
    # with NotAppKeyWarning on every request.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        asyncio.run(_serve(options))
    except CorpusError as error:
        sys.stderr.write(f"confluence-emulator: error: --corpus: {error}\n")
        return 2
    except OptionError as error:
        sys.stderr.write(f"confluence-emulator: error: {error}\n")
        return 2
    except OSError as error:
        sys.stderr.write(
            f"confluence-emulator: error: cannot listen on {options.host}:{options.port}: "
            f"{error.strerror or error}; choose another --port or 0 for a free one\n"
        )
        return 1
    return 0
