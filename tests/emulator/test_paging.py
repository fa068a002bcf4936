"""Offset and cursor paging of the emulator, without HTTP."""

from __future__ import annotations

import pytest

from emulator.paging import (
    POLICIES,
    CursorPage,
    OffsetPage,
    PagingError,
    SearchCursor,
    cursor_page,
    decode_cursor,
    encode_cursor,
    encode_query,
    estimate_total,
    offset_links,
    parse_page,
    parse_search_limit,
    short_page_rows,
    slice_page,
)

CONTENT = POLICIES["content"]
LABEL = POLICIES["label"]


def test_defaults_per_route() -> None:
    assert parse_page(None, None, CONTENT).limit == 25
    assert parse_page(None, None, POLICIES["space"]).limit == 25
    assert parse_page(None, None, LABEL).limit == 200
    assert parse_page(None, None, POLICIES["version"]).limit == 200
    assert parse_page(None, None, POLICIES["restriction"]).limit == 100


def test_limit_capped_and_echoed() -> None:
    request = parse_page("0", "5000", CONTENT)
    assert request.limit == 1000
    assert request.rows == 1000
    assert parse_page("0", "5000", POLICIES["child-page"]).limit == 5000
    assert parse_page("0", "500", LABEL).limit == 200


def test_body_expansion_lowers_cap() -> None:
    assert parse_page("0", "500", CONTENT, expand_paths=["body.storage"]).limit == 100
    assert parse_page("0", "500", CONTENT, expand_paths=["body.export_view"]).limit == 25
    assert parse_page("0", "500", CONTENT, expand_paths=["version"]).limit == 500


def test_negative_start_body() -> None:
    with pytest.raises(PagingError) as caught:
        parse_page("-1", "-1", CONTENT)
    assert caught.value.status == 400
    assert caught.value.body == {
        "statusCode": 400,
        "message": "java.lang.IllegalArgumentException: start cannot be less than zero",
    }


def test_negative_limit_body() -> None:
    with pytest.raises(PagingError) as caught:
        parse_page("0", "-5", CONTENT)
    assert caught.value.body is not None
    assert caught.value.body["message"] == (
        "java.lang.IllegalArgumentException: limit cannot be less than zero"
    )


def test_non_integer_body() -> None:
    with pytest.raises(PagingError) as caught:
        parse_page("abc", None, CONTENT)
    assert caught.value.status == 400
    assert caught.value.body is not None
    message = caught.value.body["message"]
    assert message.startswith(
        "org.springframework.web.method.annotation.MethodArgumentTypeMismatchException"
    )
    assert message.endswith('For input string: "abc"')


def test_label_limit_zero_rejected() -> None:
    with pytest.raises(PagingError) as caught:
        parse_page("0", "0", LABEL)
    assert caught.value.body == {
        "statusCode": 400,
        "message": "java.lang.IllegalArgumentException: null",
    }


def test_content_start_limit() -> None:
    assert parse_page("100000", "25", CONTENT).start == 100000
    with pytest.raises(PagingError) as caught:
        parse_page("100001", "25", CONTENT)
    body = caught.value.body
    assert body is not None
    assert body["statusCode"] == 400
    assert "Start of this size is no longer supported" in body["message"]
    assert set(body["data"]) == {
        "authorized",
        "valid",
        "allowedInReadOnlyMode",
        "errors",
        "successful",
    }
    assert parse_page("100001", "25", POLICIES["space"]).start == 100001


def test_slice_walk_covers_list() -> None:
    total = 61
    start = 0
    seen: list[int] = []
    while True:
        request = parse_page(str(start), "25", CONTENT)
        page = slice_page(total, request, CONTENT)
        seen.extend(range(page.start, page.end))
        if page.next_start is None:
            break
        start = page.next_start
    assert seen == list(range(total))


def test_past_end_is_empty() -> None:
    page = slice_page(10, parse_page("10", "25", CONTENT), CONTENT)
    assert page.end - page.start == 0
    assert page.next_start is None
    assert page.prev_start == 0


def test_zero_limit_content_keeps_next() -> None:
    page = slice_page(10, parse_page("0", "0", CONTENT), CONTENT)
    assert page.end == page.start
    assert page.next_start == 0
    space_page = slice_page(10, parse_page("0", "0", POLICIES["space"]), POLICIES["space"])
    assert space_page.next_start is None


def test_silent_cap_overcounts_next() -> None:
    request = parse_page("0", "500", CONTENT, silent_cap=200)
    assert request.limit == 500
    assert request.rows == 200
    page = slice_page(1000, request, CONTENT)
    assert page.end == 200
    assert page.next_start == 500


