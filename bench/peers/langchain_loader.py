"""Load pages and blog posts with LangChain's ``ConfluenceLoader`` (langchain-community).

Options are the loader's defaults except three. ``limit=100`` is the largest page with
bodies. ``max_pages`` is above the site's size, because the default of 1000 would stop
early. atlassian-python-api's ``backoff_and_retry`` retries a 429 after its
``Retry-After`` instead of ending the load. Blog posts are loaded with CQL, because the
``space_key`` mode lists pages only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from bench.peers.common import parse_args, read_token, run_cases

MAX_PAGES = 10_000_000


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, "Load a site with LangChain's ConfluenceLoader.")
    from langchain_community.document_loaders import (  # type: ignore[import-not-found]
        ConfluenceLoader,
    )

    token = read_token(args.token_file)

    def load(case: str, space: str) -> int:
        options: dict[str, Any] = {
            "url": args.base_url,
            "username": args.user,
            "api_key": token,
            "limit": 100,
            "max_pages": MAX_PAGES,
            "confluence_kwargs": {"backoff_and_retry": True},
        }
        if case == "page":
            options["space_key"] = space
        else:
            options["cql"] = f'space = "{space}" and type = blogpost'
        count = 0
        for _document in ConfluenceLoader(**options).lazy_load():
            count += 1
        return count

    return run_cases(args.space, load)


if __name__ == "__main__":
    sys.exit(main())
