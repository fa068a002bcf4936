"""Crawl benchmark: our producer against the LlamaIndex and LangChain loaders, and scale.

Every contender loads the pages and blog posts, with bodies, of the same current global
spaces from one emulator process with the same site, latency and rate limit. Each run is
a subprocess. Its items per second are the items it reports over its wall time, start-up
included. Its requests and 429 responses come from the emulator's counters, which are
reset before each run, and its memory is the peak RSS of its process tree.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench import peer_env, profiles
from bench.config import BODY_PAGE_SIZE, ROOT, Context
from bench.emulator import API_TOKEN, USER_EMAIL, Emulator, SiteSettings, request_totals
from bench.procs import ProcessRun, run_measured
from bench.report import Table, format_cell, format_percent, format_ratio
from bench.stats import Summary, ratio

logger = logging.getLogger(__name__)

OURS = "confluence-stream producer"
_RECORDS_LINE = re.compile(r"^\s*records:\s*(?P<counts>.*)$", re.MULTILINE)
_JOB_RATE = re.compile(r"items_per_second=(?P<rate>[\d.]+)")
MEGABYTE = 1024 * 1024


@dataclass
class ContenderRuns:
    """Measurements of one contender over several runs."""

    name: str
    items_per_second: list[float] = field(default_factory=list)
    items: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    # Items per second by the job's own clock, start-up left out (our producer only).
    job_items_per_second: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure: str | None = None

    def add(self, items: int, run: ProcessRun, requests: int, throttled: int) -> None:
        """Record one successful run."""
        self.items.append(items)
        self.seconds.append(run.seconds)
        self.items_per_second.append(items / run.seconds if run.seconds > 0 else 0.0)
        self.requests.append(requests)
        self.throttled.append(throttled)
        self.peak_rss_mb.append(run.peak_rss_bytes / MEGABYTE)

    def summary(self, values: list[float]) -> Summary | None:
        return Summary.of(values) if values else None


def site_settings(ctx: Context, pages: int) -> SiteSettings:
    """Return the emulator settings of the crawl benchmarks for a site of ``pages``."""
    mode = ctx.mode
    return SiteSettings(
        pages=pages,
        latency_ms=mode.latency_ms,
        rate_per_second=mode.rate_per_second,
        burst=mode.burst,
    )


def write_sources_file(ctx: Context, emulator: Emulator, spaces: list[str], name: str) -> Path:
    """Write the sources file of our producer for this emulator and return its path."""
    folder = ctx.work_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "api-token"
    token_file.write_text(API_TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    settings = emulator.settings
    include = ", ".join(f'"{key}"' for key in spaces)
    text = f"""[sources.bench]
deployment = "cloud"
base_url = "{emulator.origin}"
content_types = ["page", "blogpost"]
concurrency = 4
rate_limit = {settings.rate_per_second or 1000.0:.1f}
burst = {settings.burst or 100}
page_size = {BODY_PAGE_SIZE}

[sources.bench.auth]
method = "basic"
username = "{USER_EMAIL}"
token_file = "{token_file}"

[sources.bench.spaces]
include = [{include}]
types = ["global"]
statuses = ["current"]
"""
    path = folder / "sources.toml"
    path.write_text(text, encoding="utf-8")
    return path


def producer_argv(ctx: Context, sources: Path) -> list[str]:
    """Return the command line of one full crawl by our producer."""
    return [
        ctx.console_script("confluence-producer"),
        "--log-level",
        "WARNING",
        "crawl",
        "--source",
        "bench",
        "--sources",
        str(sources),
        "--full",
        "--no-progress",
    ]


def parse_record_counts(stdout: str) -> dict[str, int]:
    """Return the record counts by type from the summary that ``crawl`` prints."""
    match = _RECORDS_LINE.search(stdout)
    if match is None:
        return {}
    counts: dict[str, int] = {}
    for part in match["counts"].split():
        name, _, value = part.partition("=")
        if value.isdigit():
            counts[name] = int(value)
    return counts


def run_ours(ctx: Context, emulator: Emulator, sources: Path, runs: ContenderRuns) -> None:
    """Run one crawl by our producer and add it to ``runs``."""
    emulator.reset_counters()
    run = run_measured(producer_argv(ctx, sources), env=ctx.env(), timeout=ctx.mode.timeout_seconds)
    requests, throttled = request_totals(emulator.counters())
    if not run.ok:
        runs.failure = f"failed: {run.failure()}"
        logger.warning("our producer failed: %s", run.failure())
        return
    counts = parse_record_counts(run.stdout)
    items = counts.get("page", 0) + counts.get("blogpost", 0)
    runs.add(items, run, requests, throttled)
    job_rate = _JOB_RATE.search(run.stdout)
    if job_rate is not None:
        runs.job_items_per_second.append(float(job_rate["rate"]))


def peer_argv(peer: peer_env.Peer, emulator: Emulator, spaces: list[str], token: Path) -> list[str]:
    """Return the command line of one load by a peer, run with the peers' interpreter."""
    argv = [
        str(peer_env.python()),
        "-m",
        peer.module,
        "--base-url",
        emulator.cloud_base,
        "--user",
        USER_EMAIL,
        "--token-file",
        str(token),
    ]
    for key in spaces:
        argv += ["--space", key]
    return argv


