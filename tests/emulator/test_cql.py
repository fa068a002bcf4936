"""Tests of the emulator's CQL parser and evaluator against small hand-built content items."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from emulator.cql import CqlError, Query, parse
from emulator.model import ContentType, Site, User

BAD_REQUEST = "com.atlassian.confluence.api.service.exceptions.api.BadRequestException"


@dataclass
class FakeVersion:
    by: str


@dataclass
class FakeItem:
    """A content item with the attributes the evaluator reads, as the site model provides them."""

    id: str
    type: str
    title: str
    space_key: str
    last_modified: datetime
    created: datetime = datetime(2024, 4, 1, 9, 0, tzinfo=UTC)
    status: str = "current"
    parent_id: str | None = None
    container_id: str | None = None
    ancestor_ids: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    text: str = ""
    created_by: str = "u1"
    versions: list[FakeVersion] = field(default_factory=list)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


ITEMS: list[FakeItem] = [
    FakeItem(
        id="100",
        type="page",
        title="Deploy Guide",
        space_key="ENG",
        created=utc(2024, 4, 1, 9, 0),
        last_modified=utc(2024, 5, 1, 10, 30),
        label_names=["howto"],
        text="How to deploy the service. The runbook steps follow.",
        created_by="u1",
        versions=[FakeVersion("u1"), FakeVersion("u2")],
    ),
    FakeItem(
        id="101",
        type="page",
        title="Runbook: Rollback",
        space_key="ENG",
        created=utc(2024, 4, 2, 9, 0),
        last_modified=utc(2024, 5, 1, 9, 59, 59),
        parent_id="100",
        ancestor_ids=["100"],
        label_names=["howto", "ops"],
        text="Roll back a failed deployment.",
        created_by="u2",
        versions=[FakeVersion("u2")],
    ),
    FakeItem(
        id="102",
        type="page",
        title="Release notes 2024",
        space_key="ENG",
        created=utc(2024, 4, 3, 9, 0),
        last_modified=utc(2024, 5, 2, 12, 0),
        parent_id="101",
        ancestor_ids=["100", "101"],
        text="Changes in this release.",
        created_by="u1",
        versions=[FakeVersion("u1")],
    ),
    FakeItem(
        id="103",
        type="blogpost",
        title="Team update",
        space_key="ENG",
        created=utc(2024, 5, 1, 7, 0),
        last_modified=utc(2024, 5, 1, 10, 0, 30),
        label_names=["news"],
        text="We shipped the deploy pipeline.",
        created_by="u3",
        versions=[FakeVersion("u3")],
    ),
    FakeItem(
        id="104",
        type="comment",
        title="Re: Deploy Guide",
        space_key="ENG",
        last_modified=utc(2024, 5, 1, 11, 0),
        container_id="100",
        text="Thanks, this helped.",
    ),
    FakeItem(
        id="105",
        type="attachment",
        title="diagram.png",
        space_key="ENG",
        last_modified=utc(2024, 5, 1, 11, 5),
        container_id="100",
    ),
    FakeItem(
        id="200",
        type="page",
        title="Deploy Guide",
        space_key="OPS",
        created=utc(2024, 4, 1, 9, 0),
        last_modified=utc(2024, 5, 1, 10, 30),
        label_names=["HowTo"],
        text="Operations deploy checklist.",
    ),
    FakeItem(
        id="201",
        type="blogpost",
        title="On-call report",
        space_key="OPS",
        created=utc(2024, 4, 30, 20, 0),
        last_modified=utc(2024, 4, 30, 23, 0),
        text="Quiet week.",
    ),
    FakeItem(
        id="900",
        type="page",
        title="Old Deploy Guide",
        space_key="ENG",
        status="trashed",
        last_modified=utc(2024, 5, 1, 12, 0),
        label_names=["howto"],
        text="How to deploy the old service.",
    ),
]


def matching_ids(query: Query, items: Iterable[FakeItem] = ITEMS) -> list[str]:
    """Return the ids of the items the query matches, in the query's order."""
    return [item.id for item in query.sort(i for i in items if query.matches(i))]


def matching_set(cql: str, *, current_user: str | None = None) -> set[str]:
    query = parse(cql, current_user=current_user)
    return {item.id for item in ITEMS if query.matches(item)}


# What a crawler sends ------------------------------------------------------------------------


def test_crawler_incremental_window() -> None:
    query = parse(
        'space = "ENG" and type = page and lastmodified >= "2024-05-01 10:00" '
        "order by lastmodified asc"
    )

    assert matching_ids(query) == ["100", "102"]


