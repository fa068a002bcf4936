"""Statistics of repeated measurements: median, minimum, maximum and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median, minimum and maximum of the values of several runs of one measurement."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        """Summarise ``values``; raise ValueError when there is none."""
        collected = tuple(float(value) for value in values)
        if not collected:
            raise ValueError("no values to summarise: run the measurement at least once")
        return cls(collected)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def minimum(self) -> float:
        return min(self.values)

    @property
    def maximum(self) -> float:
        return max(self.values)

    @property
    def runs(self) -> int:
        return len(self.values)

    def as_json(self) -> dict[str, float | int | list[float]]:
        """Return the summary and its raw values as JSON-ready numbers."""
        return {
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "runs": self.runs,
            "values": list(self.values),
        }


def ratio(numerator: Summary, denominator: Summary) -> float | None:
    """Return the ratio of two medians, or None when the denominator's median is zero."""
    if denominator.median == 0:
        return None
    return numerator.median / denominator.median
