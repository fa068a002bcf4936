"""Command line of the Confluence emulator: ``confluence-emulator serve ...``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

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
    bench = commands.add_parser(
        "bench",
        help="serve a site in a child process and measure list requests per second",
        description="Start `confluence-emulator serve` with the given options on a free port "
        "and walk /content lists of every space for a while, printing one result line.",
    )
    _add_serve_options(serve)
    _add_serve_options(bench)
    bench.add_argument("--concurrency", type=int, default=8, help="parallel list walks (default 8)")
    bench.add_argument(
        "--duration", type=float, default=20.0, help="seconds to measure (default 20)"
    )
    bench.add_argument("--limit", type=int, default=100, help="rows per request (default 100)")
    bench.add_argument(
        "--expand",
        default="body.storage,version",
        help="expand parameter of each request (default body.storage,version)",
    )
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
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
        help="seconds the CQL search index lags behind changes: new items are missing, "
        "edited and trashed ones are found as they were",
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
        help="Data Center quirks: silently capped limit with an over-counted next start "
        "(also on /space, at 500 spaces), and /search without a next link",
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
        help="respond to deprecated v1 reads by OAuth callers on the gateway with 410 Gone",
    )
    serve.add_argument(
        "--anonymous",
        action="store_true",
        help="serve requests without credentials as the anonymous user instead of refusing them",
    )
    serve.add_argument("--control", action="store_true", help="enable the /_emulator control API")
    serve.add_argument(
        "--user-email", default=ServerOptions.user_email, help="email of the API user"
    )
    serve.add_argument("--api-token", help="API token of the API user (default: generated)")
    serve.add_argument(
        "--reader-email",
        default=ServerOptions.reader_email,
        help="email of the second user, whom generated read restrictions leave out",
    )
    serve.add_argument(
        "--reader-token",
        help="API token, Data Center password and PAT of the second user (default: generated)",
    )
    serve.add_argument(
        "--media-host",
        help="host[:port] that attachment downloads redirect to (default: localhost for "
        "requests to 127.0.0.1, else 127.0.0.1; the port stays the server's)",
    )
    serve.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Turn parsed arguments into validated ServerOptions; raise OptionError if invalid."""
    rate = parse_rate(args.rate_limit) if args.rate_limit is not None else None
    token_kwargs = {"api_token": args.api_token} if args.api_token is not None else {}
    if args.reader_token is not None:
        token_kwargs["reader_api_token"] = args.reader_token
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
        anonymous_access=args.anonymous,
        control=args.control,
        user_email=args.user_email,
        reader_email=args.reader_email,
        media_host=args.media_host,
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
        f"Second user (left out of some read restrictions): email={credentials.reader_email} "
        f"username={credentials.reader_username} token={credentials.reader_token}"
    )
    lines.append(
        f"OAuth client: client_id={credentials.oauth_client_id} "
        f"client_secret={credentials.oauth_client_secret}"
    )
    return lines


async def _serve(options: ServerOptions) -> None:
    from emulator.app import create_app, start_site
    from emulator.keys import CREDENTIALS_KEY

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


@dataclass
class BenchSettings:
    """Settings of one ``confluence-emulator bench`` run."""

    serve_argv: list[str]
    concurrency: int
    duration: float
    limit: int
    expand: str


@dataclass
class BenchResult:
    """Counts of one benchmark run."""

    settings: BenchSettings
    requests: int = 0
    rows: int = 0
    bytes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def summary(self) -> str:
        """Return the one-line result: request and row rates plus statuses seen."""
        seconds = max(self.elapsed, 1e-9)
        statuses = ",".join(f"{status}:{count}" for status, count in sorted(self.statuses.items()))
        return (
            f"requests={self.requests} seconds={self.elapsed:.1f} "
            f"requests_per_second={self.requests / seconds:.1f} "
            f"rows_per_second={self.rows / seconds:.0f} "
            f"megabytes_per_second={self.bytes / seconds / 1e6:.1f} "
            f"limit={self.settings.limit} concurrency={self.settings.concurrency} "
            f"statuses={statuses}"
        )


def _banner_values(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split(": ", 1)[1].split() if "=" in part)


