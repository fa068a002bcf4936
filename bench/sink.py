"""Sink ceiling and consumer scaling: the stream writer against raw pymongo bulk upserts.

The stream writer (``confluence-consumer stream``) runs as one or two processes of one
fresh consumer group over a content topic that contains a known number of Content records.
Its rate is the documents in ``source_bench_stream`` divided by the time from the first
document to the last, so process start-up and the group's first rebalance are left
out. The collection is counted every ``POLL_SECONDS``. The baseline writes the same
documents, read back from the writer's collection, with raw pymongo ``bulk_write`` of
``UpdateOne(..., upsert=True)`` filtered on ``_id``, in batches of ``BATCH_SIZE``, into a
fresh collection of the same server. ``connections.mongo.bulk_write`` sends each batch in
commands of at most 50 updates, the most that FerretDB 1.24 finishes. Both stop after
the mode's ``sink_seconds`` and rate the documents written so far, because a slow server
would otherwise stall the run.

When the writer cannot run, the baseline writes documents built from the same records
(``_id`` = record key and version) and the writer's rows give the reason.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient, UpdateOne

from bench import produce_worker, profiles
from bench.config import ROOT, Context
from bench.emulator import API_TOKEN, USER_EMAIL, Emulator, SiteSettings
from bench.procs import child_pids, run_measured, tree_rss_bytes
from bench.report import Table, format_percent
from bench.stats import Summary, ratio
from connections.mongo import MAX_UPDATES_PER_COMMAND, bulk_write

logger = logging.getLogger(__name__)

COLLECTION = "source_bench_stream"
BATCH_SIZE = 500
POLL_SECONDS = 0.2
# The collection counts as complete when its count has not changed for this long.
STABLE_SECONDS = 5.0
MEGABYTE = 1024 * 1024


class SinkUnavailable(RuntimeError):
    """The stream writer could not run; the message gives the reason."""


def mongo_uri(ctx: Context) -> str:
    return ctx.env().get("MONGODB_URI", "mongodb://127.0.0.1:27017")


def create_topics(ctx: Context, prefix: str) -> None:
    """Create the contract's topics under ``prefix`` with ``confluence-topics create``."""
    result = subprocess.run(
        [ctx.console_script("confluence-topics"), "create"],
        env=ctx.env(KAFKA_TOPIC_PREFIX=prefix),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise SinkUnavailable(
            f"confluence-topics create failed for prefix {prefix}: {result.stderr.strip()[-300:]}"
        )


def fill_topic(ctx: Context, emulator: Emulator, prefix: str) -> None:
    """Publish ``sink_documents`` Content records with distinct ids to the content topic."""
    argv = [
        ctx.python,
        "-m",
        "bench.produce_worker",
        "--contender",
        "ours",
        "--unique",
        "--base-url",
        emulator.cloud_base,
        "--user",
        USER_EMAIL,
        "--token",
        API_TOKEN,
        "--records",
        str(ctx.mode.sink_documents),
    ]
    result = subprocess.run(
        argv,
        env=ctx.env(KAFKA_TOPIC_PREFIX=prefix),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=ctx.mode.timeout_seconds,
        check=False,
    )
    if result.returncode != 0:
        raise SinkUnavailable(f"filling the topic failed: {result.stderr.strip()[-300:]}")


def stream_writer_argv(ctx: Context, group: str) -> list[str]:
    return [ctx.console_script("confluence-consumer"), "stream", "--group", group]


def check_stream_command(ctx: Context) -> None:
    """Raise SinkUnavailable unless ``confluence-consumer stream --help`` succeeds."""
    result = subprocess.run(
        [ctx.console_script("confluence-consumer"), "stream", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=ctx.env(),
    )
    if result.returncode != 0 or "--group" not in result.stdout:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SinkUnavailable(
            f"`confluence-consumer stream --group` is not available yet "
            f"(exit {result.returncode}: {detail[0][:200]})"
        )


@dataclass(frozen=True)
class WriterRun:
    """Outcome of one stream writer run."""

    documents_per_second: float
    documents: int
    peak_rss_mb: float
    complete: bool


def run_stream_writers(
    ctx: Context,
    prefix: str,
    instances: int,
    database: str,
    log_dir: Path,
    *,
    profile_raw: Path | None = None,
) -> WriterRun:
    """Run ``instances`` stream writers until the collection is complete or time is up."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri(ctx))
    collection = client[database][COLLECTION]
    group = f"bench-stream-{uuid.uuid4().hex[:10]}"
    env = ctx.env(KAFKA_TOPIC_PREFIX=prefix, MONGODB_DATABASE=database)
    processes: list[subprocess.Popen[bytes]] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for index in range(instances):
            argv = stream_writer_argv(ctx, group)
            if profile_raw is not None:
                executable = profiles.py_spy()
                if executable is None:
                    raise SinkUnavailable("py-spy is not installed")
                argv = [
                    executable,
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    str(profiles.SAMPLE_RATE),
                    "--output",
                    str(profile_raw),
                    "--",
                    *argv,
                ]
            log = (log_dir / f"stream-writer-{instances}-{index}.log").open("wb")
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        first: float | None = None
        last_change = time.monotonic()
        count = 0
        peak = 0
        complete = False
        deadline = time.monotonic() + ctx.mode.sink_seconds
        while time.monotonic() < deadline:
            peak = max(peak, sum(tree_rss_bytes(process.pid) for process in processes))
            current = collection.estimated_document_count()
            now = time.monotonic()
            if current != count:
                count, last_change = current, now
                if first is None:
                    first = now
            if count >= ctx.mode.sink_documents and now - last_change >= STABLE_SECONDS:
                complete = True
                break
            exited = [process for process in processes if process.poll() is not None]
            if exited:
                raise SinkUnavailable(
                    f"a stream writer exited with status {exited[0].returncode} before the "
                    f"collection was complete; see {log_dir}"
                )
            time.sleep(POLL_SECONDS)
        if first is None:
            raise SinkUnavailable(
                f"the stream writers wrote no document within {ctx.mode.sink_seconds:.0f} s; "
                f"see {log_dir}"
            )
        # The first poll that saw documents is up to POLL_SECONDS late, like the last one.
        elapsed = max(last_change - first, POLL_SECONDS)
        return WriterRun(count / elapsed, count, peak / MEGABYTE, complete)
    finally:
        for process in processes:
            if process.poll() is not None:
                continue
            # Under py-spy the writer is py-spy's child: stopping the writer makes py-spy
            # write its profile and exit.
            targets = child_pids(process.pid) if profile_raw is not None else [process.pid]
            for pid in targets:
                os.kill(pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        client.close()


def raw_upserts(
    ctx: Context, documents: Sequence[dict[str, Any]], database: str, *, insert: bool = False
) -> tuple[float, int]:
    """Write ``documents`` with raw pymongo bulk upserts until done or time is up.

    With ``insert``, write them with ``insert_many(ordered=False)`` into the empty
    collection instead. Return (documents per second, documents written).
    """
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri(ctx))
    collection = client[database]["raw_upserts"]
    written = 0
    try:
        started = time.perf_counter()
        deadline = started + ctx.mode.sink_seconds
        for start in range(0, len(documents), BATCH_SIZE):
            batch = documents[start : start + BATCH_SIZE]
            if insert:
                collection.insert_many(batch, ordered=False)
                written += len(batch)
                if time.perf_counter() >= deadline:
                    break
                continue
            operations = [
                UpdateOne(
                    {"_id": document["_id"]},
                    {"$set": {k: v for k, v in document.items() if k != "_id"}},
                    upsert=True,
                )
                for document in batch
            ]
            bulk_write(collection, operations, ordered=False)
            written += len(batch)
            if time.perf_counter() >= deadline:
                break
        return written / (time.perf_counter() - started), written
    finally:
        client.drop_database(database)
        client.close()


def documents_of(ctx: Context, database: str) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri(ctx))
    try:
        return list(client[database][COLLECTION].find())
    finally:
        client.close()


def fallback_documents(ctx: Context, emulator: Emulator) -> list[dict[str, Any]]:
    """Build one document per record with ``_id`` = record key and version."""
    records = produce_worker.fetch_records(
        emulator.cloud_base, USER_EMAIL, API_TOKEN, ctx.mode.sink_documents, unique=True
    )
    return [{"_id": f"{key}:v{record['version_number']}", **record} for key, record in records]


def drop_databases(ctx: Context, names: Sequence[str]) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri(ctx))
    try:
        for name in names:
            client.drop_database(name)
    finally:
        client.close()


def sink_benchmark(ctx: Context) -> list[Table]:
    """Measure the stream writer and raw pymongo; return the sink and scaling tables."""
    mode = ctx.mode
    sink = Table(
        name="sink",
        title="Sink ceiling: the stream writer against raw pymongo bulk upserts",
        columns=["Contender", "Documents/s", "Documents", "Ours ÷ this"],
        setup=[
            f"{mode.sink_documents:,} Content records with bodies and distinct ids in the "
            "content topic of the local broker; MongoDB wire protocol: the local FerretDB.",
            "Stream writer: `confluence-consumer stream`, one process, fresh group and "
            "database; rate from the first document written to the last (start-up and "
            "first rebalance left out).",
            f"Raw pymongo: the writer's documents read back, written with bulk_write of "
            f"UpdateOne filtered on _id, upsert=True, ordered=False, {BATCH_SIZE} per batch, "
            f"sent in commands of at most {MAX_UPDATES_PER_COMMAND} updates (FerretDB 1.24 "
            "never answers an update command in which 100 statements match).",
            f"{mode.runs} run(s); medians with (min-max). A writer run, and the raw upserts, "
            f"stop after {mode.sink_seconds:.0f} s even if not every document is written.",
        ],
    )
    scaling = Table(
        name="consumer-scaling",
        title="Consumer scaling: one and two stream writer instances",
        columns=["Instances", "Documents/s", "Documents", "Peak RSS of all (MB)"],
        setup=[
            "Same topic and records as the sink benchmark; each run uses a fresh group and "
            "database, so every instance count writes the whole topic.",
        ],
    )
    prefix = f"{ctx.topic_prefix}-sink"
    run_id = uuid.uuid4().hex[:8]
    databases: list[str] = []
    writer_rates: dict[int, list[float]] = {1: [], 2: []}
    writer_counts: dict[int, list[float]] = {1: [], 2: []}
    writer_rss: dict[int, list[float]] = {1: [], 2: []}
    raw_rates: list[float] = []
    raw_counts: list[float] = []
    insert_rates: list[float] = []
    insert_counts: list[float] = []
    incomplete: dict[int, str] = {}
    reason: str | None = None
    profile_note = "Profile: not recorded because the stream writer did not run."
    settings = SiteSettings(pages=min(mode.sink_documents, mode.crawl_pages))
    with Emulator(settings, ctx.work_dir / "logs" / "emulator-sink.log") as emulator:
        try:
            check_stream_command(ctx)
            create_topics(ctx, prefix)
            fill_topic(ctx, emulator, prefix)
            for run_index in range(mode.runs):
                for instances in (1, 2):
                    database = f"bench_sink_{run_id}_{run_index}_{instances}"
                    databases.append(database)
                    logger.info("stream writer x%d, run %d", instances, run_index + 1)
                    writer = run_stream_writers(
                        ctx, prefix, instances, database, ctx.work_dir / "logs"
                    )
                    writer_rates[instances].append(writer.documents_per_second)
                    writer_counts[instances].append(writer.documents)
                    writer_rss[instances].append(writer.peak_rss_mb)
                    if not writer.complete:
                        incomplete[instances] = (
                            f"stopped after {mode.sink_seconds:.0f} s with {writer.documents:,} "
                            f"of {mode.sink_documents:,} documents written"
                        )
                documents = documents_of(ctx, f"bench_sink_{run_id}_{run_index}_1")
                rate, written = raw_upserts(ctx, documents, f"bench_raw_{run_id}_{run_index}")
                raw_rates.append(rate)
                raw_counts.append(written)
                rate, written = raw_upserts(
                    ctx, documents, f"bench_raw_{run_id}_{run_index}", insert=True
                )
                insert_rates.append(rate)
                insert_counts.append(written)
            profile_note = profile_stream_writer(ctx, prefix, run_id)
        except SinkUnavailable as error:
            reason = f"not available: {error}"
            logger.warning("stream writer %s", reason)
            if not raw_rates:
                documents = fallback_documents(ctx, emulator)
                for run_index in range(mode.runs):
                    rate, written = raw_upserts(ctx, documents, f"bench_raw_{run_id}_{run_index}")
                raw_rates.append(rate)
                raw_counts.append(written)
        finally:
            drop_databases(ctx, databases)

    raw = Summary.of(raw_rates)
    ours = Summary.of(writer_rates[1]) if writer_rates[1] else None
    if ours is None:
        sink.add_row("confluence-consumer stream", None, None, reason or "no run")
    else:
        sink.add_row("confluence-consumer stream", ours, Summary.of(writer_counts[1]), "-")
        if 1 in incomplete:
            sink.notes.append(
                f"The stream writer {incomplete[1]}; its rate is over the documents written, "
                "and the raw pymongo row writes those same documents."
            )
    sink.add_row(
        "raw pymongo bulk upserts",
        raw,
        Summary.of(raw_counts),
        format_percent(ratio(ours, raw)) if ours is not None else "-",
    )
    if insert_rates:
        inserted = Summary.of(insert_rates)
        sink.add_row(
            "raw pymongo insert_many into an empty collection",
            inserted,
            Summary.of(insert_counts),
            format_percent(ratio(ours, inserted)) if ours is not None else "-",
        )
        sink.notes.append(
            "The insert_many row is the server's limit for new documents, which a writer "
            "may reach by inserting what does not exist yet instead of upserting it."
        )
    if reason is not None and ours is None:
        sink.notes.append(
            "The raw pymongo row wrote documents built from the same records "
            "(_id = record key and version), because the writer's own were not available."
        )
    sink.notes.append("The design target is at least 80% of the raw pymongo rate.")
    sink.notes.append(profile_note)
    scaling.notes.extend(
        f"{instances} instance(s): {note}." for instances, note in sorted(incomplete.items())
    )
    for instances in (1, 2):
        if not writer_rates[instances]:
            scaling.add_row(str(instances), None, None, reason or "no run")
            continue
        scaling.add_row(
            str(instances),
            Summary.of(writer_rates[instances]),
            Summary.of(writer_counts[instances]),
            Summary.of(writer_rss[instances]),
        )
    return [sink, scaling]


def profile_stream_writer(ctx: Context, prefix: str, run_id: str) -> str:
    """Profile one more single-instance run of the stream writer; return the report note."""
    if not ctx.profile:
        return "Profile: skipped (--no-profile)."
    raw_path = ctx.work_dir / "profiles" / "stream-writer.raw"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    database = f"bench_sink_{run_id}_profile"
    try:
        run_stream_writers(ctx, prefix, 1, database, ctx.work_dir / "logs", profile_raw=raw_path)
    except SinkUnavailable as error:
        return f"Profile: not available: {error}"
    finally:
        drop_databases(ctx, [database])
    # py-spy writes its output after the profiled process exited.
    for _ in range(50):
        if raw_path.exists():
            break
        time.sleep(0.1)
    if not raw_path.exists():
        return "Profile: not available: py-spy wrote no output"
    summary = profiles.summarise(raw_path.read_text(encoding="utf-8").splitlines())
    ctx.profiles_dir.mkdir(parents=True, exist_ok=True)
    (ctx.profiles_dir / "stream-writer.txt").write_text(
        summary.render("Profile of one `confluence-consumer stream` run over the sink topic"),
        encoding="utf-8",
    )
    return "Where the time goes (docs/profiles/stream-writer.txt): " + profiles.where_time_goes(
        summary
    )


SCRIPT = ROOT / "bench" / "sink_throughput.py"
# A result line is "LABEL: RATE", optionally followed by "docs/s" or ratios in brackets.
_SCRIPT_LINE = re.compile(r"^(?P<label>[^:]+?)\s*:\s*(?P<rate>\d+(?:\.\d+)?)(?:\s|$)")


def parse_script_rates(stdout: str) -> dict[str, float]:
    """Return documents per second by label from the output of ``sink_throughput.py``."""
    rates: dict[str, float] = {}
    for line in stdout.splitlines():
        match = _SCRIPT_LINE.match(line.strip())
        if match is not None:
            rates[match["label"]] = float(match["rate"])
    return rates


def sink_script_table(ctx: Context) -> Table:
    """Run the stream writer's own throughput script and return its rates as a table."""
    mode = ctx.mode
    records = mode.sink_script_records
    table = Table(
        name="sink-script",
        title="Sink ceiling, measured by bench/sink_throughput.py",
        columns=["Path", "Documents/s"],
        setup=[
            f"`python bench/sink_throughput.py --records {records} --runs 1`, with the "
            "script's own records and batch size (see its docstring). "
            f"{mode.runs} run(s); medians with (min-max).",
        ],
    )
    if not SCRIPT.exists():
        table.add_row("bench/sink_throughput.py", "not available: the script does not exist")
        return table
    rates: dict[str, list[float]] = {}
    failure = ""
    for run_index in range(mode.runs):
        logger.info("sink_throughput.py run %d of %d", run_index + 1, mode.runs)
        run = run_measured(
            [ctx.python, str(SCRIPT), "--records", str(records), "--runs", "1"],
            env=ctx.env(PYTHONPATH=str(ROOT)),
            cwd=ROOT,
            timeout=mode.timeout_seconds,
        )
        parsed = parse_script_rates(run.stdout)
        if not run.ok or not parsed:
            failure = f"failed: {run.failure()}"
            break
        for label, rate in parsed.items():
            rates.setdefault(label, []).append(rate)
    for label, values in rates.items():
        table.add_row(label, Summary.of(values))
    if failure:
        table.add_row("bench/sink_throughput.py", failure)
    return table
