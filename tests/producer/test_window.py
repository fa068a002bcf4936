"""Unit tests of the job window and its CQL date literals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from producer.window import (
    JobMode,
    compute_window,
    cql_end,
    cql_start,
    cql_window_clause,
    parse_time,
    readings,
    resolve_zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_window_first_run_is_full() -> None:
    window = compute_window(
        utc(2024, 5, 1, 12), previous_window_end=None, previous_job_id=None, overlap=timedelta(0)
    )
    assert window.mode is JobMode.FULL
    assert window.start is None
    assert window.end == utc(2024, 5, 1, 12)


def test_window_incremental_subtracts_overlap() -> None:
    window = compute_window(
        utc(2024, 5, 2, 12),
        previous_window_end=utc(2024, 5, 1, 12),
        previous_job_id="job-1",
        overlap=timedelta(minutes=15),
    )
    assert window.mode is JobMode.INCREMENTAL
    assert window.start == utc(2024, 5, 1, 11, 45)
    assert window.end == utc(2024, 5, 2, 12)
    assert window.previous_job_id == "job-1"


def test_window_full_flag_ignores_history() -> None:
    window = compute_window(
        utc(2024, 5, 2, 12),
        previous_window_end=utc(2024, 5, 1, 12),
        previous_job_id="job-1",
        overlap=timedelta(minutes=15),
        full=True,
    )
    assert window.mode is JobMode.FULL
    assert window.previous_job_id is None


def test_window_since_overrides_start() -> None:
    window = compute_window(
        utc(2024, 5, 2, 12),
        previous_window_end=None,
        previous_job_id=None,
        overlap=timedelta(minutes=15),
        since=utc(2024, 4, 1),
    )
    assert window.mode is JobMode.INCREMENTAL
    assert window.start == utc(2024, 4, 1)


def test_window_since_in_future_rejected() -> None:
    with pytest.raises(ValueError, match="after the job start"):
        compute_window(
            utc(2024, 5, 2, 12),
            previous_window_end=None,
            previous_job_id=None,
            overlap=timedelta(0),
            since=utc(2024, 6, 1),
        )


def test_window_naive_time_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        compute_window(
            datetime(2024, 5, 2, 12),
            previous_window_end=None,
            previous_job_id=None,
            overlap=timedelta(0),
        )


def test_start_floored_in_zone() -> None:
    # 10:07:42 UTC is 12:07:42 in Berlin summer time; the start floors to 12:07.
    assert cql_start(utc(2024, 7, 1, 10, 7, 42), BERLIN) == "2024-07-01 12:07"


def test_end_ceiled_in_zone() -> None:
    assert cql_end(utc(2024, 7, 1, 10, 7, 42), BERLIN) == "2024-07-01 12:08"


def test_whole_minute_not_moved() -> None:
    instant = utc(2024, 1, 15, 23, 30)
    assert cql_start(instant, BERLIN) == "2024-01-16 00:30"
    assert cql_end(instant, BERLIN) == "2024-01-16 00:30"


def test_half_hour_offset_zone() -> None:
    assert cql_start(utc(2024, 3, 1, 0, 0, 30), KOLKATA) == "2024-03-01 05:30"
    assert cql_end(utc(2024, 3, 1, 0, 0, 30), KOLKATA) == "2024-03-01 05:31"


def test_dst_gap_end_skips_missing_hour() -> None:
    # Berlin jumps from 02:00 to 03:00 on 2024-03-31 (01:00 UTC). 00:59:30 UTC is 01:59:30
    # local; ceiling in local time would give 02:00, a time that does not exist.
    literal = cql_end(utc(2024, 3, 31, 0, 59, 30), BERLIN)
    assert literal == "2024-03-31 03:00"
    assert min(readings(literal, BERLIN)) >= utc(2024, 3, 31, 0, 59, 30)


def test_dst_gap_start_before_change() -> None:
    literal = cql_start(utc(2024, 3, 31, 1, 0, 30), BERLIN)
    assert literal == "2024-03-31 03:00"
    assert max(readings(literal, BERLIN)) <= utc(2024, 3, 31, 1, 0, 30)


def test_dst_fold_start_covers_both_readings() -> None:
    # New York repeats 01:00-02:00 on 2024-11-03. 06:30 UTC is the second 01:30 (EST);
    # the literal "01:30" could also mean the first 01:30, one hour earlier, which is
    # still at or before the start, so it is safe.
    instant = utc(2024, 11, 3, 6, 30)
    literal = cql_start(instant, NEW_YORK)
    assert max(readings(literal, NEW_YORK)) <= instant
    # 05:30 UTC is the first 01:30 (EDT); "01:30" could be read as 06:30 UTC, after the
    # start, so the start moves back to a literal before the repeated hour.
    first = utc(2024, 11, 3, 5, 30)
    moved = cql_start(first, NEW_YORK)
    assert max(readings(moved, NEW_YORK)) <= first
    assert moved == "2024-11-03 00:59"


def test_dst_fold_end_covers_both_readings() -> None:
    instant = utc(2024, 11, 3, 5, 30)  # first 01:30 local
    literal = cql_end(instant, NEW_YORK)
    assert min(readings(literal, NEW_YORK)) >= instant
    later = utc(2024, 11, 3, 6, 30)  # second 01:30 local; "01:30" could mean 05:30 UTC
    moved = cql_end(later, NEW_YORK)
    assert min(readings(moved, NEW_YORK)) >= later
    assert moved == "2024-11-03 02:00"


def test_window_clause_full_mode_empty() -> None:
    window = compute_window(
        utc(2024, 5, 1), previous_window_end=None, previous_job_id=None, overlap=timedelta(0)
    )
    assert cql_window_clause(window, BERLIN) == ""


def test_window_clause_incremental() -> None:
    window = compute_window(
        utc(2024, 5, 2, 8, 0, 10),
        previous_window_end=utc(2024, 5, 1, 8, 15, 59),
        previous_job_id="job-1",
        overlap=timedelta(minutes=15),
    )
    clause = cql_window_clause(window, BERLIN)
    assert clause == ('lastmodified >= "2024-05-01 10:00" and lastmodified < "2024-05-02 10:01"')


def test_resolve_zone_unknown_named() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        resolve_zone("Mars/Olympus")


def test_parse_time_forms() -> None:
    assert parse_time("2024-03-31T01:30:00Z") == utc(2024, 3, 31, 1, 30)
    assert parse_time("2024-03-31T03:30:00+02:00") == utc(2024, 3, 31, 1, 30)
    assert parse_time("2024-03-31") == utc(2024, 3, 31)


def test_parse_time_without_zone_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2024-03-31T01:30:00")
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")
