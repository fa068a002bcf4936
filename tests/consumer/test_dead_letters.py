"""Tests of dead letters: poison messages land in ``{topic}.dlq`` and the consumer goes on."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message

from consumer.runtime import (
    HEADER_CONSUMER_GROUP,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    ConsumerOptions,
)
from consumer.stream import StreamWriter
from schemas.catalogue import RecordType
from schemas.codec import SINGLE_OBJECT_MARKER, SingleObjectCodec
from tests.consumer.conftest import (
    ConsumerEnv,
    ConsumerThread,
    RecordPublisher,
    read_topic,
    sample_content,
    sample_space,
    wait_until,
)


def header_value(message: Message, name: str) -> bytes:
    value = dict(message.headers() or [])[name]
    assert isinstance(value, bytes)
    return value


def test_poison_messages_dead_lettered(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=1)
    codec = SingleObjectCodec()
    topic = env.topics.content
    valid_body = codec.encode(RecordType.CONTENT, sample_content(source_id=env.source_id))
    unknown_fingerprint = SINGLE_OBJECT_MARKER + b"\x01" * 8 + valid_body[10:]
    wrong_type = codec.encode(RecordType.SPACE, {**sample_space(), "source_id": env.source_id})
    invalid_source = codec.encode(RecordType.CONTENT, sample_content(source_id="bad source!"))
    poison = [
        (b"plain text, not Avro", "MalformedPayloadError"),
        (unknown_fingerprint, "UnknownSchemaError"),
        (wrong_type, "UnexpectedRecordTypeError"),
        (invalid_source, "PoisonRecordError"),
    ]
    publisher = RecordPublisher(env)
    for number, (value, _) in enumerate(poison):
        publisher.publish_raw(
            topic, f"{env.source_id}:content:p{number}", value, headers=[("trace", b"t1")]
        )
    publisher.publish(RecordType.CONTENT, sample_content(source_id=env.source_id, id="after"))
    publisher.flush()

    database = env.database()
    options = ConsumerOptions(
        name="dead-letters",
        group_id=env.group("dead-letters"),
        topics=[env.topics.spaces, topic, env.topics.relationships],
        batch_size=2,
        batch_timeout_s=0.2,
    )
    consumer = ConsumerThread(options, StreamWriter(database), env.settings).start()
    collection = database[env.stream_collection]
    wait_until(lambda: collection.count_documents({}) >= 1, "the record after the poison")
    status = consumer.stop()

    assert status == 0
    assert [document["_id"] for document in collection.find()] == ["content:after@v1"]
    assert consumer.runtime.metrics.snapshot().dead_lettered == len(poison)
    dead = read_topic(env, env.topics.dead_letter_for(topic), len(poison))
    by_offset = {int(header_value(m, HEADER_SOURCE_OFFSET)): m for m in dead}
    assert sorted(by_offset) == [0, 1, 2, 3]
    for offset, (value, error_class) in enumerate(poison):
        message = by_offset[offset]
        headers = dict(message.headers() or [])
        assert message.value() == value
        assert message.key() == f"{env.source_id}:content:p{offset}".encode()
        assert headers[HEADER_SOURCE_TOPIC] == topic.encode()
        assert headers[HEADER_SOURCE_PARTITION] == b"0"
        assert headers[HEADER_ERROR_CLASS] == error_class.encode()
        assert headers[HEADER_ERROR_MESSAGE]
        assert headers[HEADER_CONSUMER_GROUP] == options.group_id.encode()
        assert headers["trace"] == b"t1"