def test_crawler_types_and_spaces() -> None:
    query = parse('type in (page, blogpost) and space in ("ENG","OPS")')

    assert set(matching_ids(query)) == {"100", "101", "102", "103", "200", "201"}


def test_crawler_ancestor() -> None:
    assert matching_set("ancestor = 100") == {"101", "102"}


def test_crawler_label() -> None:
    assert matching_set('label = "howto"') == {"100", "101", "200"}


# Fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("type = page", {"100", "101", "102", "200"}),
        ('type = "blogpost"', {"103", "201"}),
        ("type = comment", {"104"}),
        ("type = attachment", {"105"}),
        ("type = PAGE", {"100", "101", "102", "200"}),
        ("type != page", {"103", "104", "105", "201"}),
        ("type in (comment, attachment)", {"104", "105"}),
        ("type not in (page, blogpost)", {"104", "105"}),
        ("type = space", set()),
        ("type = whiteboard", set()),
    ],
)
def test_type_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("space = OPS", {"200", "201"}),
        ('space = "OPS"', {"200", "201"}),
        ("space = 'OPS'", {"200", "201"}),
        ("space = ops", {"200", "201"}),
        ("space.key = OPS", {"200", "201"}),
        ("SPACE.KEY = OPS", {"200", "201"}),
        ("space != ENG", {"200", "201"}),
        ("space in (ops, NOPE)", {"200", "201"}),
        ("space not in (ENG)", {"200", "201"}),
        ("space = NOPE", set()),
    ],
)
def test_space_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("id = 101", {"101"}),
        ('id = "101"', {"101"}),
        ("id in (101, 200, 999)", {"101", "200"}),
        ("content = 103", {"103"}),
        ("id != 100 and space = OPS", {"200", "201"}),
        ("id = 900", set()),
    ],
)
def test_id_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ('title = "Deploy Guide"', {"100", "200"}),
        ('title = "deploy guide"', {"100", "200"}),
        ('title = "Deploy"', set()),
        ('title != "Deploy Guide" and type = page', {"101", "102"}),
        ('title ~ "deploy"', {"100", "104", "200"}),
        ('title ~ "guide deploy"', {"100", "104", "200"}),
        ('title ~ "rollback"', {"101"}),
        ('title ~ "roll*"', {"101"}),
        ('title !~ "deploy" and space = OPS', {"201"}),
        ('title in ("Team update", "On-call report")', {"103", "201"}),
    ],
)
def test_title_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ('text ~ "deploy"', {"100", "103", "104", "200"}),
        ('text ~ "runbook deploy"', {"100"}),
        ('text ~ "deploy AND runbook"', {"100"}),
        ('text ~ "deploy zzzzq"', set()),
        ('text ~ "DEPLOY"', {"100", "103", "104", "200"}),
        ('text ~ "deploy*"', {"100", "101", "103", "104", "200"}),
        ('text ~ "rollback"', {"101"}),
        ('text ~ "*ploy"', {"100", "103", "104", "200"}),
        ('text ~ "roll?ack"', {"101"}),
        ('text ~ "servic"', set()),
        ('text ~ "\\"runbook steps\\""', {"100"}),
        ('text ~ "\\"steps runbook\\""', set()),
        ('text ~ "deploy" and text !~ "service"', {"103", "104", "200"}),
        ('siteSearch ~ "checklist"', {"200"}),
    ],
)
def test_text_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


def test_text_words_split_across_title_and_body() -> None:
    # "rollback" is only in the title of 101 and "failed" only in its body.
    assert matching_set('text ~ "rollback failed"') == {"101"}


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("label = howto", {"100", "101", "200"}),
        ("label = HOWTO", {"100", "101", "200"}),
        ("label in (ops, news)", {"101", "103"}),
        ("label != howto and type = page", {"102"}),
        ("label not in (howto, news) and space = ENG", {"102", "104", "105"}),
        ("label = missing", set()),
    ],
)
def test_label_field(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("ancestor = 100", {"101", "102"}),
        ("ancestor = 101", {"102"}),
        ("ancestor in (101, 999)", {"102"}),
        ("ancestor != 100 and type = page", {"100", "200"}),
        ("parent = 100", {"101"}),
        ('parent = "101"', {"102"}),
        ("parent in (100, 101)", {"101", "102"}),
        ("container = 100", {"104", "105"}),
    ],
)
def test_hierarchy_fields(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("creator = u2", {"101"}),
        ("creator in (u2, u3)", {"101", "103"}),
        ("contributor = u2", {"100", "101"}),
        ("creator = currentUser()", {"103"}),
    ],
)
def test_user_fields(cql: str, expected: set[str]) -> None:
    assert matching_set(cql, current_user="u3") == expected


