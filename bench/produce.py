"""Producer ceiling: our encode-and-publish path against raw confluent-kafka.

Both contenders run as separate processes (``bench.produce_worker``) against the same
broker and topic with the configuration of ``connections.kafka.producer_config``. The raw
contender produces bytes that were encoded before its clock started, so the gap between
the two is what our codec and publisher add.
"""

from __future__ import annotations

import json
import logging

from bench import profiles
from bench.config import ROOT, Context
from bench.emulator import API_TOKEN, USER_EMAIL, Emulator, SiteSettings
from bench.procs import run_measured
from bench.report import Table, format_percent
from bench.stats import Summary, ratio

logger = logging.getLogger(__name__)

CONTENDERS = (
    ("ours", "KafkaPublisher.publish (codec encoding included) + finish()"),
    ("raw", "raw confluent-kafka Producer.produce of pre-encoded bytes + flush()"),
    ("encode", "codec encoding only, no Kafka (for reference)"),
)
MEGABYTE = 1024 * 1024


def worker_argv(ctx: Context, emulator: Emulator, contender: str) -> list[str]:
    """Return the command line of one worker run."""
    return [
        ctx.python,
        "-m",
        "bench.produce_worker",
        "--contender",
        contender,
        "--base-url",
        emulator.cloud_base,
        "--user",
        USER_EMAIL,
        "--token",
        API_TOKEN,
        "--records",
        str(ctx.mode.produce_records),
    ]


def producer_benchmark(ctx: Context) -> Table:
    """Measure records per second of each contender and return the result table."""
    mode = ctx.mode
    table = Table(
        name="producer",
        title="Producer ceiling: encode and produce content records",
        columns=["Contender", "Records/s", "MB/s", "Seconds", "Ours ÷ this"],
        setup=[
            f"{mode.produce_records:,} Content records mapped by the producer from pages "
            f"with bodies of a {mode.crawl_pages:,}-page generated site (repeated if the "
            "site has fewer), sent to the content topic of the local broker.",
            "Same producer configuration for both Kafka contenders: "
            "connections.kafka.producer_config (idempotent, acks=all, zstd, linger 20 ms).",
            f"{mode.runs} run(s), contenders alternating; medians with (min-max). Only the "
            "produce-and-acknowledge part is timed, not fetching or mapping.",
        ],
    )
    rates: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    throughput: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    seconds: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    failures: dict[str, str] = {}
    settings = SiteSettings(pages=mode.crawl_pages)
    with Emulator(settings, ctx.work_dir / "logs" / "emulator-producer.log") as emulator:
        for run_index in range(mode.runs):
            logger.info("producer run %d of %d", run_index + 1, mode.runs)
            for name, _ in CONTENDERS:
                if name in failures:
                    continue
                run = run_measured(
                    worker_argv(ctx, emulator, name),
                    env=ctx.env(),
                    cwd=ROOT,
                    timeout=mode.timeout_seconds,
                )
                if not run.ok:
                    failures[name] = f"failed: {run.failure()}"
                    continue
                result = json.loads(run.stdout.strip().splitlines()[-1])
                rates[name].append(result["records"] / result["seconds"])
                throughput[name].append(result["bytes"] / MEGABYTE / result["seconds"])
                seconds[name].append(result["seconds"])
        profile_note = profile_producer(ctx, emulator)

    ours = Summary.of(rates["ours"]) if rates["ours"] else None
    for name, label in CONTENDERS:
        if not rates[name]:
            table.add_row(label, None, None, None, failures.get(name, "no run"))
            continue
        rate = Summary.of(rates[name])
        relative = ratio(ours, rate) if ours is not None and name != "ours" else None
        table.add_row(
            label,
            rate,
            Summary.of(throughput[name]),
            Summary.of(seconds[name]),
            format_percent(relative) if name == "raw" else "-",
        )
    table.notes.append(
        "The design target is at least 70% of the raw confluent-kafka rate "
        "(the 'Ours ÷ this' cell of the raw row)."
    )
    table.notes.append(profile_note)
    return table


def profile_producer(ctx: Context, emulator: Emulator) -> str:
    """Profile one more run of our publisher; return the note for the report."""
    if not ctx.profile:
        return "Profile: skipped (--no-profile)."
    raw = ctx.work_dir / "profiles" / "producer.raw"
    try:
        result = profiles.record(
            worker_argv(ctx, emulator, "ours"),
            raw,
            env=ctx.env(),
            cwd=ROOT,
            timeout=ctx.mode.timeout_seconds,
        )
    except OSError as error:
        return f"Profile: not available: {error}"
    if result.returncode != 0 or not raw.exists():
        return (
            f"Profile: not available: py-spy exited with {result.returncode}: "
            f"{result.stderr.strip()[-300:]}"
        )
    summary = profiles.summarise(raw.read_text(encoding="utf-8").splitlines())
    ctx.profiles_dir.mkdir(parents=True, exist_ok=True)
    (ctx.profiles_dir / "producer.txt").write_text(
        summary.render(
            "Profile of one `bench.produce_worker --contender ours` run "
            "(fetching and mapping the records included)"
        ),
        encoding="utf-8",
    )
    return (
        "Where the time goes (docs/profiles/producer.txt, fetching and mapping included): "
        + profiles.where_time_goes(summary)
    )
