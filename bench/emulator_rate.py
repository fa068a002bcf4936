"""Emulator rate: list requests per second that the emulator serves without limits.

The emulator must not be the bottleneck of the crawl benchmark, so its own rate is
measured with ``confluence-emulator bench``. It runs concurrent walks of ``/content``
lists of 100 items with bodies on a site of the crawl benchmark's size, without latency
or rate limit.
"""

from __future__ import annotations

import logging
import re

from bench.config import BODY_PAGE_SIZE, ROOT, Context
from bench.procs import run_measured
from bench.report import Table, format_ratio
from bench.stats import Summary

logger = logging.getLogger(__name__)

_FIELD = re.compile(r"(\w+)=([\d.]+)")


def parse_bench_line(stdout: str) -> dict[str, float]:
    """Return the numeric ``key=value`` fields of the result line of the emulator bench."""
    lines = [line for line in stdout.splitlines() if "requests_per_second=" in line]
    if not lines:
        return {}
    return {key: float(value) for key, value in _FIELD.findall(lines[-1])}


def emulator_benchmark(ctx: Context) -> Table:
    """Measure the emulator's request rate and return the result table."""
    mode = ctx.mode
    table = Table(
        name="emulator",
        title="Emulator rate: list requests with bodies, no latency, no rate limit",
        columns=["Measure", "Requests/s", "Items/s", "MB/s", "Headroom over the rate limit"],
        setup=[
            f"`confluence-emulator bench --pages {mode.crawl_pages} --duration "
            f"{mode.emulator_rate_seconds:g} --limit {BODY_PAGE_SIZE}` (8 concurrent walks of "
            "`/content?spaceKey=...&type=page&expand=body.storage,version`), the emulator in "
            "its own process.",
            f"{mode.runs} run(s); medians with (min-max). The client shares the machine's "
            "cores with the server, so these are lower bounds.",
        ],
    )
    requests: list[float] = []
    items: list[float] = []
    megabytes: list[float] = []
    failure = ""
    for run_index in range(mode.runs):
        logger.info("emulator rate run %d of %d", run_index + 1, mode.runs)
        argv = [
            ctx.console_script("confluence-emulator"),
            "bench",
            "--pages",
            str(mode.crawl_pages),
            "--duration",
            f"{mode.emulator_rate_seconds:g}",
            "--limit",
            str(BODY_PAGE_SIZE),
        ]
        run = run_measured(argv, env=ctx.env(), cwd=ROOT, timeout=mode.timeout_seconds)
        fields = parse_bench_line(run.stdout)
        if not run.ok or "requests_per_second" not in fields:
            failure = f"failed: {run.failure()}"
            break
        requests.append(fields["requests_per_second"])
        items.append(fields.get("rows_per_second", 0.0))
        megabytes.append(fields.get("megabytes_per_second", 0.0))
    if not requests:
        table.add_row("emulator", failure or "no run", None, None, None)
        return table
    rate = Summary.of(requests)
    table.add_row(
        f"{mode.crawl_pages:,}-page site",
        rate,
        Summary.of(items),
        Summary.of(megabytes),
        format_ratio(rate.median / mode.rate_per_second),
    )
    return table
