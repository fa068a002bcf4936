"""Argument parsing and result printing shared by the peer loader scripts."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence

CASES = ("page", "blogpost")


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    """Parse the options every peer script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", required=True, help="Cloud site base URL, ending in /wiki")
    parser.add_argument("--user", required=True, help="email of the API user")
    parser.add_argument("--token-file", required=True, help="file that contains the API token")
    parser.add_argument("--space", action="append", required=True, help="space key, repeatable")
    return parser.parse_args(argv)


def read_token(path: str) -> str:
    """Return the API token stored in ``path``."""
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def run_cases(spaces: Sequence[str], load: Callable[[str, str], int]) -> int:
    """Load every case of every space with ``load(case, space)`` and print the result.

    A case that raises is recorded with its error and the other cases still run, so a
    loader that cannot load blog posts still reports its pages.
    """
    items = {case: 0 for case in CASES}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for case in CASES:
        for space in spaces:
            try:
                items[case] += load(case, space)
            except Exception as error:  # report any loader failure as this case's result
                errors[case] = f"{type(error).__name__}: {str(error)[:300]}"
                traceback.print_exc(file=sys.stderr)
                break
    result = {"items": items, "errors": errors, "seconds": time.perf_counter() - started}
    print(json.dumps(result), flush=True)
    return 0
