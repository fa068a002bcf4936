"""The modification window of a job and the CQL date literals that bound it.

A full job has no window start. An incremental job covers ``[start, end)`` with
``start = previous window end - overlap`` and ``end = job start``; the watermark is
always the job's start time, never the newest modification time seen, because CQL's
``lastmodified`` does not always match the ``version.when`` of a response.

CQL date literals (``yyyy-MM-dd HH:mm``) have minute granularity and Confluence reads them
in the user's time zone (or the site's), not in UTC. ``cql_bound`` therefore converts an
instant to that zone and rounds outward: a start is floored and an end is ceiled, so the
window the server evaluates always contains the requested one. Near a daylight-saving
change a local time can be ambiguous (it occurs twice when clocks go back); the bound is
then moved to a literal whose every reading still contains the window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CQL_DATE_FORMAT = "%Y-%m-%d %H:%M"
_MINUTE = timedelta(minutes=1)
# A daylight-saving shift is at most two hours in every IANA zone (one hour in almost all),
# so stepping a bound by at most this much always leaves the ambiguous range.
_MAX_STEPS = 180


class JobMode(enum.StrEnum):
    """Crawl mode of a job."""

    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class Window:
    """Modification window of a job: ``[start, end)`` in UTC; ``start`` is None in full mode."""

    mode: JobMode
    start: datetime | None
    end: datetime
    previous_job_id: str | None = None


def compute_window(
    started_at: datetime,
    *,
    previous_window_end: datetime | None,
    previous_job_id: str | None,
    overlap: timedelta,
    full: bool = False,
    since: datetime | None = None,
) -> Window:
    """Choose the job mode and its window.

    Full mode when ``full`` is set or no earlier successful job exists (and no ``since``
    was given); otherwise incremental from ``previous_window_end - overlap``, or from
    ``since`` when given. Raises ``ValueError`` on a naive datetime or a start after the end.
    """
    for name, value in (
        ("job start", started_at),
        ("previous window end", previous_window_end),
        ("since", since),
    ):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} {value.isoformat()} has no time zone; pass an aware datetime")
    if overlap < timedelta(0):
        raise ValueError(f"overlap {overlap} is negative; use 0 or a positive duration")
    end = started_at.astimezone(UTC)
    if full:
        return Window(JobMode.FULL, None, end, None)
    if since is not None:
        start = since.astimezone(UTC)
    elif previous_window_end is not None:
        start = previous_window_end.astimezone(UTC) - overlap
    else:
        return Window(JobMode.FULL, None, end, None)
    if start > end:
        raise ValueError(
            f"window start {start.isoformat()} is after the job start {end.isoformat()}; "
            f"pass a --since time in the past"
        )
    return Window(JobMode.INCREMENTAL, start, end, previous_job_id)


def resolve_zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``; raise ``ValueError`` naming it when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA zone name such as 'Europe/Berlin'"
        ) from error


def readings(literal: str, zone: tzinfo) -> tuple[datetime, ...]:
    """Return every UTC instant a CQL date literal can denote in ``zone``.

    One instant normally; two when the local time occurs twice (clocks going back). For
    a local time that does not exist (clocks going forward) the two instants are those of
    the offsets before and after the change, which is how a server may read it.
    """
    naive = datetime.strptime(literal, CQL_DATE_FORMAT)
    instants = {
        naive.replace(tzinfo=zone, fold=fold).astimezone(UTC).replace(microsecond=0)
        for fold in (0, 1)
    }
    return tuple(sorted(instants))


def floor_minute(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


def ceil_minute(instant: datetime) -> datetime:
    floored = floor_minute(instant)
    return floored if floored == instant else floored + _MINUTE


def _literal(instant: datetime, zone: tzinfo) -> str:
    return instant.astimezone(zone).strftime(CQL_DATE_FORMAT)


def cql_start(instant: datetime, zone: tzinfo) -> str:
    """Return the literal for a window start: every reading is at or before ``instant``."""
    # Rounding in UTC equals rounding in local time for every zone offset in whole
    # minutes, and a local time converted from a UTC instant never falls in a gap.
    candidate = floor_minute(instant.astimezone(UTC))
    for _ in range(_MAX_STEPS):
        literal = _literal(candidate, zone)
        if max(readings(literal, zone)) <= instant:
            return literal
        candidate -= _MINUTE
    raise ValueError(f"no CQL start literal found for {instant.isoformat()} in zone {zone}")


def cql_end(instant: datetime, zone: tzinfo) -> str:
    """Return the literal for a window end: every reading is at or after ``instant``."""
    candidate = ceil_minute(instant.astimezone(UTC))
    for _ in range(_MAX_STEPS):
        literal = _literal(candidate, zone)
        if min(readings(literal, zone)) >= instant:
            return literal
        candidate += _MINUTE
    raise ValueError(f"no CQL end literal found for {instant.isoformat()} in zone {zone}")


def cql_window_clause(window: Window, zone: tzinfo) -> str:
    """Return the CQL condition that selects items modified in ``window``; empty in full mode."""
    if window.start is None:
        return ""
    return (
        f'lastmodified >= "{cql_start(window.start, zone)}" '
        f'and lastmodified < "{cql_end(window.end, zone)}"'
    )


def parse_time(text: str) -> datetime:
    """Parse a ``--since`` value: ISO-8601 with a zone (``Z`` or ``+hh:mm``) or a date (UTC)."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO-8601 such as 2024-03-31T01:30:00Z or 2024-03-31"
        ) from None
    if parsed.tzinfo is None:
        if len(value) > 10:
            raise ValueError(
                f"invalid time {text!r}: it has no time zone; add Z or an offset such as +02:00"
            )
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