_SIZE = re.compile(rb'"size":(\d+)')
_NEXT = re.compile(rb'"next":"([^"]+)"')


def page_tail(body: bytes) -> tuple[int, str | None]:
    """Read ``size`` and ``_links.next`` of a ContentArray from the end of its body.

    Both sit after ``results``, so the client need not parse hundreds of kilobytes per
    page and the measurement stays a measurement of the server.
    """
    tail = body[-4096:]
    envelope_links = tail.rfind(b'"_links":')
    sizes = _SIZE.findall(tail[:envelope_links])
    if envelope_links < 0 or not sizes:
        page = orjson.loads(body)
        return len(page["results"]), page["_links"].get("next")
    link = _NEXT.search(tail[envelope_links:])
    return int(sizes[-1]), link.group(1).decode() if link else None


async def run_benchmark(settings: BenchSettings) -> BenchResult:
    """Start a server process, walk ``/content`` lists of every space, and count."""
    import aiohttp

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator", *settings.serve_argv, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    banner: dict[str, str] = {}
    while "OAuth client" not in banner:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise OptionError(
                "the server process ended before it printed its banner; run the same "
                "options with `confluence-emulator serve` to see its error"
            )
        label = line.strip().partition(": ")[0]
        banner[label] = line.strip()
    if "Cloud site base URL" in banner:
        base = banner["Cloud site base URL"].split(": ", 1)[1]
        cloud = _banner_values(banner["Cloud Basic credentials"])
        login, password = cloud["email"], cloud["api_token"]
    else:
        base = banner["Data Center base URL"].split(": ", 1)[1]
        datacenter = _banner_values(banner["Data Center credentials"])
        login, password = datacenter["username"], datacenter["password"]

    result = BenchResult(settings)
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(base + "/rest/api/space", params={"limit": "1000"}) as response:
                keys = [space["key"] for space in (await response.json())["results"]]
            deadline = time.perf_counter() + settings.duration
            started = time.perf_counter()

            async def walk(worker: int) -> None:
                position = worker
                url: str | None = None
                while time.perf_counter() < deadline:
                    if url is None:
                        key = keys[position % len(keys)]
                        position += settings.concurrency
                        query = (
                            f"?spaceKey={key}&type=page&limit={settings.limit}"
                            f"&expand={settings.expand}"
                        )
                        url = base + "/rest/api/content" + query
                    async with session.get(url) as response:
                        body = await response.read()
                    result.requests += 1
                    result.bytes += len(body)
                    result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
                    if response.status != 200:
                        continue
                    rows, link = page_tail(body)
                    result.rows += rows
                    url = base + link if link and rows else None

            await asyncio.gather(*(walk(worker) for worker in range(settings.concurrency)))
            result.elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        await process.wait()
    return result


_BENCH_ONLY = ("--concurrency", "--duration", "--limit", "--expand", "--port")


def bench_serve_argv(argv: list[str]) -> list[str]:
    """Turn ``bench`` arguments into ``serve`` arguments on a free port."""
    served: list[str] = ["serve"]
    skip_value = False
    for argument in argv[1:]:
        if skip_value:
            skip_value = False
            continue
        name = argument.split("=", 1)[0]
        if name in _BENCH_ONLY:
            skip_value = "=" not in argument
            continue
        served.append(argument)
    return [*served, "--port", "0"]


def _run_bench(args: argparse.Namespace, argv: list[str]) -> int:
    if args.concurrency < 1 or args.duration <= 0 or args.limit < 1:
        sys.stderr.write(
            f"confluence-emulator: error: invalid --concurrency {args.concurrency}, "
            f"--duration {args.duration} or --limit {args.limit}: use positive numbers\n"
        )
        return 2
    settings = BenchSettings(
        serve_argv=bench_serve_argv(argv),
        concurrency=args.concurrency,
        duration=args.duration,
        limit=args.limit,
        expand=args.expand,
    )
    try:
        result = asyncio.run(run_benchmark(settings))
    except OptionError as error:
        sys.stderr.write(f"confluence-emulator: error: {error}\n")
        return 1
    print(result.summary(), flush=True)
    return 0


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

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "bench":
        return _run_bench(args, sys.argv[1:] if argv is None else argv)

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