def test_current_user_without_caller() -> None:
    assert matching_set("creator = currentUser()") == set()


# Boolean structure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("space = OPS or type = comment", {"104", "200", "201"}),
        ("space = OPS and type = page or type = comment", {"104", "200"}),
        ("space = OPS and (type = page or type = comment)", {"200"}),
        ("not space = ENG", {"200", "201"}),
        ("not (space = ENG or type = blogpost)", {"200"}),
        ("space = ENG and not type = page and not type = blogpost", {"104", "105"}),
        ("SPACE = OPS AND TYPE = PAGE", {"200"}),
        ("space = OPS And type = page", {"200"}),
        ("((space = OPS))", {"200", "201"}),
        ("space=OPS and type=page", {"200"}),
    ],
)
def test_boolean_operators(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


def test_escaped_quote_in_value() -> None:
    item = FakeItem(
        id="1", type="page", title='Say "hi"', space_key="X", last_modified=utc(2024, 1, 1)
    )
    query = parse('title = "Say \\"hi\\""')

    assert query.matches(item)


def test_quoted_value_is_not_a_keyword() -> None:
    item = FakeItem(id="1", type="page", title="and", space_key="X", last_modified=utc(2024, 1, 1))

    assert parse('title = "and"').matches(item)


# Visibility ----------------------------------------------------------------------------------


def test_trashed_content_never_matches() -> None:
    assert "900" not in matching_set('title = "Old Deploy Guide"')
    assert "900" not in matching_set("id = 900")


@pytest.mark.parametrize("status", ["trashed", "draft", "archived", "historical"])
def test_only_current_status_matches(status: str) -> None:
    item = FakeItem(
        id="1", type="page", title="T", space_key="X", last_modified=utc(2024, 1, 1), status=status
    )

    assert not parse("type = page").matches(item)


def test_archived_space_hidden() -> None:
    statuses = {"ENG": "current", "OPS": "archived"}
    query = parse("type = page")
    visible = {i.id for i in ITEMS if query.matches(i, space_status=statuses.__getitem__)}

    assert visible == {"100", "101", "102"}


def test_archived_space_included() -> None:
    query = parse("type = page")

    assert {i.id for i in ITEMS if query.matches(i, space_status=None)} == {
        "100",
        "101",
        "102",
        "200",
    }


# Dates ---------------------------------------------------------------------------------------


def page_at(moment: datetime, content_id: str = "1") -> FakeItem:
    return FakeItem(
        id=content_id,
        type="page",
        title="T",
        space_key="X",
        created=moment,
        last_modified=moment,
    )


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ('lastmodified = "2024-05-01 10:30"', {"100", "200"}),
        ('lastmodified != "2024-05-01 10:30" and space = OPS', {"201"}),
        ('lastmodified > "2024-05-01 10:30"', {"102", "104", "105"}),
        ('lastmodified >= "2024-05-01 10:30"', {"100", "102", "104", "105", "200"}),
        ('lastmodified < "2024-05-01 10:00"', {"101", "201"}),
        ('lastmodified <= "2024-05-01 10:00"', {"101", "103", "201"}),
        ('lastModified < "2024-05-01 10:00"', {"101", "201"}),
        ('created >= "2024-05-01"', {"103"}),
        ('created < "2024-04-02"', {"100", "104", "105", "200"}),
    ],
)
def test_date_operators_utc(cql: str, expected: set[str]) -> None:
    assert matching_set(cql) == expected


@pytest.mark.parametrize(
    "literal",
    ['"2024/05/01 10:00"', '"2024-05-01 10:00"', "'2024-05-01 10:00'", '"2024-5-1 10:00"'],
)
def test_date_literal_formats_agree(literal: str) -> None:
    assert matching_set(f"lastmodified >= {literal}") == {"100", "102", "103", "104", "105", "200"}


@pytest.mark.parametrize("literal", ['"2024/05/01"', '"2024-05-01"', "2024-05-01"])
def test_date_only_literal_is_midnight(literal: str) -> None:
    assert matching_set(f"lastmodified >= {literal}") == {
        "100",
        "101",
        "102",
        "103",
        "104",
        "105",
        "200",
    }


