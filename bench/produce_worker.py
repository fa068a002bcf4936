"""One run of the producer ceiling benchmark, in its own process.

``python -m bench.produce_worker --contender ours|raw|encode ...`` fetches content items
with bodies from the emulator, maps them to Content records with the producer's own
mapping, and then times only the measured part:

- ``ours``: ``KafkaPublisher.publish`` of every record (codec encoding included) and
  ``finish()``, which waits until the broker acknowledged every record;
- ``raw``: confluent-kafka's ``Producer.produce`` of the same bytes, encoded before the
  clock starts, with the same producer configuration, then ``flush()``;
- ``encode``: ``Codec.encode`` of every record, without Kafka.

It prints one JSON object: records, seconds and value bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from confluent_kafka import KafkaError, Message, Producer

from connections.kafka import producer_config
from connections.registry import create_codec
from connections.settings import load_settings
from producer.publisher import KafkaPublisher
from producer.records import RecordContext, content_record
from schemas.catalogue import RecordType
from schemas.keys import content_key, new_job_id
from schemas.topics import Topics

logger = logging.getLogger(__name__)

SOURCE_ID = "bench"
_EXPAND = "body.storage,version,ancestors,history"
# Added to the content id of each repeated copy of a page with --unique.
ID_OFFSET = 1_000_000_000


def fetch_records(
    base: str, user: str, token: str, count: int, *, unique: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """Return ``count`` (key, Content record) pairs, repeating the site's pages if needed.

    With ``unique``, each repeated copy gets a content id of its own (the original id
    plus a multiple of ``ID_OFFSET``), so a sink writes one document per record.
    """
    session = requests.Session()
    session.auth = (user, token)
    spaces = session.get(f"{base}/rest/api/space", params={"limit": "1000"}, timeout=60)
    spaces.raise_for_status()
    keys = [space["key"] for space in spaces.json()["results"]]
    context = RecordContext(source_id=SOURCE_ID, job_id=new_job_id(), site_base=base)
    fetched_at = datetime.now(UTC)
    records: list[tuple[str, dict[str, Any]]] = []
    for space in keys:
        url: str | None = f"{base}/rest/api/space/{space}/content/page"
        params: dict[str, str] | None = {"limit": "100", "expand": _EXPAND}
        while url is not None and len(records) < count:
            response = session.get(url, params=params, timeout=60)
            response.raise_for_status()
            page = response.json()
            for item in page["results"]:
                record = content_record(item, context, fetched_at, space_key=space)
                records.append((content_key(SOURCE_ID, item["id"]), record))
            following = page["_links"].get("next")
            url = base + following if following and page["results"] else None
            params = None
        if len(records) >= count:
            break
    if not records:
        raise SystemExit(f"the site at {base} returned no pages; start it with --pages above 0")
    distinct = len(records)
    while len(records) < count:
        key, record = records[len(records) % distinct]
        if unique:
            copy = len(records) // distinct
            content_id = str(int(record["id"]) + copy * ID_OFFSET)
            key, record = content_key(SOURCE_ID, content_id), {**record, "id": content_id}
        records.append((key, record))
    return records[:count]


def run_ours(records: list[tuple[str, dict[str, Any]]]) -> tuple[float, int]:
    """Publish with the producer's KafkaPublisher; return (seconds, value bytes)."""
    settings = load_settings()
    codec = create_codec(settings)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    publisher = KafkaPublisher(producer_config(settings, logger=logger), topics, codec)
    started = time.perf_counter()
    for key, record in records:
        publisher.publish(RecordType.CONTENT, key, record)
    publisher.finish()
    seconds = time.perf_counter() - started
    size = sum(len(codec.encode(RecordType.CONTENT, record)) for _, record in records)
    return seconds, size


def run_raw(records: list[tuple[str, dict[str, Any]]]) -> tuple[float, int]:
    """Produce the same bytes with a bare confluent-kafka Producer; return (seconds, bytes)."""
    settings = load_settings()
    codec = create_codec(settings)
    topic = Topics(prefix=settings.kafka.topic_prefix).topic_for(RecordType.CONTENT)
    encoded = [
        (key.encode("utf-8"), codec.encode(RecordType.CONTENT, record)) for key, record in records
    ]
    producer = Producer(producer_config(settings, logger=logger))
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        del message
        if error is not None:
            failures.append(error.str())

    started = time.perf_counter()
    for key, value in encoded:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - started
    if remaining or failures:
        raise SystemExit(
            f"{len(failures)} deliveries failed and {remaining} were not acknowledged: "
            f"{failures[:3]}; check the broker and that the topics exist"
        )
    return seconds, sum(len(value) for _, value in encoded)


def run_encode(records: list[tuple[str, dict[str, Any]]]) -> tuple[float, int]:
    """Encode every record with the codec only; return (seconds, bytes)."""
    codec = create_codec(load_settings())
    started = time.perf_counter()
    size = sum(len(codec.encode(RecordType.CONTENT, record)) for _, record in records)
    return time.perf_counter() - started, size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contender", choices=("ours", "raw", "encode"), required=True)
    parser.add_argument("--base-url", required=True, help="Cloud site base URL, ending in /wiki")
    parser.add_argument("--user", required=True, help="email of the API user")
    parser.add_argument("--token", required=True, help="API token of the API user")
    parser.add_argument("--records", type=int, required=True, help="Content records to send")
    parser.add_argument(
        "--unique", action="store_true", help="give repeated pages content ids of their own"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    records = fetch_records(args.base_url, args.user, args.token, args.records, unique=args.unique)
    run = {"ours": run_ours, "raw": run_raw, "encode": run_encode}[args.contender]
    seconds, size = run(records)
    print(json.dumps({"records": len(records), "seconds": seconds, "bytes": size}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
