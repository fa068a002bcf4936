"""Load pages and blog posts with LlamaIndex's ``ConfluenceReader``.

Options are the reader's defaults except two. atlassian-python-api's
``backoff_and_retry`` (through ``client_args``) retries a 429 after its ``Retry-After``
instead of ending the load. ``max_num_results`` is set above the site's size for pages,
because with its default of None the ``space_key`` mode fails in atlassian-python-api 4.0
(``len(results) <= limit`` with ``limit=None`` raises TypeError). Pages come from
``space_key``; blog posts from CQL, because the ``space_key`` mode lists pages only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench.peers.common import parse_args, read_token, run_cases

MAX_RESULTS = 10_000_000


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, "Load a site with LlamaIndex's ConfluenceReader.")
    from llama_index.readers.confluence import (  # type: ignore[import-not-found]
        ConfluenceReader,
    )

    token = read_token(args.token_file)
    reader = ConfluenceReader(
        base_url=args.base_url,
        user_name=args.user,
        password=token,
        cloud=True,
        client_args={"backoff_and_retry": True},
    )

    def load(case: str, space: str) -> int:
        if case == "page":
            documents = reader.load_data(
                space_key=space, page_status="current", max_num_results=MAX_RESULTS
            )
        else:
            documents = reader.load_data(cql=f'space = "{space}" and type = blogpost')
        return len(documents)

    return run_cases(args.space, load)


if __name__ == "__main__":
    sys.exit(main())