def test_seconds_never_matter() -> None:
    early = page_at(utc(2024, 5, 1, 10, 0, 0), "1")
    late = page_at(utc(2024, 5, 1, 10, 0, 59, 999000), "2")
    next_minute = page_at(utc(2024, 5, 1, 10, 1, 0), "3")
    items = [early, late, next_minute]

    assert [i.id for i in items if parse('lastmodified = "2024-05-01 10:00"').matches(i)] == [
        "1",
        "2",
    ]
    assert [i.id for i in items if parse('lastmodified > "2024-05-01 10:00"').matches(i)] == ["3"]
    assert [i.id for i in items if parse('lastmodified <= "2024-05-01 10:00"').matches(i)] == [
        "1",
        "2",
    ]
    assert [i.id for i in items if parse('lastmodified >= "2024-05-01 10:01"').matches(i)] == ["3"]


def test_date_only_equals_whole_day() -> None:
    items = [
        page_at(utc(2024, 5, 1, 0, 0), "1"),
        page_at(utc(2024, 5, 1, 23, 59, 59), "2"),
        page_at(utc(2024, 5, 2, 0, 0), "3"),
        page_at(utc(2024, 4, 30, 23, 59), "4"),
    ]
    query = parse('created = "2024-05-01"')

    assert [i.id for i in items if query.matches(i)] == ["1", "2"]


def test_literal_read_in_berlin() -> None:
    # 10:30 UTC is 12:30 in Berlin (CEST, UTC+2) on 2024-05-01.
    item = page_at(utc(2024, 5, 1, 10, 30))

    assert parse('lastmodified >= "2024-05-01 12:30"', time_zone="Europe/Berlin").matches(item)
    assert not parse('lastmodified >= "2024-05-01 12:31"', time_zone="Europe/Berlin").matches(item)
    assert not parse('lastmodified >= "2024-05-01 12:30"').matches(item)
    assert parse('lastmodified >= "2024-05-01 10:30"').matches(item)


def test_date_only_in_berlin_starts_at_local_midnight() -> None:
    before = page_at(utc(2024, 4, 30, 21, 59), "1")
    after = page_at(utc(2024, 4, 30, 22, 0), "2")
    query = parse('created >= "2024-05-01"', time_zone="Europe/Berlin")

    assert not query.matches(before)
    assert query.matches(after)


def test_dst_gap_moves_later() -> None:
    # Berlin skips 02:00-03:00 on 2024-03-31; 02:30 is read as 03:30 CEST, 01:30 UTC.
    before = page_at(utc(2024, 3, 31, 1, 29), "1")
    at = page_at(utc(2024, 3, 31, 1, 30), "2")
    items = [before, at]
    gap = parse('lastmodified >= "2024-03-31 02:30"', time_zone="Europe/Berlin")
    after_gap = parse('lastmodified >= "2024-03-31 03:30"', time_zone="Europe/Berlin")

    assert [i.id for i in items if gap.matches(i)] == ["2"]
    assert [i.id for i in items if after_gap.matches(i)] == ["2"]


def test_dst_gap_minute_equality() -> None:
    at = page_at(utc(2024, 3, 31, 1, 30, 40))
    query = parse('lastmodified = "2024-03-31 02:30"', time_zone="Europe/Berlin")

    assert query.matches(at)


def test_dst_overlap_takes_earlier_instant() -> None:
    # Berlin shows 02:30 twice on 2024-10-27: 00:30 UTC (CEST) and 01:30 UTC (CET).
    first = page_at(utc(2024, 10, 27, 0, 30), "1")
    second = page_at(utc(2024, 10, 27, 1, 30), "2")
    items = [first, second]
    equal = parse('lastmodified = "2024-10-27 02:30"', time_zone="Europe/Berlin")
    later = parse('lastmodified > "2024-10-27 02:30"', time_zone="Europe/Berlin")

    assert [i.id for i in items if equal.matches(i)] == ["1"]
    assert [i.id for i in items if later.matches(i)] == ["2"]


def test_dst_overlap_last_minute() -> None:
    # 02:59 ends the overlap: it is 00:59 UTC, and the next local minute is 03:00 CET (02:00 UTC).
    first = page_at(utc(2024, 10, 27, 0, 59), "1")
    second = page_at(utc(2024, 10, 27, 1, 30), "2")
    query = parse('lastmodified = "2024-10-27 02:59"', time_zone="Europe/Berlin")

    assert query.matches(first)
    assert not query.matches(second)


