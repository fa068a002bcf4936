"""Measure the stream writer's documents per second against raw pymongo writes.

    .venv/bin/python bench/sink_throughput.py [--records N] [--batch-size B] [--body-bytes S]
        [--runs R]

Uses the Kafka broker and MongoDB-protocol server named by ``KAFKA_BOOTSTRAP_SERVERS`` and
``MONGODB_URI`` (default 127.0.0.1:9092 and mongodb://127.0.0.1:27017), with a topic
prefix and databases of its own that it deletes at the end. Each run writes the same N
content records four ways:

1. end to end: the stream writer consuming them from Kafka (decode, version guard, writes);
2. handler only: ``StreamWriter.handle`` on batches already decoded;
3. raw upserts: ``bulk_write`` of ``UpdateOne({_id}, {$set: document}, upsert=True)`` of
   the documents run 2 wrote, in batches of the same size, into an empty collection,
   sent by ``connections.mongo.bulk_write`` in commands of at most 50 updates, because
   FerretDB 1.24 sends no reply to an update command in which 100 statements match;
4. raw inserts: ``insert_many(ordered=False)`` of the same documents, same batches, into
   an empty collection.

Runs 3 and 4 are ceilings: they write the documents and nothing else. It prints the
documents per second of each way, per run and as the median over ``--runs`` runs, and the
median rates of the stream writer as fractions of both ceilings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient, UpdateOne

from connections.kafka import admin_config, producer_config
from connections.mongo import bulk_write
from connections.settings import load_settings
from connections.topics import ensure_topics
from consumer.runtime import ConsumedRecord, ConsumerOptions, ConsumerRuntime
from consumer.stream import StreamWriter, stream_collection_name
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.keys import content_key
from schemas.topics import Topics

SOURCE_ID = "bench"


def content_record(number: int, body_bytes: int) -> dict[str, Any]:
    body = ("<p>" + "lorem ipsum " * (body_bytes // 12 + 1))[:body_bytes] + "</p>"
    now = datetime.now(UTC)
    return {
        "source_id": SOURCE_ID,
        "job_id": "20240101T000000000Z-00000000",
        "id": str(100_000 + number),
        "type": "page",
        "status": "current",
        "title": f"Page {number}",
        "space_key": "BENCH",
        "space_id": 1,
        "version_number": 1,
        "version_created_at": now,
        "version_author_account_id": "account-1",
        "version_message": None,
        "version_minor_edit": False,
        "created_at": now,
        "created_by_account_id": "account-1",
        "ancestor_ids": ["1", "2"],
        "parent_id": "2",
        "container_id": None,
        "container_type": None,
        "position": number,
        "labels": ["global:bench"],
        "body_storage": body,
        "body_storage_sha256": hashlib.sha256(body.encode()).hexdigest(),
        "comment_location": None,
        "attachment_media_type": None,
        "attachment_file_size": None,
        "attachment_download_path": None,
        "read_restrictions": None,
        "web_url": f"https://bench.example/wiki/{number}",
        "fetched_at": now,
    }


def measure(records: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """Write ``records`` the four ways of the module docstring; return docs/s of each."""
    run_id = uuid.uuid4().hex[:8]
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        "MONGODB_URI": os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        "KAFKA_TOPIC_PREFIX": f"bench-{run_id}",
        "MONGODB_DATABASE": f"bench_e2e_{run_id}",
    }
    settings = load_settings(environ)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    admin = AdminClient(admin_config(settings, "bench-admin"))
    ensure_topics(admin, topics.specs(), partitions=1, replication_factor=1)
    client: MongoClient[dict[str, Any]] = MongoClient(environ["MONGODB_URI"], tz_aware=True)
    databases = [
        f"bench_e2e_{run_id}",
        f"bench_handler_{run_id}",
        f"bench_raw_{run_id}",
        f"bench_insert_{run_id}",
    ]
    collection_name = stream_collection_name(SOURCE_ID)
    count = len(records)
    try:
        codec = SingleObjectCodec()
        producer = Producer(producer_config(settings, "bench-producer"))
        for record in records:
            key = content_key(SOURCE_ID, record["id"])
            producer.produce(
                topics.content, key=key, value=codec.encode(RecordType.CONTENT, record)
            )
            producer.poll(0)
        producer.flush(60)

        # 1. End to end through Kafka.
        options = ConsumerOptions(
            name="bench-stream",
            group_id=f"bench-{run_id}",
            topics=[topics.content],
            batch_size=batch_size,
            batch_timeout_s=0.5,
            log_interval_s=3600,
        )
        writer = StreamWriter(client[databases[0]])
        runtime = ConsumerRuntime(options, writer, settings)
        thread = threading.Thread(target=runtime.run, daemon=True)
        started = time.perf_counter()
        thread.start()
        while runtime.metrics.snapshot().written < count:
            time.sleep(0.01)
        end_to_end_s = time.perf_counter() - started
        runtime.stop_event.set()
        thread.join(60)

        # 2. Handler only, on decoded batches.
        consumed = [
            ConsumedRecord(topics.content, 0, offset, None, record, RecordType.CONTENT, 0)
            for offset, record in enumerate(records)
        ]
        writer = StreamWriter(client[databases[1]])
        started = time.perf_counter()
        for first in range(0, count, batch_size):
            writer.handle(consumed[first : first + batch_size])
        handler_s = time.perf_counter() - started

        # 3. Raw bulk upserts of the same documents.
        documents = list(client[databases[1]][collection_name].find())
        raw = client[databases[2]][collection_name]
        raw.create_index("entity_id")
        started = time.perf_counter()
        for first in range(0, len(documents), batch_size):
            operations = [
                UpdateOne(
                    {"_id": document["_id"]},
                    {"$set": {k: v for k, v in document.items() if k != "_id"}},
                    upsert=True,
                )
                for document in documents[first : first + batch_size]
            ]
            bulk_write(raw, operations, ordered=False)
        upsert_s = time.perf_counter() - started

        # 4. Raw inserts of the same documents.
        inserted = client[databases[3]][collection_name]
        inserted.create_index("entity_id")
        started = time.perf_counter()
        for first in range(0, len(documents), batch_size):
            inserted.insert_many(documents[first : first + batch_size], ordered=False)
        insert_s = time.perf_counter() - started
    finally:
        for name in databases:
            client.drop_database(name)
        client.close()
        names = [spec.name for spec in topics.specs()]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()
    return {
        "raw upserts": count / upsert_s,
        "raw inserts": count / insert_s,
        "stream writer, handler": count / handler_s,
        "stream writer, from Kafka": count / end_to_end_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per run (default 2000)")
    parser.add_argument("--batch-size", type=int, default=500, help="batch size (default 500)")
    parser.add_argument(
        "--body-bytes", type=int, default=2000, help="body size per record (default 2000)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs to take the median of (default 3)"
    )
    args = parser.parse_args()
    if args.records < 1 or args.batch_size < 1 or args.runs < 1:
        parser.error(
            f"--records {args.records}, --batch-size {args.batch_size} and --runs {args.runs} "
            f"must each be 1 or more"
        )

    records = [content_record(number, args.body_bytes) for number in range(args.records)]
    print(f"records={args.records} batch_size={args.batch_size} body_bytes={args.body_bytes}")
    results: list[dict[str, float]] = []
    for run in range(1, args.runs + 1):
        rates = measure(records, args.batch_size)
        results.append(rates)
        print(f"run {run}: " + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items()))

    medians = {name: statistics.median(r[name] for r in results) for name in results[0]}
    print(f"median docs/s over {args.runs} runs:")
    for name in ("raw inserts", "raw upserts"):
        print(f"  {name:26}: {medians[name]:8.0f}")
    for name in ("stream writer, handler", "stream writer, from Kafka"):
        print(
            f"  {name:26}: {medians[name]:8.0f} ({medians[name] / medians['raw inserts']:.0%} "
            f"of raw inserts, {medians[name] / medians['raw upserts']:.0%} of raw upserts)"
        )


if __name__ == "__main__":
    main()
