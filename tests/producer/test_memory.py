"""Memory bounds of the producer: malloc arenas, the Kafka queue and id windows."""

from __future__ import annotations

import ctypes

import pytest

from connections.settings import load_settings
from producer import cli
from producer.memory import ARENA_ENV, limit_malloc_arenas
from producer.paging import RecentIds


def glibc_present() -> bool:
    return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not glibc_present(), reason="mallopt arenas are a glibc setting")
def test_arenas_capped_on_glibc() -> None:
    assert limit_malloc_arenas(environ={}) is True


def test_arenas_left_to_environment() -> None:
    assert limit_malloc_arenas(environ={ARENA_ENV: "4"}) is False


def test_publisher_queue_bounded() -> None:
    settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"})

    config = cli.publisher_config(settings)

    assert config["queue.buffering.max.kbytes"] == cli.PRODUCER_QUEUE_MAX_KBYTES
    assert config["enable.idempotence"] is True


def test_recent_ids_drop_oldest() -> None:
    recent = RecentIds(size=3)
    for identifier in ("1", "2", "3", "2", "4"):
        recent.add(identifier)

    assert len(recent) == 3
    assert "1" not in recent
    assert all(identifier in recent for identifier in ("2", "3", "4"))


def test_recent_ids_bounded_on_long_walk() -> None:
    recent = RecentIds(size=1000)
    for number in range(50_000):
        recent.add(str(number))

    assert len(recent) == 1000
    assert "49000" in recent
    assert "48999" not in recent