def run_peer(
    ctx: Context, peer: peer_env.Peer, emulator: Emulator, argv: list[str], runs: ContenderRuns
) -> None:
    """Run one load by a peer and add it to ``runs``."""
    emulator.reset_counters()
    run = run_measured(argv, env=ctx.env(), cwd=ROOT, timeout=ctx.mode.timeout_seconds)
    requests, throttled = request_totals(emulator.counters())
    result_line = next(
        (line for line in reversed(run.stdout.splitlines()) if line.startswith("{")), None
    )
    if not run.ok or result_line is None:
        runs.failure = f"failed: {run.failure()}"
        logger.warning("%s failed: %s", peer.name, run.failure())
        return
    result = json.loads(result_line)
    items = sum(int(count) for count in result["items"].values())
    for case, error in result["errors"].items():
        note = f"cannot load {case}s: {error}"
        if note not in runs.notes:
            runs.notes.append(note)
    runs.add(items, run, requests, throttled)


def crawl_benchmark(ctx: Context) -> Table:
    """Measure every contender on the crawl site and return the result table."""
    mode = ctx.mode
    settings = site_settings(ctx, mode.crawl_pages)
    ceiling = mode.rate_per_second * BODY_PAGE_SIZE
    table = Table(
        name="crawl",
        title="Crawl: our producer against the Confluence loaders of LlamaIndex and LangChain",
        columns=[
            "Contender",
            "Items/s",
            "Items",
            "Seconds",
            "Requests",
            "429s",
            "Peak RSS (MB)",
            "Ours ÷ this",
            "Note",
        ],
    )
    peer_states = peer_env.ensure_peers()
    with Emulator(settings, ctx.work_dir / "logs" / "emulator-crawl.log") as emulator:
        spaces = emulator.current_global_spaces()
        counts = emulator.content_counts()
        table.setup = [
            f"Emulator: {settings.describe()}; {counts.get('page', 0):,} current pages and "
            f"{counts.get('blogpost', 0):,} current blog posts in all spaces.",
            f"Every contender loads the pages and blog posts, with bodies, of the current "
            f"global spaces {', '.join(spaces)}. Items are pages plus blog posts loaded.",
            f"{mode.runs} run(s) per contender; figures are medians with (min-max). Each run "
            "is a subprocess timed from start to exit, start-up included; requests and 429s "
            "come from the emulator's counters, peak RSS from /proc samples of the process "
            "tree every 50 ms.",
            "Our producer: `confluence-producer crawl --full`, content types page and "
            f"blogpost, 4 workers, client rate limit {mode.rate_per_second:g} requests/s with "
            f"burst {mode.burst}, page size {BODY_PAGE_SIZE}, records produced to a real "
            "Kafka topic and acknowledged. It also publishes space records and the structure "
            "listing of each space, whose requests count here too.",
            "Peers run in their own virtual environment with their defaults, except what "
            "each script's docstring in bench/peers/ lists (page size, result limits, "
            "atlassian-python-api's backoff_and_retry so a 429 is retried).",
            f"Ceiling: the rate limit times the {BODY_PAGE_SIZE} items that a list request "
            f"with bodies returns at most = {ceiling:,.0f} items/s.",
        ]
        ours = ContenderRuns(OURS)
        sources = write_sources_file(ctx, emulator, spaces, "crawl")
        token = sources.parent / "api-token"
        peers = [
            (peer, ContenderRuns(peer.name))
            for peer in peer_env.PEERS
            if not peer_states[peer.name].startswith("not installable")
        ]
        for run_index in range(mode.runs):
            logger.info("crawl run %d of %d", run_index + 1, mode.runs)
            run_ours(ctx, emulator, sources, ours)
            for peer, runs in peers:
                if runs.failure is None:
                    logger.info("crawl with %s", peer.name)
                    run_peer(ctx, peer, emulator, peer_argv(peer, emulator, spaces, token), runs)
        profile_note = profile_crawl(ctx, emulator, sources)

    ours_rate = ours.summary(ours.items_per_second)
    job_rate = ours.summary(ours.job_items_per_second)
    ours_note = ""
    if ours_rate is not None:
        ours_note = f"{format_percent(_fraction(ours_rate, ceiling))} of the ceiling"
    if job_rate is not None:
        ours_note += (
            f"; {format_cell(job_rate)} items/s by the job's own clock (start-up left out), "
            f"{format_percent(_fraction(job_rate, ceiling))} of the ceiling"
        )
    _add_row(table, ours, ours_rate, note=ours_note)
    for peer in peer_env.PEERS:
        state = peer_states[peer.name]
        peer_runs = next((runs for candidate, runs in peers if candidate is peer), None)
        if peer_runs is None:
            table.add_row(peer.name, None, None, None, None, None, None, None, state)
            continue
        _add_row(table, peer_runs, ours_rate, note="; ".join([state, *peer_runs.notes]))
    table.add_row(
        f"Ceiling ({mode.rate_per_second:g} requests/s x {BODY_PAGE_SIZE} items)",
        ceiling,
        None,
        None,
        None,
        None,
        None,
        format_percent(_fraction(ours_rate, ceiling)),
        "physical limit of the emulator settings",
    )
    if ours.failure:
        table.notes.append(f"Our producer: {ours.failure}")
    table.notes.append(profile_note)
    return table