def test_short_day_date_literal() -> None:
    # 2024-03-31 lasts 23 hours in Berlin: 2024-03-30 23:00 UTC to 2024-03-31 22:00 UTC.
    items = [
        page_at(utc(2024, 3, 30, 22, 59), "1"),
        page_at(utc(2024, 3, 30, 23, 0), "2"),
        page_at(utc(2024, 3, 31, 21, 59), "3"),
        page_at(utc(2024, 3, 31, 22, 0), "4"),
    ]
    query = parse('created = "2024-03-31"', time_zone="Europe/Berlin")

    assert [i.id for i in items if query.matches(i)] == ["2", "3"]


NOW = utc(2024, 5, 15, 12, 0, 30)  # a Wednesday
ONE_MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("cql", "boundary"),
    [
        ('now("-1d")', utc(2024, 5, 14, 12, 0)),
        ("now('-4h')", utc(2024, 5, 15, 8, 0)),
        ('now("-2w")', utc(2024, 5, 1, 12, 0)),
        ('now("-1M")', utc(2024, 4, 15, 12, 0)),
        ('now("-1y")', utc(2023, 5, 15, 12, 0)),
        ('now("-90m")', utc(2024, 5, 15, 10, 30)),
        ('now("-1w 2d")', utc(2024, 5, 6, 12, 0)),
        ('now("+1d")', utc(2024, 5, 16, 12, 0)),
        ("now()", utc(2024, 5, 15, 12, 0)),
        ("startOfDay()", utc(2024, 5, 15, 0, 0)),
        ('startOfDay("-1d")', utc(2024, 5, 14, 0, 0)),
        ("startOfWeek()", utc(2024, 5, 12, 0, 0)),
        ("startOfMonth()", utc(2024, 5, 1, 0, 0)),
        ('startOfMonth("-1M")', utc(2024, 4, 1, 0, 0)),
        ("startOfYear()", utc(2024, 1, 1, 0, 0)),
        ("STARTOFDAY()", utc(2024, 5, 15, 0, 0)),
    ],
)
def test_date_functions_utc(cql: str, boundary: datetime) -> None:
    query = parse(f"created >= {cql}", now=NOW)

    assert query.matches(page_at(boundary))
    assert not query.matches(page_at(boundary - ONE_MINUTE))


def test_end_of_day_is_last_minute() -> None:
    last_minute = page_at(utc(2024, 5, 15, 23, 59, 59))
    next_day = page_at(utc(2024, 5, 16, 0, 0))
    up_to = parse("created <= endOfDay()", now=NOW)
    after = parse("created > endOfDay()", now=NOW)

    assert up_to.matches(last_minute)
    assert not up_to.matches(next_day)
    assert after.matches(next_day)
    assert not after.matches(last_minute)


def test_end_of_month_and_year() -> None:
    assert parse("created <= endOfMonth()", now=NOW).matches(page_at(utc(2024, 5, 31, 23, 59)))
    assert not parse("created <= endOfMonth()", now=NOW).matches(page_at(utc(2024, 6, 1)))
    assert parse("created <= endOfYear()", now=NOW).matches(page_at(utc(2024, 12, 31, 23, 59)))
    assert not parse("created <= endOfWeek()", now=NOW).matches(page_at(utc(2024, 5, 19)))
    assert parse("created <= endOfWeek()", now=NOW).matches(page_at(utc(2024, 5, 18, 23, 59)))


def test_day_functions_in_berlin() -> None:
    # 23:30 UTC on 2024-05-15 is already 01:30 on 2024-05-16 in Berlin.
    late_evening = utc(2024, 5, 15, 23, 30)
    berlin = parse("created >= startOfDay()", time_zone="Europe/Berlin", now=late_evening)
    in_utc = parse("created >= startOfDay()", now=late_evening)
    item = page_at(utc(2024, 5, 15, 21, 0))

    assert berlin.matches(page_at(utc(2024, 5, 15, 22, 0)))
    assert not berlin.matches(item)
    assert in_utc.matches(item)


def test_start_of_week_in_berlin() -> None:
    # Sunday 2024-05-12 00:00 CEST is 2024-05-11 22:00 UTC.
    query = parse("created >= startOfWeek()", time_zone="Europe/Berlin", now=NOW)

    assert query.matches(page_at(utc(2024, 5, 11, 22, 0)))
    assert not query.matches(page_at(utc(2024, 5, 11, 21, 59)))


