"""Entry point of the benchmarks: ``python -m bench [--quick] [--only NAME]``.

Starts the local Kafka broker and FerretDB (``python -m infra up``, a no-op for running
services), runs the selected benchmarks, and writes ``docs/benchmarks.md`` and
``docs/benchmarks.json``. With ``--only`` the other tables of an existing report are
kept. A benchmark that fails is reported in its table; the run goes on with the next.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.config import DOCS_DIR, FULL, QUICK, ROOT, WORK_DIR, Context, Mode
from bench.crawl import crawl_benchmark, scale_benchmark
from bench.emulator_rate import emulator_benchmark
from bench.produce import producer_benchmark
from bench.report import Report, Table, render_markdown, report_json, tables_from_json
from bench.sink import sink_benchmark, sink_script_table
from bench.system import describe_machine

logger = logging.getLogger(__name__)

Benchmark = Callable[[Context], list[Table]]

BENCHMARKS: dict[str, Benchmark] = {
    "emulator": lambda ctx: [emulator_benchmark(ctx)],
    "crawl": lambda ctx: [crawl_benchmark(ctx)],
    "scale": lambda ctx: [scale_benchmark(ctx)],
    "producer": lambda ctx: [producer_benchmark(ctx)],
    "sink": lambda ctx: [*sink_benchmark(ctx), sink_script_table(ctx)],
}
# Table names of each benchmark, to replace them in an existing report with --only.
TABLE_NAMES = {
    "emulator": ("emulator",),
    "crawl": ("crawl",),
    "scale": ("scale",),
    "producer": ("producer",),
    "sink": ("sink", "consumer-scaling", "sink-script"),
}
TITLE = "confluence-stream benchmarks"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks and write docs/benchmarks.md and docs/benchmarks.json.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small sites and one run per measurement",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark, repeatable: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--runs", type=int, help="runs per measurement (default 3, quick 1)")
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy profile of each benchmark"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DOCS_DIR,
        help="folder of benchmarks.md, benchmarks.json and profiles/ (default docs)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="lowest level of the progress lines on stderr (default INFO)",
    )
    return parser


def start_services(ctx: Context) -> None:
    """Start the local Kafka broker and FerretDB unless they are running."""
    result = subprocess.run(
        [ctx.python, "-m", "infra", "up"], cwd=ROOT, env=ctx.env(), check=False, timeout=1800
    )
    if result.returncode != 0:
        raise SystemExit(
            f"python -m infra up failed with exit status {result.returncode}; "
            "see .services/*/ logs, or run `make services-up` to see the error"
        )
    created = subprocess.run(
        [ctx.console_script("confluence-topics"), "create"],
        env=ctx.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if created.returncode != 0:
        raise SystemExit(
            f"confluence-topics create failed for prefix {ctx.topic_prefix}: "
            f"{created.stderr.strip()[-500:]}"
        )


def delete_topics(ctx: Context) -> None:
    """Delete the topics that this run created under its own prefixes."""
    from confluent_kafka.admin import AdminClient

    from connections.kafka import admin_config
    from connections.settings import load_settings
    from schemas.topics import Topics

    settings = load_settings(ctx.env())
    admin = AdminClient(admin_config(settings, "confluence-bench-admin"))
    existing = set(admin.list_topics(timeout=30).topics)
    names = [
        spec.name
        for prefix in (ctx.topic_prefix, f"{ctx.topic_prefix}-sink")
        for spec in Topics(prefix=prefix).specs()
        if spec.name in existing
    ]
    if not names:
        return
    for name, future in admin.delete_topics(names, operation_timeout=60).items():
        try:
            future.result()
        except Exception as error:  # a leftover topic is only logged
            logger.warning("could not delete topic %s: %s", name, error)


def failure_table(name: str, error: BaseException) -> Table:
    """Return the table that stands for a benchmark that raised."""
    table = Table(name=name, title=f"{name}: failed", columns=["Benchmark", "Error"])
    table.add_row(name, f"{type(error).__name__}: {error}")
    return table


def merge_tables(existing: list[Table], fresh: list[Table], replaced: set[str]) -> list[Table]:
    """Return ``existing`` with the tables named in ``replaced`` swapped for ``fresh``."""
    merged: list[Table] = []
    pending = list(fresh)
    for table in existing:
        if table.name in replaced:
            merged.extend(pending)
            pending = []
        else:
            merged.append(table)
    return merged + pending


def write_report(report: Report, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmarks.md").write_text(render_markdown(report), encoding="utf-8")
    (output_dir / "benchmarks.json").write_text(
        json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    # SystemExit unwinds the benchmarks, so every emulator and writer they started stops.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    mode: Mode = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            print(f"python -m bench: --runs {args.runs} is invalid: use 1 or more", file=sys.stderr)
            return 2
        mode = Mode(**{**mode.__dict__, "runs": args.runs})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ctx = Context(
        mode=mode,
        work_dir=WORK_DIR / stamp,
        profiles_dir=args.output_dir / "profiles",
        topic_prefix=f"bench-{stamp.lower()}",
        profile=not args.no_profile,
    )
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    start_services(ctx)
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    tables: list[Table] = []
    try:
        for name in selected:
            logger.info("benchmark %s: starting (%s mode)", name, mode.name)
            started = time.monotonic()
            try:
                results = BENCHMARKS[name](ctx)
            except Exception as error:  # one broken benchmark must not lose the others
                logger.exception("benchmark %s failed", name)
                results = [failure_table(name, error)]
            measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            for table in results:
                table.measured_at = f"{measured_at}, {mode.name} mode"
            tables.extend(results)
            logger.info("benchmark %s: done in %.0f s", name, time.monotonic() - started)
    finally:
        delete_topics(ctx)

    json_path = args.output_dir / "benchmarks.json"
    if args.only and json_path.exists():
        existing = tables_from_json(json.loads(json_path.read_text(encoding="utf-8")))
        replaced = {table for name in selected for table in TABLE_NAMES[name]}
        tables = merge_tables(existing, tables, replaced)
    report = Report(
        title=TITLE,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        mode=mode.name,
        machine=machine,
        tables=tables,
        notes=[
            "Written by `make bench` (`python -m bench`); `make bench-quick` is a smoke run "
            "with small sites and one run each. Figures are medians over the runs with "
            "(min-max). The numbers depend on the machine and on what else ran on it: "
            "compare rows of one table, not across machines.",
        ],
    )
    write_report(report, args.output_dir)
    logger.info("wrote %s and %s", args.output_dir / "benchmarks.md", json_path)
    return 0
