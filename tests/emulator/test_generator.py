"""Tests of the seeded site generator: determinism, sizes and variety."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from emulator import storage
from emulator.generator import BASE_TIME, DANGLING_TITLE_PREFIX, generate_site
from emulator.model import Content, ContentStatus, ContentType, Site
from emulator.storage import Link, find_links, parse_posting_day

CLOUD_ACCOUNT_ID = re.compile(r"^([0-9a-f]{24}|557058:[0-9a-f-]{36})$")


def fingerprint(site: Site) -> list[Any]:
    """Everything a crawler could observe of a site, except the running model clock."""
    spaces = [
        (s.id, s.key, s.name, s.type, s.status, s.description, s.homepage_id, s.created, s.creator)
        for s in site.spaces.values()
    ]
    users = [
        (u.account_id, u.display_name, u.email, u.time_zone, u.username, u.user_key)
        for u in site.users.values()
    ]
    contents = [
        (
            c.id,
            c.type,
            c.status,
            c.title,
            c.space_key,
            c.parent_id,
            c.container_id,
            c.position,
            c.created,
            c.created_by,
            [(v.number, v.when, v.by, v.message, v.minor_edit, v.title, v.body_storage)
             for v in c.versions],
            [(label.prefix, label.name, label.id) for label in c.labels],
            c.read_restriction_users,
            c.read_restriction_groups,
            c.comment_location,
            c.inline_marker_ref,
            c.media_type,
            c.file_size,
            c.ancestor_ids,
            c.changed_at,
        )
        for c in site.contents()
    ]  # fmt: skip
    return [spaces, users, contents]


@pytest.fixture(scope="module")
def site() -> Site:
    return generate_site(11, 3000)


def of_type(site: Site, type: ContentType, status: ContentStatus | None = None) -> list[Content]:
    return [c for c in site.contents() if c.type is type and (status is None or c.status is status)]


# ----------------------------------------------------------------- determinism


def test_same_seed_same_site() -> None:
    first = generate_site(5, 400)
    second = generate_site(5, 400)
    assert fingerprint(first) == fingerprint(second)


def test_other_seed_other_site() -> None:
    first = generate_site(5, 400)
    second = generate_site(6, 400)
    assert fingerprint(first) != fingerprint(second)
    first_bodies = [c.body_storage for c in first.contents()]
    second_bodies = [c.body_storage for c in second.contents()]
    assert first_bodies != second_bodies


def test_same_seed_across_hash_seeds() -> None:
    # String hashing differs per process, so set iteration order must not leak in.
    script = (
        "import hashlib\n"
        "from emulator.generator import generate_site\n"
        "from tests.emulator.test_generator import fingerprint\n"
        "site = generate_site(9, 300)\n"
        "print(hashlib.sha256(repr(fingerprint(site)).encode()).hexdigest())\n"
    )
    digests = []
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
            env=environment,
            timeout=120,
        )
        digests.append(result.stdout.strip())
    assert digests[0] == digests[1]
    assert len(digests[0]) == 64


def test_model_clock_runs_after_generation() -> None:
    site = generate_site(1, 10)
    assert not site.clock_frozen
    assert site.now() > BASE_TIME


# ----------------------------------------------------------------- sizes


@pytest.mark.parametrize("pages", [1, 5, 19, 20, 250, 1200])
def test_page_count_matches_request(pages: int) -> None:
    site = generate_site(3, pages)
    assert len(of_type(site, ContentType.PAGE)) == pages
    assert len(of_type(site, ContentType.BLOGPOST)) == pages // 10


def test_explicit_sizes() -> None:
    site = generate_site(3, 300, spaces=4, personal_spaces=2, blog_posts=17, users=9)
    global_spaces = [s for s in site.spaces.values() if s.type == "global"]
    personal_spaces = [s for s in site.spaces.values() if s.type == "personal"]
    assert len(global_spaces) == 4
    assert len(personal_spaces) == 2
    assert len(of_type(site, ContentType.BLOGPOST)) == 17
    assert len(site.users) == 10  # nine generated plus the API user


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="at least 1 page"):
        generate_site(1, 0)
    with pytest.raises(ValueError, match="every space has a homepage"):
        generate_site(1, 3, spaces=5)
    with pytest.raises(ValueError, match="no time zone"):
        generate_site(1, 10, base_time=datetime(2024, 1, 1))


def test_counts_per_type(site: Site) -> None:
    counts = site.counts()
    assert counts["page"] > 2800
    assert counts["blogpost"] > 250
    assert counts["comment"] > 500
    assert counts["attachment"] > 300
    assert counts["page:draft"] > 0
    assert counts["page:trashed"] > 0
    assert counts["page:archived"] > 0
    assert counts["blogpost:trashed"] > 0
    assert counts["space:archived"] == 1


# ----------------------------------------------------------------- variety


def test_spaces(site: Site) -> None:
    types = Counter(s.type for s in site.spaces.values())
    assert types["global"] >= 3
    assert types["personal"] >= 1
    for space in site.spaces.values():
        assert space.homepage_id is not None
        home = site.content(space.homepage_id)
        assert home is not None
        assert home.parent_id is None
        assert home.space_key == space.key
        if space.type == "personal":
            assert space.key == f"~{space.creator}"
            assert home.title == "Overview"
    assert any(not s.description.isascii() for s in site.spaces.values())


def test_deep_hierarchy(site: Site) -> None:
    depths = [len(c.ancestor_ids) for c in of_type(site, ContentType.PAGE)]
    assert max(depths) >= 10
    deep = max(of_type(site, ContentType.PAGE), key=lambda c: len(c.ancestor_ids))
    chain = site.ancestors(deep.id)
    assert chain[0].parent_id is None
    for parent, child in zip(chain, [*chain[1:], deep], strict=True):
        assert child.parent_id == parent.id


def test_titles_unique_per_space(site: Site) -> None:
    seen: set[tuple[str, str]] = set()
    for content in of_type(site, ContentType.PAGE):
        if content.status in (ContentStatus.CURRENT, ContentStatus.ARCHIVED):
            key = (content.space_key, content.title)
            assert key not in seen
            seen.add(key)


def test_unicode_and_escaping_titles(site: Site) -> None:
    titles = [c.title for c in of_type(site, ContentType.PAGE)]
    assert any(not t.isascii() for t in titles)
    assert any(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", t) for t in titles)  # CJK
    assert any(re.search(r"[\u0590-\u06ff]", t) for t in titles)  # Hebrew or Arabic
    assert any(re.search(r"[\U0001F300-\U0001FAFF]", t) for t in titles)  # emoji
    assert any('"' in t for t in titles)
    assert any("&" in t for t in titles)
    assert any("\\" in t for t in titles)
    assert any("<" in t for t in titles)


def test_unicode_bodies(site: Site) -> None:
    bodies = [c.body_storage for c in of_type(site, ContentType.PAGE)]
    assert sum(1 for b in bodies if not b.isascii()) > 100


def test_bodies_are_well_formed(site: Site) -> None:
    wrapper = '<root xmlns:ac="urn:ac" xmlns:ri="urn:ri">{}</root>'
    for content in site.contents():
        for version in content.versions:
            ElementTree.fromstring(wrapper.format(version.body_storage))


def test_bodies_contain_storage_elements(site: Site) -> None:
    joined = "".join(c.body_storage for c in of_type(site, ContentType.PAGE)[:500])
    for marker in (
        "<h1>",
        "<p>",
        "<table>",
        '<ac:structured-macro ac:name="code"',
        '<ac:structured-macro ac:name="info"',
        "<ri:page ",
        "<ri:user ",
        "<ul>",
    ):
        assert marker in joined, marker


def test_large_pages_exist() -> None:
    site = generate_site(2, 5000)
    sizes = sorted(len(c.body_storage) for c in of_type(site, ContentType.PAGE))
    large = [size for size in sizes if size > 100_000]
    assert 1 <= len(large) <= 40
    assert sizes[len(sizes) // 2] < 20_000


def test_links_resolve_or_dangle(site: Site) -> None:
    kinds: Counter[str] = Counter()
    for content in site.contents():
        if content.type not in (ContentType.PAGE, ContentType.BLOGPOST):
            continue
        for link in find_links(content.body_storage):
            if link.kind == "page":
                assert link.title is not None
                space_key = link.space_key or content.space_key
                target = site.find_page(space_key, link.title)
                if link.title.startswith(DANGLING_TITLE_PREFIX):
                    assert target is None
                    kinds["dangling"] += 1
                else:
                    assert target is not None, (content.id, link)
                    kinds["other space" if space_key != content.space_key else "page"] += 1
            elif link.kind == "blogpost":
                assert link.space_key is not None and link.title is not None
                assert link.posting_day is not None
                day = parse_posting_day(link.posting_day)
                assert site.find_blog_post(link.space_key, link.title, day) is not None
                kinds["blogpost"] += 1
            elif link.kind == "user":
                assert link.account_id in site.users
                kinds["user"] += 1
    for kind in ("page", "other space", "blogpost", "dangling", "user"):
        assert kinds[kind] > 10, kinds


def test_users(site: Site) -> None:
    for user in site.users.values():
        assert CLOUD_ACCOUNT_ID.match(user.account_id), user.account_id
        assert re.fullmatch(r"[0-9a-f]{32}", user.user_key)
        assert user.time_zone
    assert any(u.account_id.startswith("557058:") for u in site.users.values())
    assert len({u.time_zone for u in site.users.values()}) > 3


def test_history_and_times(site: Site) -> None:
    pages = of_type(site, ContentType.PAGE)
    assert any(len(c.versions) >= 3 for c in pages)
    for content in site.contents():
        assert content.created < BASE_TIME
        assert content.created.tzinfo is UTC
        numbers = [v.number for v in content.versions]
        assert numbers == list(range(1, len(numbers) + 1))
        times = [v.when for v in content.versions]
        assert times == sorted(times)
        assert times[0] == content.created
        assert times[-1] < BASE_TIME


def test_comments_and_attachments(site: Site) -> None:
    comments = of_type(site, ContentType.COMMENT)
    locations = Counter(c.comment_location for c in comments)
    assert locations["footer"] > 0
    assert locations["inline"] > 0
    assert any(c.parent_id is not None for c in comments)
    for item in comments:
        if item.comment_location == "inline":
            container = site.content(item.container_id or "")
            assert container is not None
            marker = f'<ac:inline-comment-marker ac:ref="{item.inline_marker_ref}">'
            assert marker in container.body_storage
    for item in comments:
        assert item.container_id is not None
        container = site.content(item.container_id)
        assert container is not None
        assert container.space_key == item.space_key
    attachments = of_type(site, ContentType.ATTACHMENT)
    assert all(a.media_type and a.file_size for a in attachments)
    assert any(len(a.versions) > 1 for a in attachments)
    blogs = of_type(site, ContentType.BLOGPOST)
    assert any(len(b.versions) > 1 for b in blogs)
    assert len({a.media_type for a in attachments}) > 3


def test_labels_and_restrictions(site: Site) -> None:
    pages = of_type(site, ContentType.PAGE)
    assert sum(1 for c in pages if c.labels) > 500
    restricted = [c for c in pages if c.is_restricted]
    assert restricted
    for content in restricted:
        assert all(account_id in site.users for account_id in content.read_restriction_users)


def test_statuses_only_on_leaves(site: Site) -> None:
    for content in of_type(site, ContentType.PAGE):
        if content.status is ContentStatus.CURRENT:
            for ancestor in site.ancestors(content.id):
                assert ancestor.status is ContentStatus.CURRENT


def test_archived_space_keeps_content(site: Site) -> None:
    archived = [s for s in site.spaces.values() if s.status == "archived"]
    assert len(archived) == 1
    assert site.space_contents(archived[0].key, ContentType.PAGE)


def test_blog_posting_days(site: Site) -> None:
    for blog in of_type(site, ContentType.BLOGPOST):
        assert blog.posting_day == blog.created.date()
        assert blog.parent_id is None


def test_crowded_pages(site: Site) -> None:
    gallery = site.find_page("ENG", "Attachment gallery")
    discussion = site.find_page("ENG", "Busy discussion")
    catalogue = site.find_page("ENG", "Label catalogue")
    assert gallery is not None and discussion is not None and catalogue is not None
    assert len(site.children(gallery.id, ContentType.ATTACHMENT)) >= 230
    assert len(site.children(discussion.id, ContentType.COMMENT)) >= 60
    assert len(catalogue.labels) >= 205


# ----------------------------------------------------------------- storage helpers


def test_links_round_trip_escaping() -> None:
    title = 'Q&A: "Release" <notes>'
    body = storage.paragraph(
        storage.page_link("ENG", title, title)
        + storage.page_link(None, "Same space")
        + storage.blog_post_link("OPS", "Weekly & more", date(2024, 2, 9))
        + storage.user_mention("557058:abc")
        + storage.attachment_link("résumé.pdf")
    )
    assert find_links(body) == [
        Link("page", space_key="ENG", title=title),
        Link("page", space_key=None, title="Same space"),
        Link("blogpost", space_key="OPS", title="Weekly & more", posting_day="2024/02/09"),
        Link("user", account_id="557058:abc"),
        Link("attachment", filename="résumé.pdf"),
    ]
    assert parse_posting_day("2024/02/09") == date(2024, 2, 9)


def test_extract_text_keeps_code() -> None:
    body = (
        storage.heading(2, "Fish & chips")
        + storage.table(["a<b"], [["1"]])
        + storage.code_macro("if a < b: print(']]>')", language="python")
        + storage.panel_macro(storage.text_paragraph("Note this"), kind="warning")
    )
    assert (
        storage.extract_text(body) == "Fish & chips a<b 1 python if a < b: print(']]>') Note this"
    )


def test_builders_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="heading level 7"):
        storage.heading(7, "x")
    with pytest.raises(ValueError, match="unknown panel macro 'danger'"):
        storage.panel_macro("", kind="danger")