def test_month_increment_clamps_day() -> None:
    end_of_march = utc(2024, 3, 31, 12, 0)
    query = parse('created >= now("-1M")', now=end_of_march)

    assert query.matches(page_at(utc(2024, 2, 29, 12, 0)))
    assert not query.matches(page_at(utc(2024, 2, 29, 11, 59)))


def test_now_defaults_to_current_time() -> None:
    recent = page_at(datetime.now(UTC) - timedelta(hours=1))
    old = page_at(datetime.now(UTC) - timedelta(days=3))
    query = parse('lastmodified >= now("-1d")')

    assert query.matches(recent)
    assert not query.matches(old)


# Errors --------------------------------------------------------------------------------------

STATUS_FIELD_REASON = (
    "No field exists with the name: 'status' "
    "Did you mean one of : space, subtype, space.key, siteSearch, space.type"
)
BAD_TYPE_REASON = (
    "Unsupported value for type, got : bogustype, expected one of : "
    "[space, user, page, blogpost, comment, attachment, database, whiteboard, slide, embed, "
    "folder]"
)


@pytest.mark.parametrize(
    ("cql", "reason"),
    [
        ("status = current", STATUS_FIELD_REASON),
        ('title = "x" and status = current', STATUS_FIELD_REASON),
        ("zebra = 1", "No field exists with the name: 'zebra'"),
        ("type = bogustype", BAD_TYPE_REASON),
        ("type in (page, bogustype)", BAD_TYPE_REASON),
        ("   ", "Could not parse cql : "),
        ("\t", "Could not parse cql : "),
        ("", "cql query parameter is required"),
    ],
)
def test_recorded_error_messages(cql: str, reason: str) -> None:
    with pytest.raises(CqlError) as caught:
        parse(cql)

    assert caught.value.reason == reason
    assert caught.value.message == f"{BAD_REQUEST}: {reason}"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "cql",
    [
        'title = ""',
        'title = "   "',
        "space = ",
        "space =",
        'title = "open',
        "type = page and",
        "and type = page",
        "type = page)",
        "(type = page",
        "type = page ! space = X",
        "space in ()",
        "space in (A,)",
        "type page",
        "order by created",
        "type = page order created",
        "type = page order by label",
        "type = page order by text",
        "type = page order by",
        "type = page extra",
        "text = deploy",
        "type ~ page",
        "label ~ howto",
        'text ~ ""',
        'lastmodified in ("2024-01-01")',
        'lastmodified ~ "2024-01-01"',
        'lastmodified > "2026-05-12T09:00:00.000Z"',
        'lastmodified > "2024-13-01"',
        'lastmodified > "2024-02-30 10:00"',
        'lastmodified > "2024-05-01 25:00"',
        'lastmodified > "2024-05-01/10:00"',
        'lastmodified > "2024-05/01"',
        'lastmodified > "yesterday"',
        'created > now("yesterday")',
        'created > now("-1x")',
        'created > now("-1d", "-2d")',
        "created > tomorrow()",
        "space = now()",
        "creator = now()",
    ],
)
def test_unparsable_queries(cql: str) -> None:
    with pytest.raises(CqlError) as caught:
        parse(cql)

    assert caught.value.reason == f"Could not parse cql : {cql.strip()}"
    assert caught.value.detail != ""


@pytest.mark.parametrize("cql", ["macro = toc", "mention = u1", "type = page order by watcher"])
def test_unsupported_confluence_field(cql: str) -> None:
    with pytest.raises(CqlError) as caught:
        parse(cql)

    assert "exists in Confluence but this emulator does not evaluate it" in caught.value.reason
    assert "use one of: ancestor" in caught.value.reason


def test_cloud_error_body() -> None:
    with pytest.raises(CqlError) as caught:
        parse("status = current")
    body = caught.value.body()

    assert set(body) == {"statusCode", "data", "message"}
    assert body["statusCode"] == 400
    assert body["message"] == f"{BAD_REQUEST}: {STATUS_FIELD_REASON}"
    assert body["data"] == {"authorized": True, "valid": True, "errors": [], "successful": True}


def test_datacenter_error_body() -> None:
    with pytest.raises(CqlError) as caught:
        parse("type = bogustype")
    body = caught.value.body("datacenter")

    assert set(body) == {"statusCode", "data", "message", "reason"}
    assert body["statusCode"] == 400
    assert body["message"] == BAD_TYPE_REASON
    assert body["reason"] == "Bad Request"
    assert set(body["data"]) == {
        "authorized",
        "valid",
        "allowedInReadOnlyMode",
        "errors",
        "successful",
    }


