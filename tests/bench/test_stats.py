"""Tests of the benchmark statistics: median, extremes and ratios of medians."""

from __future__ import annotations

import pytest

from bench.stats import Summary, ratio


def test_summary_odd_count() -> None:
    summary = Summary.of([3.0, 1.0, 2.0])
    assert summary.median == 2.0
    assert summary.minimum == 1.0
    assert summary.maximum == 3.0
    assert summary.runs == 3


def test_summary_even_count_averages_middle() -> None:
    summary = Summary.of([4, 1, 3, 2])
    assert summary.median == 2.5


def test_summary_keeps_run_order_in_json() -> None:
    data = Summary.of([5, 7, 6]).as_json()
    assert data["values"] == [5.0, 7.0, 6.0]
    assert data["median"] == 6.0
    assert data["min"] == 5.0
    assert data["max"] == 7.0
    assert data["runs"] == 3


def test_summary_of_nothing_is_rejected() -> None:
    with pytest.raises(ValueError, match="no values"):
        Summary.of([])


def test_ratio_of_medians() -> None:
    ours = Summary.of([90, 100, 110])
    peer = Summary.of([9, 10, 50])
    assert ratio(ours, peer) == pytest.approx(10.0)


def test_ratio_with_zero_denominator() -> None:
    assert ratio(Summary.of([1.0]), Summary.of([0.0, 0.0, 1.0])) is None