def _fraction(rate: Summary | None, ceiling: float) -> float | None:
    if rate is None or ceiling <= 0:
        return None
    return rate.median / ceiling


def _add_row(table: Table, runs: ContenderRuns, ours_rate: Summary | None, note: str) -> None:
    rate = runs.summary(runs.items_per_second)
    if rate is None:
        table.add_row(
            runs.name,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "; ".join(filter(None, [runs.failure, note])),
        )
        return
    relative = ratio(ours_rate, rate) if ours_rate is not None else None
    shown_ratio = "-" if runs.name == OURS else format_ratio(relative)
    table.add_row(
        runs.name,
        rate,
        runs.summary(runs.items),
        runs.summary(runs.seconds),
        runs.summary(runs.requests),
        runs.summary(runs.throttled),
        runs.summary(runs.peak_rss_mb),
        shown_ratio,
        "; ".join(filter(None, [runs.failure, note])),
    )


def profile_crawl(ctx: Context, emulator: Emulator, sources: Path) -> str:
    """Profile one more crawl by our producer; return the note for the report."""
    if not ctx.profile:
        return "Profile: skipped (--no-profile)."
    emulator.reset_counters()
    raw = ctx.work_dir / "profiles" / "crawl.raw"
    try:
        result = profiles.record(
            producer_argv(ctx, sources), raw, env=ctx.env(), timeout=ctx.mode.timeout_seconds
        )
    except (FileNotFoundError, OSError) as error:
        return f"Profile: not available: {error}"
    if result.returncode != 0 or not raw.exists():
        return (
            f"Profile: not available: py-spy exited with {result.returncode}: "
            f"{result.stderr.strip()[-300:]}"
        )
    summary = profiles.summarise(raw.read_text(encoding="utf-8").splitlines())
    ctx.profiles_dir.mkdir(parents=True, exist_ok=True)
    (ctx.profiles_dir / "crawl.txt").write_text(
        summary.render("Profile of one `confluence-producer crawl --full` on the crawl site"),
        encoding="utf-8",
    )
    return (
        "Where the time goes (docs/profiles/crawl.txt): "
        + profiles.where_time_goes(summary)
        + " The crawl is paced by the rate limit, so the process is mostly idle; "
        "idle time is not sampled."
    )


def scale_benchmark(ctx: Context) -> Table:
    """Crawl sites of growing size with our producer; return time and memory per size."""
    mode = ctx.mode
    table = Table(
        name="scale",
        title="Scale: crawl time and peak memory of our producer by site size",
        columns=["Pages on the site", "Items", "Seconds", "Items/s", "Requests", "Peak RSS (MB)"],
        setup=[
            f"Same emulator settings as the crawl benchmark (latency {mode.latency_ms:g} ms, "
            f"{mode.rate_per_second:g} requests/s, burst {mode.burst}); same producer "
            "settings; one emulator per size.",
            f"{mode.runs} run(s) per size; medians with (min-max).",
        ],
    )
    for pages in mode.scale_pages:
        settings = site_settings(ctx, pages)
        runs = ContenderRuns(f"{pages:,} pages")
        log_path = ctx.work_dir / "logs" / f"emulator-scale-{pages}.log"
        with Emulator(settings, log_path) as emulator:
            spaces = emulator.current_global_spaces()
            sources = write_sources_file(ctx, emulator, spaces, f"scale-{pages}")
            for run_index in range(mode.runs):
                logger.info("scale %d pages, run %d of %d", pages, run_index + 1, mode.runs)
                run_ours(ctx, emulator, sources, runs)
                if runs.failure:
                    break
        if not runs.items:
            table.add_row(f"{pages:,}", runs.failure or "no run", None, None, None, None)
            continue
        table.add_row(
            f"{pages:,}",
            runs.summary(runs.items),
            runs.summary(runs.seconds),
            runs.summary(runs.items_per_second),
            runs.summary(runs.requests),
            runs.summary(runs.peak_rss_mb),
        )
    table.notes.append(
        "The design target is memory flat in the size of the site, under 300 MB RSS for "
        "100,000 pages."
    )
    return table
