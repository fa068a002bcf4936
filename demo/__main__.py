"""Command line of the demo: ``python -m demo up [options]`` and ``python -m demo down``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from demo.run import DemoError, SiteOptions, down, up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run confluence-stream end to end on a local emulated Confluence site.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up_parser = commands.add_parser(
        "up", help="start everything, crawl, change the site, crawl again and summarise"
    )

    up_parser.add_argument(
        "--pages", type=int, default=2000, help="pages of the generated site (default 2000)"
    )
    up_parser.add_argument(
        "--spaces", type=int, default=5, help="global spaces of the generated site (default 5)"
    )
    up_parser.add_argument(
        "--seed", type=int, default=1, help="seed of the site generator (default 1)"
    )
    up_parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="serve this folder of HTML files instead of a generated site",
    )
    up_parser.add_argument(
        "--space-keys",
        default="",
        help="comma-separated keys of the spaces to crawl (default: every space)",
    )
    up_parser.add_argument(
        "--port", type=int, default=0, help="emulator port (default: a free port chosen at start)"
    )
    up_parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for the consumers to catch up after each crawl (default 1800)",
    )

    commands.add_parser(
        "down", help="stop the emulator, the consumers and the services the demo started"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        if args.command == "down":
            return down()
        if args.corpus is not None and not args.corpus.is_dir():
            print(
                f"demo: corpus folder {args.corpus} does not exist; install python3.11-doc "
                "(apt-get install python3.11-doc) or pass another folder of HTML files",
                file=sys.stderr,
            )
            return 2
        site = SiteOptions(
            pages=args.pages,
            spaces=args.spaces,
            seed=args.seed,
            corpus=args.corpus,
            port=args.port,
            space_keys=tuple(key.strip() for key in args.space_keys.split(",") if key.strip()),
        )
        return up(site, args.timeout)
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        print("demo: `make demo-down` stops what the demo started so far", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