def test_links_carry_params() -> None:
    page = OffsetPage(start=25, end=50, next_start=50, prev_start=0)
    links = offset_links(
        base="http://h/wiki",
        api_path="/rest/api/content",
        params=[("spaceKey", "ENG"), ("expand", "body.storage,version")],
        page=page,
        limit=25,
    )
    assert links["self"] == (
        "http://h/wiki/rest/api/content?spaceKey=ENG&expand=body.storage,version"
    )
    assert links["next"] == (
        "/rest/api/content?next=true&spaceKey=ENG&expand=body.storage,version&limit=25&start=50"
    )
    assert links["prev"] == (
        "/rest/api/content?prev=true&spaceKey=ENG&expand=body.storage,version&limit=25&start=0"
    )


def test_encode_query_spaces_and_commas() -> None:
    assert encode_query([("cql", "space = ENG and type in (page,blogpost)")]) == (
        "cql=space+%3D+ENG+and+type+in+%28page,blogpost%29"
    )


def test_cursor_round_trip() -> None:
    cursor = SearchCursor(last_id="98305", position=17)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize("token", ["abc", "_e_!!!", "_e_eyJ4IjoxfQ=="])
def test_bad_cursor_rejected(token: str) -> None:
    with pytest.raises(PagingError) as caught:
        decode_cursor(token)
    assert caught.value.status == 400


def test_search_limit_not_integer_is_bodiless_404() -> None:
    with pytest.raises(PagingError) as caught:
        parse_search_limit("ten", POLICIES["search"], [])
    assert caught.value.status == 404
    assert caught.value.body is None


def test_short_pages_deterministic() -> None:
    rows = [short_page_rows(100, 0.5, seed=("q", index)) for index in range(200)]
    assert rows == [short_page_rows(100, 0.5, seed=("q", index)) for index in range(200)]
    assert any(count < 100 for count in rows)
    assert all(90 <= count <= 100 for count in rows)
    assert short_page_rows(100, 0.0, seed="q") == 100


def test_cursor_walk_every_item_once() -> None:
    ids = [str(1000 + index) for index in range(237)]
    index_of = {content_id: position for position, content_id in enumerate(ids)}
    cursor: SearchCursor | None = None
    served: list[str] = []
    short_seen = False
    for _ in range(100):
        page: CursorPage = cursor_page(ids, index_of, cursor, 25, short_page_rate=0.5, seed="w")
        served.extend(ids[page.start : page.end])
        if page.next_cursor is None:
            break
        short_seen = short_seen or page.end - page.start < 25
        cursor = decode_cursor(page.next_cursor)
    assert served == ids
    assert short_seen


def test_cursor_survives_removed_row() -> None:
    ids = [str(index) for index in range(10)]
    first = cursor_page(ids, {i: p for p, i in enumerate(ids)}, None, 4, short_page_rate=0, seed=1)
    assert first.next_cursor is not None
    cursor = decode_cursor(first.next_cursor)
    remaining = [content_id for content_id in ids if content_id != cursor.last_id]
    second = cursor_page(
        remaining,
        {i: p for p, i in enumerate(remaining)},
        cursor,
        4,
        short_page_rate=0,
        seed=1,
    )
    assert remaining[second.start : second.end] == ["4", "5", "6", "7"]


def test_total_estimate_near_real() -> None:
    estimates = {estimate_total(289, seed=index) for index in range(50)}
    assert all(280 <= estimate <= 300 for estimate in estimates)
    assert len(estimates) > 1
    assert estimate_total(0, seed=1) == 0


def test_cursor_without_index_scans() -> None:
    ids = [str(index) for index in range(10)]
    first = cursor_page(ids, None, None, 3, short_page_rate=0, seed=2)
    assert first.next_cursor is not None
    shifted = ["extra", *ids]
    second = cursor_page(
        shifted, None, decode_cursor(first.next_cursor), 3, short_page_rate=0, seed=2
    )
    assert shifted[second.start : second.end] == ["3", "4", "5"]


def test_next_past_end_quirk() -> None:
    full_last = slice_page(50, parse_page("25", "25", CONTENT, next_past_end=True), CONTENT)
    assert full_last.next_start == 50
    empty = slice_page(50, parse_page("50", "25", CONTENT, next_past_end=True), CONTENT)
    assert empty.end == empty.start
    assert empty.next_start == 75
    short_last = slice_page(40, parse_page("25", "25", CONTENT, next_past_end=True), CONTENT)
    assert short_last.next_start is None
