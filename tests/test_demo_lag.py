"""The demo's lag wait while the broker cannot return a group's offsets yet."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from demo import lag
from demo.lag import CoordinatorNotReady, GroupTopics, wait_for_catch_up


class LoadingCoordinator:
    """An AdminClient stand-in whose group coordinator is still loading.

    A real broker responds so only for a moment after it starts, which a test cannot
    produce on demand.
    """

    def describe_consumer_groups(self, groups: list[str], **options: Any) -> dict[str, Future[Any]]:
        futures: dict[str, Future[Any]] = {}
        for group in groups:
            future: Future[Any] = Future()
            future.set_exception(
                KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))
            )
            futures[group] = future
        return futures


def test_loading_coordinator_is_not_ready() -> None:
    with pytest.raises(CoordinatorNotReady, match="group g1"):
        lag.group_lag(LoadingCoordinator(), "g1", ["t"])  # type: ignore[arg-type]


def test_wait_retries_until_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lag, "POLL_INTERVAL_SECONDS", 0.01)

    with pytest.raises(lag.CatchUpTimeout, match="g1"):
        wait_for_catch_up(
            LoadingCoordinator(),  # type: ignore[arg-type]
            [GroupTopics("g1", ("t",))],
            timeout=0.05,
        )