def test_required_error_body() -> None:
    body = CqlError.required().body()

    assert body["message"] == f"{BAD_REQUEST}: cql query parameter is required"
    assert body["data"]["successful"] is True


def test_error_text_names_query_and_cause() -> None:
    with pytest.raises(CqlError) as caught:
        parse('lastmodified > "2026-05-12T09:00:00.000Z"')

    assert "2026-05-12T09:00:00.000Z" in str(caught.value)
    assert "yyyy-MM-dd HH:mm" in str(caught.value)


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus_Mons") as caught:
        parse("type = page", time_zone="Mars/Olympus_Mons")

    assert not isinstance(caught.value, CqlError)


def test_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse("type = page", now=datetime(2024, 5, 1, 12, 0))


# Ordering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cql", "expected"),
    [
        ("type = page order by lastmodified asc", ["101", "100", "200", "102"]),
        ("type = page order by lastmodified desc", ["102", "100", "200", "101"]),
        ("type = page order by lastmodified", ["102", "100", "200", "101"]),
        ("type = page order by lastModified ASC", ["101", "100", "200", "102"]),
        ("type = page", ["102", "100", "200", "101"]),
        ("type = page order by title", ["100", "200", "102", "101"]),
        ("type = page order by title desc", ["101", "102", "100", "200"]),
        ("space = OPS order by id desc", ["201", "200"]),
        ("type = page order by created asc, id desc", ["200", "100", "101", "102"]),
        ("type = page order by created desc", ["102", "101", "100", "200"]),
        (
            "type in (page, blogpost) order by space, title",
            ["100", "102", "101", "103", "200", "201"],
        ),
        ("space = ENG order by type, id", ["105", "103", "104", "100", "101", "102"]),
    ],
)
def test_order_by(cql: str, expected: list[str]) -> None:
    assert matching_ids(parse(cql)) == expected


def test_order_independent_of_input_order() -> None:
    query = parse("space in (ENG, OPS) order by lastmodified asc")
    forward = [i.id for i in query.sort(ITEMS)]
    backward = [i.id for i in query.sort(reversed(ITEMS))]

    assert forward == backward


def test_id_order_is_numeric() -> None:
    items = [page_at(utc(2024, 1, 1), "10"), page_at(utc(2024, 1, 1), "9")]

    assert [i.id for i in parse("type = page order by id").sort(items)] == ["9", "10"]
    assert [i.id for i in parse("type = page order by created").sort(items)] == ["9", "10"]


def test_sort_key_comparable_for_cursor() -> None:
    query = parse("type = page order by lastmodified desc")
    by_id = {i.id: i for i in ITEMS}

    assert query.sort_key(by_id["102"]) < query.sort_key(by_id["100"])
    assert query.sort_key(by_id["100"]) < query.sort_key(by_id["200"])
    assert query.sort_key(by_id["200"]) < query.sort_key(by_id["101"])


@pytest.mark.parametrize(
    ("cql", "order_by"),
    [
        ("type = page order by lastmodified", [("lastmodified", True)]),
        ("type = page order by created", [("created", True)]),
        ("type = page ORDER BY created ASC", [("created", False)]),
        ("type = page order by title", [("title", False)]),
        ("type = page order by space.key desc, id", [("space", True), ("id", False)]),
        ("type = page", []),
    ],
)
def test_order_by_attribute(cql: str, order_by: list[tuple[str, bool]]) -> None:
    assert parse(cql).order_by == order_by


def test_default_order_is_last_modified_desc() -> None:
    assert parse("type = page").effective_order == [("lastmodified", True)]


# Scan narrowing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cql", "spaces", "types"),
    [
        (
            'space = "ENG" and type = page and lastmodified >= "2024-05-01 10:00"',
            {"ENG"},
            {"page"},
        ),
        ('type in (page, blogpost) and space in ("A","B")', {"A", "B"}, {"page", "blogpost"}),
        ("space = A or space = B", {"A", "B"}, None),
        ("space = A or type = page", None, None),
        ("space in (A, B) and space = b", {"B"}, None),
        ("space = A and space = B", set(), None),
        ("not space = A", None, None),
        ("space != A and type != page", None, None),
        ('text ~ "deploy"', None, None),
        ("type = PAGE", None, {"page"}),
        (
            "(space = A and type = page) or (space = B and type = blogpost)",
            {"A", "B"},
            {"page", "blogpost"},
        ),
        ("space.key = A and (type = page or type = comment)", {"A"}, {"page", "comment"}),
    ],
)
def test_candidates(cql: str, spaces: set[str] | None, types: set[str] | None) -> None:
    query = parse(cql)

    assert query.candidate_space_keys() == spaces
    assert query.candidate_types() == types


def test_candidate_ids() -> None:
    assert parse("id in (1, 2) and type = page").candidate_ids() == {"1", "2"}
    assert parse("type = page").candidate_ids() is None


def test_candidates_cover_every_match() -> None:
    queries: Sequence[str] = (
        "space in (eng, OPS) and type in (page, comment)",
        "(space = ENG and type = blogpost) or (space = OPS and type = page)",
    )
    for cql in queries:
        query = parse(cql)
        spaces = {key.casefold() for key in query.candidate_space_keys() or ()}
        types = query.candidate_types() or set()
        for item in ITEMS:
            if query.matches(item):
                assert item.space_key.casefold() in spaces, (cql, item.id)
                assert item.type in types, (cql, item.id)


# Against the site model ----------------------------------------------------------------------


def build_site() -> Site:
    site = Site(time_zone="Europe/Berlin")
    site.set_clock(utc(2024, 5, 1, 8, 0), frozen=True)
    site.add_user(
        User(
            account_id="6c21bd9e93f16c33dd8e5f06",
            display_name="Second Editor",
            email="editor@example.com",
            time_zone="UTC",
            username="editor",
            user_key="8a7f808a7a1b2c3d017a1b2c3d4e0002",
        )
    )
    site.create_space("ENG", "Engineering")
    site.create_space("OPS", "Operations")
    return site


def test_model_content_queries() -> None:
    site = build_site()
    root = site.create_content(
        type=ContentType.PAGE,
        space_key="ENG",
        title="Deploy Guide",
        body_storage="<p>How to <strong>deploy</strong> the service.</p>",
        labels=["howto"],
    )
    child = site.create_content(
        type=ContentType.PAGE,
        space_key="ENG",
        title="Rollback",
        body_storage="<p>Undo a release.</p>",
        parent_id=root.id,
    )
    comment = site.create_content(
        type=ContentType.COMMENT,
        space_key="ENG",
        title="Re: Deploy Guide",
        body_storage="<p>Thanks</p>",
        container_id=root.id,
    )
    other = site.create_content(
        type=ContentType.BLOGPOST, space_key="OPS", title="Weekly", body_storage="<p>Quiet.</p>"
    )
    site.set_clock(utc(2024, 5, 1, 10, 30))
    site.edit_content(
        child.id, body_storage="<p>Undo a release fast.</p>", author="6c21bd9e93f16c33dd8e5f06"
    )

    def found(cql: str) -> list[str]:
        query = parse(cql, time_zone=site.time_zone, now=site.now())
        return [item.id for item in query.sort(i for i in site.contents() if query.matches(i))]

    assert found(f"ancestor = {root.id}") == [child.id]
    assert found("label = howto") == [root.id]
    # Both were last modified at 08:00, so the id breaks the tie.
    assert found('text ~ "deploy"') == [root.id, comment.id]
    assert found(f"container = {root.id}") == [comment.id]
    assert found("contributor = 6c21bd9e93f16c33dd8e5f06") == [child.id]
    assert found("space = ops") == [other.id]
    # 10:30 UTC is 12:30 in Berlin, the site zone.
    assert found('type = page and lastmodified >= "2024-05-01 12:30"') == [child.id]
    assert found('type = page and lastmodified >= "2024-05-01 12:31"') == []


def test_model_trashed_and_archived() -> None:
    site = build_site()
    page = site.create_content(type=ContentType.PAGE, space_key="ENG", title="Gone")
    ops_page = site.create_content(type=ContentType.PAGE, space_key="OPS", title="Kept")
    query = parse("type = page")

    def space_status(key: str) -> str:
        space = site.space(key)
        return space.status if space is not None else "current"

    site.trash_content(page.id)
    assert [i.id for i in site.contents() if query.matches(i, space_status)] == [ops_page.id]

    site.archive_space("OPS")
    assert [i.id for i in site.contents() if query.matches(i, space_status)] == []
    assert [i.id for i in site.contents() if query.matches(i)] == [ops_page.id]
