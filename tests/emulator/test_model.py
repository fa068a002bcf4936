"""Tests of the emulator's site model: mutations, indexes, invariants and the clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from emulator.model import (
    Content,
    ContentStatus,
    ContentType,
    InvalidOperation,
    NotFound,
    Site,
    User,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PAGE = ContentType.PAGE
BLOGPOST = ContentType.BLOGPOST
COMMENT = ContentType.COMMENT
ATTACHMENT = ContentType.ATTACHMENT


class FakeTime:
    """A settable replacement for time.time, so clock tests never wait."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def site() -> Site:
    site = Site()
    site.set_clock(T0, frozen=True)
    site.create_space("ENG", "Engineering", homepage_title="Engineering Home")
    site.create_space("OPS", "Operations", homepage_title="Operations Home")
    return site


def page(site: Site, title: str, parent: Content | None = None, space: str = "ENG") -> Content:
    return site.create_content(
        type=PAGE,
        space_key=space,
        title=title,
        body_storage=f"<p>{title}</p>",
        parent_id=parent.id if parent else None,
    )


def comment(site: Site, container: Content, reply_to: Content | None = None) -> Content:
    return site.create_content(
        type=COMMENT,
        space_key=container.space_key,
        title=f"Re: {container.title}",
        body_storage="<p>comment</p>",
        container_id=container.id,
        parent_id=reply_to.id if reply_to else None,
    )


def attachment(site: Site, container: Content, name: str = "a.png") -> Content:
    return site.create_content(
        type=ATTACHMENT,
        space_key=container.space_key,
        title=name,
        container_id=container.id,
        media_type="image/png",
        file_size=1234,
    )


def homepage(site: Site, key: str) -> Content:
    space = site.space(key)
    assert space is not None and space.homepage_id is not None
    content = site.content(space.homepage_id)
    assert content is not None
    return content


def titles(items: list[Content]) -> list[str]:
    return [item.title for item in items]


# ----------------------------------------------------------------- creation


def test_create_space_with_homepage(site: Site) -> None:
    space = site.space("ENG")
    assert space is not None
    home = homepage(site, "ENG")
    assert home.title == "Engineering Home"
    assert home.parent_id is None
    assert titles(site.root_pages("ENG")) == ["Engineering Home"]
    assert site.space_by_id(space.id) is space
    assert space.created == T0


def test_space_key_rules(site: Site) -> None:
    with pytest.raises(InvalidOperation, match="already exists"):
        site.create_space("ENG", "Again")
    with pytest.raises(InvalidOperation, match="invalid space key"):
        site.create_space("BAD KEY", "Spaces")
    with pytest.raises(InvalidOperation, match="personal space keys"):
        site.create_space("~abc", "Mine")
    personal = site.create_space("~5b10ac8d82e05b22cc7d4ef5", "Mine", type="personal")
    assert personal.type == "personal"


def test_ids_grow_with_creation(site: Site) -> None:
    first = page(site, "First")
    second = page(site, "Second")
    assert int(second.id) > int(first.id)
    ids = [int(item.id) for item in site.contents()]
    assert ids == sorted(ids)
    with pytest.raises(InvalidOperation, match="not above every existing id"):
        site.create_content(type=PAGE, space_key="ENG", title="Old", content_id=first.id)


def test_page_titles_unique_per_space(site: Site) -> None:
    page(site, "Runbook")
    with pytest.raises(InvalidOperation, match="already has a page titled 'Runbook'"):
        page(site, "Runbook")
    other = page(site, "Runbook", space="OPS")
    assert other.space_key == "OPS"
    assert site.find_page("ENG", "Runbook") is not None
    assert site.find_page("OPS", "Runbook") is other


def test_blog_titles_unique_per_day(site: Site) -> None:
    def blog(when: datetime) -> Content:
        return site.create_content(
            type=BLOGPOST, space_key="ENG", title="Weekly update", created=when
        )

    first = blog(T0)
    with pytest.raises(InvalidOperation, match="blog post titled 'Weekly update'"):
        blog(T0 + timedelta(hours=1))
    second = blog(T0 + timedelta(days=1))
    assert first.posting_day == date(2025, 3, 1)
    assert second.posting_day == date(2025, 3, 2)
    assert site.find_blog_post("ENG", "Weekly update", date(2025, 3, 2)) is second


def test_page_parent_rules(site: Site) -> None:
    ops_home = homepage(site, "OPS")
    with pytest.raises(InvalidOperation, match="share a space"):
        page(site, "Cross", parent=ops_home)
    with pytest.raises(NotFound, match="'999999'"):
        site.create_content(type=PAGE, space_key="ENG", title="X", parent_id="999999")
    blog = site.create_content(type=BLOGPOST, space_key="ENG", title="Post")
    with pytest.raises(InvalidOperation, match="a page's parent must be a page"):
        page(site, "Under blog", parent=blog)


def test_comment_and_attachment_rules(site: Site) -> None:
    home = homepage(site, "ENG")
    with pytest.raises(InvalidOperation, match="needs container_id"):
        site.create_content(type=COMMENT, space_key="ENG", title="Re")
    with pytest.raises(InvalidOperation, match="pass space_key='ENG'"):
        site.create_content(type=COMMENT, space_key="OPS", title="Re", container_id=home.id)
    first = attachment(site, home, "diagram.png")
    assert first.media_type == "image/png"
    assert first.file_size == 1234
    with pytest.raises(InvalidOperation, match="already has an attachment named"):
        attachment(site, home, "diagram.png")
    assert site.find_attachment(home.id, "diagram.png") is first


def test_inline_comment_gets_marker(site: Site) -> None:
    home = homepage(site, "ENG")
    inline = site.create_content(
        type=COMMENT,
        space_key="ENG",
        title="Re: home",
        container_id=home.id,
        comment_location="inline",
    )
    assert inline.comment_location == "inline"
    assert inline.inline_marker_ref
    footer = comment(site, home)
    assert footer.comment_location == "footer"
    assert footer.inline_marker_ref is None


def test_user_must_exist(site: Site) -> None:
    with pytest.raises(NotFound, match="no user with account id 'ghost'"):
        site.create_content(type=PAGE, space_key="ENG", title="X", author="ghost")
    user = User("557058:1", "Zoë", "z@example.com", "Asia/Tokyo", "zoe", "0" * 32)
    site.add_user(user)
    created = site.create_content(type=PAGE, space_key="ENG", title="X", author="557058:1")
    assert created.created_by == "557058:1"
    assert site.user("557058:1") is user


# ----------------------------------------------------------------- structure


def test_children_in_position_order(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    b = page(site, "B", home)
    c = site.create_content(type=PAGE, space_key="ENG", title="C", parent_id=home.id, position=0)
    assert titles(site.children(home.id, PAGE)) == ["C", "A", "B"]
    positions = [item.position for item in site.children(home.id, PAGE)]
    assert positions == sorted(positions)
    site.move_content(c.id, position=2)
    assert titles(site.children(home.id, PAGE)) == ["A", "B", "C"]
    assert a.ancestor_ids == [home.id]
    assert b.parent_id == home.id


def test_descendants_depth_first(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    page(site, "A1x", a1)
    page(site, "B", home)
    assert titles(site.descendants(home.id, PAGE)) == ["A", "A1", "A1x", "B"]
    assert titles(site.ancestors(a1.id)) == ["Engineering Home", "A"]


def test_comments_and_replies(site: Site) -> None:
    home = homepage(site, "ENG")
    top = comment(site, home)
    reply = comment(site, home, reply_to=top)
    nested = comment(site, home, reply_to=reply)
    assert [c.id for c in site.children(home.id, COMMENT)] == [top.id, reply.id, nested.id]
    assert [c.id for c in site.children(top.id, COMMENT)] == [reply.id]
    assert [c.id for c in site.descendants(top.id, COMMENT)] == [reply.id, nested.id]
    assert nested.ancestor_ids == [top.id, reply.id]
    assert top.ancestor_ids == []
    assert nested.container_id == home.id


def test_space_contents_by_type(site: Site) -> None:
    home = homepage(site, "ENG")
    child = page(site, "Child", home)
    blog = site.create_content(type=BLOGPOST, space_key="ENG", title="Post")
    note = comment(site, child)
    assert [c.id for c in site.space_contents("ENG", PAGE)] == [home.id, child.id]
    assert [c.id for c in site.space_contents("ENG", BLOGPOST)] == [blog.id]
    assert [c.id for c in site.space_contents("ENG")] == [home.id, child.id, blog.id, note.id]
    assert site.space_contents("NOPE") == []


# ----------------------------------------------------------------- moves


def test_move_keeps_ancestors_right(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    b = page(site, "B", home)
    a1 = page(site, "A1", a)
    a2 = page(site, "A2", a1)
    site.move_content(a.id, new_parent_id=b.id)
    assert a.parent_id == b.id
    assert a.ancestor_ids == [home.id, b.id]
    assert a1.ancestor_ids == [home.id, b.id, a.id]
    assert a2.ancestor_ids == [home.id, b.id, a.id, a1.id]
    assert titles(site.children(home.id, PAGE)) == ["B"]
    assert titles(site.children(b.id, PAGE)) == ["A"]


def test_move_to_root(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    site.move_content(a.id, new_space_key="ENG")
    assert a.parent_id is None
    assert a.ancestor_ids == []
    assert a1.ancestor_ids == [a.id]
    assert titles(site.root_pages("ENG")) == ["Engineering Home", "A"]


def test_move_under_own_descendant_fails(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    with pytest.raises(InvalidOperation, match="one of its descendants"):
        site.move_content(a.id, new_parent_id=a1.id)
    with pytest.raises(InvalidOperation, match="the page itself"):
        site.move_content(a.id, new_parent_id=a.id)
    assert a.parent_id == home.id
    assert a1.ancestor_ids == [home.id, a.id]


def test_move_to_other_space(site: Site) -> None:
    home = homepage(site, "ENG")
    ops_home = homepage(site, "OPS")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    note = comment(site, a1)
    file = attachment(site, a)
    before = a.changed_at, site.change_sequence
    site.set_clock(T0 + timedelta(minutes=5))
    site.move_content(a.id, new_parent_id=ops_home.id)
    for item in (a, a1, note, file):
        assert item.space_key == "OPS"
    assert a1.ancestor_ids == [ops_home.id, a.id]
    assert [c.id for c in site.space_contents("OPS", PAGE)] == [ops_home.id, a.id, a1.id]
    assert [c.id for c in site.space_contents("ENG", PAGE)] == [home.id]
    assert site.find_page("OPS", "A1") is a1
    assert site.find_page("ENG", "A1") is None
    assert a.changed_at > before[0]
    assert a1.changed_at == a.changed_at
    assert site.change_sequence > before[1]
    assert a.version.number == 1  # a move creates no version


def test_move_with_title_clash_changes_nothing(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    page(site, "Shared", a)
    page(site, "Shared", space="OPS")
    with pytest.raises(InvalidOperation, match="already has the title 'Shared'"):
        site.move_content(a.id, new_space_key="OPS")
    assert a.space_key == "ENG"
    assert titles(site.children(home.id, PAGE)) == ["A"]


def test_comments_do_not_move(site: Site) -> None:
    note = comment(site, homepage(site, "ENG"))
    with pytest.raises(InvalidOperation, match="only pages and blog posts move"):
        site.move_content(note.id, new_space_key="OPS")


# ----------------------------------------------------------------- trash


def test_trash_cascades_to_subtree(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    note = comment(site, a1)
    file = attachment(site, a)
    site.trash_content(a.id)
    for item in (a, a1, note, file):
        assert item.status is ContentStatus.TRASHED
    assert home.status is ContentStatus.CURRENT
    assert site.find_page("ENG", "A") is None
    with pytest.raises(InvalidOperation, match="already trashed"):
        site.trash_content(a.id)
    with pytest.raises(InvalidOperation, match="restore it before editing"):
        site.edit_content(a1.id, body_storage="<p>x</p>")


def test_restore_brings_back_what_was_trashed_together(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    a2 = page(site, "A2", a)
    site.trash_content(a2.id)  # trashed on its own first
    site.trash_content(a.id)
    site.restore_content(a.id)
    assert a.status is ContentStatus.CURRENT
    assert a1.status is ContentStatus.CURRENT
    assert a2.status is ContentStatus.TRASHED
    assert site.find_page("ENG", "A1") is a1


def test_restore_keeps_draft_status(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    draft = site.create_content(
        type=PAGE, space_key="ENG", title="Draft", parent_id=a.id, status=ContentStatus.DRAFT
    )
    site.trash_content(a.id)
    assert draft.status is ContentStatus.TRASHED
    site.restore_content(a.id)
    assert draft.status is ContentStatus.DRAFT


def test_restore_under_trashed_parent_becomes_root(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    site.trash_content(a.id)
    site.restore_content(a1.id)
    assert a1.status is ContentStatus.CURRENT
    assert a1.parent_id is None
    assert a1.ancestor_ids == []
    assert a1.id in [c.id for c in site.root_pages("ENG")]


def test_restore_with_title_taken_fails(site: Site) -> None:
    a = page(site, "A", homepage(site, "ENG"))
    site.trash_content(a.id)
    page(site, "A")
    with pytest.raises(InvalidOperation, match="already has a page titled 'A'"):
        site.restore_content(a.id)
    assert a.status is ContentStatus.TRASHED


def test_restore_needs_trashed_content(site: Site) -> None:
    with pytest.raises(InvalidOperation, match="only trashed content can be restored"):
        site.restore_content(homepage(site, "ENG").id)


# ----------------------------------------------------------------- purge


def test_purge_only_trashed(site: Site) -> None:
    a = page(site, "A", homepage(site, "ENG"))
    with pytest.raises(InvalidOperation, match="only trashed content can be purged"):
        site.purge_content(a.id)
    assert site.content(a.id) is a


def test_purge_removes_subtree(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    a1 = page(site, "A1", a)
    note = comment(site, a1)
    file = attachment(site, a)
    site.trash_content(a.id)
    site.purge_content(a.id)
    for item in (a, a1, note, file):
        assert site.content(item.id) is None
    assert site.children(home.id, PAGE) == []
    assert [c.id for c in site.space_contents("ENG")] == [home.id]
    with pytest.raises(NotFound, match=f"no content with id '{a.id}'"):
        site.purge_content(a.id)
    with pytest.raises(NotFound):
        site.children(a.id, PAGE)


def test_purge_comment_with_replies(site: Site) -> None:
    home = homepage(site, "ENG")
    top = comment(site, home)
    reply = comment(site, home, reply_to=top)
    kept = comment(site, home)
    site.trash_content(top.id)
    assert reply.status is ContentStatus.TRASHED
    site.purge_content(top.id)
    assert [c.id for c in site.children(home.id, COMMENT)] == [kept.id]


def test_purge_homepage_clears_space_homepage(site: Site) -> None:
    home = homepage(site, "ENG")
    site.trash_content(home.id)
    site.purge_content(home.id)
    space = site.space("ENG")
    assert space is not None
    assert space.homepage_id is None


# ----------------------------------------------------------------- edits


def test_edit_appends_version(site: Site) -> None:
    a = page(site, "A")
    site.set_clock(T0 + timedelta(hours=2))
    site.edit_content(a.id, body_storage="<p>new</p>", message="Rewrite", minor_edit=True)
    site.edit_content(a.id, title="A renamed")
    assert [v.number for v in a.versions] == [1, 2, 3]
    assert a.version.when == T0 + timedelta(hours=2)
    assert a.versions[1].message == "Rewrite"
    assert a.versions[1].minor_edit is True
    assert a.versions[0].body_storage == "<p>A</p>"
    assert a.body_storage == "<p>new</p>"
    assert a.versions[0].title == "A"
    assert a.title == "A renamed"
    assert a.last_modified == T0 + timedelta(hours=2)
    assert a.created == T0
    assert site.find_page("ENG", "A") is None
    assert site.find_page("ENG", "A renamed") is a
    assert [v.number for v in site.iter_versions(a.id)] == [3, 2, 1]


def test_edit_to_taken_title_fails(site: Site) -> None:
    page(site, "Taken")
    a = page(site, "A")
    with pytest.raises(InvalidOperation, match="already has a page titled 'Taken'"):
        site.edit_content(a.id, title="Taken")
    assert a.version.number == 1


def test_edit_unknown_content(site: Site) -> None:
    with pytest.raises(NotFound) as raised:
        site.edit_content("424242", body_storage="x")
    assert "424242" in str(raised.value)
    assert isinstance(raised.value, KeyError)


def test_text_follows_current_version(site: Site) -> None:
    a = site.create_content(
        type=PAGE,
        space_key="ENG",
        title="Code",
        body_storage=(
            "<p>Fish &amp; chips</p><ac:plain-text-body><![CDATA[x < y]]></ac:plain-text-body>"
        ),
    )
    assert a.text == "Fish & chips x < y"
    site.edit_content(a.id, body_storage="<h1>Caf&eacute;</h1>")
    assert a.text == "Café"


def test_publish_draft(site: Site) -> None:
    draft = site.create_content(
        type=PAGE, space_key="ENG", title="Plan", status=ContentStatus.DRAFT
    )
    assert site.find_page("ENG", "Plan") is None
    site.publish_draft(draft.id)
    assert draft.status is ContentStatus.CURRENT
    assert draft.version.number == 2
    assert site.find_page("ENG", "Plan") is draft


def test_archive_content_and_space(site: Site) -> None:
    a = page(site, "A")
    site.archive_content(a.id)
    assert a.status is ContentStatus.ARCHIVED
    with pytest.raises(InvalidOperation, match="only current content can be archived"):
        site.archive_content(a.id)
    site.unarchive_content(a.id)
    assert a.status is ContentStatus.CURRENT
    space = site.archive_space("OPS")
    assert space.status == "archived"
    assert homepage(site, "OPS").status is ContentStatus.CURRENT
    with pytest.raises(NotFound, match="no space with key 'NOPE'"):
        site.archive_space("NOPE")


def test_read_restrictions(site: Site) -> None:
    a = page(site, "A")
    site.set_read_restrictions(a.id, users=[site.current_user_id], groups=["admins"])
    assert a.read_restriction_users == [site.current_user_id]
    assert a.read_restriction_groups == ["admins"]
    assert a.is_restricted
    site.set_read_restrictions(a.id)
    assert not a.is_restricted


# ----------------------------------------------------------------- labels


def test_labels(site: Site) -> None:
    a = page(site, "A")
    b = page(site, "B")
    label = site.add_label(a.id, "Architecture")
    assert label.name == "architecture"
    assert label.prefix == "global"
    assert site.add_label(b.id, "architecture").id == label.id
    site.add_label(a.id, "architecture")
    assert a.label_names == ["architecture"]
    site.add_label(a.id, "mine", prefix="my")
    assert a.label_names == ["architecture", "mine"]
    site.remove_label(a.id, "architecture")
    assert a.label_names == ["mine"]
    with pytest.raises(NotFound, match="has no label 'architecture'"):
        site.remove_label(a.id, "architecture")
    with pytest.raises(InvalidOperation, match="invalid label name"):
        site.add_label(a.id, "two words")
    with pytest.raises(InvalidOperation, match="invalid label prefix"):
        site.add_label(a.id, "x", prefix="other")


def test_labels_on_create(site: Site) -> None:
    a = site.create_content(type=PAGE, space_key="ENG", title="A", labels=["kafka", "Kafka"])
    assert a.label_names == ["kafka"]
    assert site.label("kafka") is a.labels[0]


# ----------------------------------------------------------------- clock


def test_clock_frozen_and_running() -> None:
    fake = FakeTime(1_700_000_000.0)
    site = Site(time_source=fake)
    real = datetime.fromtimestamp(fake.value, UTC)
    assert site.now() == real
    fake.value += 10
    assert site.now() == real + timedelta(seconds=10)

    site.set_clock(T0, frozen=True)
    fake.value += 100
    assert site.now() == T0
    assert site.clock_frozen
    assert site.advance_clock(90) == T0 + timedelta(seconds=90)

    site.set_clock(frozen=False)
    fake.value += 5
    assert site.now() == T0 + timedelta(seconds=95)
    assert not site.clock_frozen

    site.set_clock(offset_seconds=-3600)
    assert site.now() == datetime.fromtimestamp(fake.value - 3600, UTC)
    site.advance_clock(60)
    assert site.now() == datetime.fromtimestamp(fake.value - 3540, UTC)


def test_clock_rejects_both_targets() -> None:
    site = Site()
    with pytest.raises(InvalidOperation, match="pass one of them"):
        site.set_clock(T0, offset_seconds=5)
    with pytest.raises(ValueError, match="naive datetime"):
        site.set_clock(datetime(2025, 1, 1))


def test_clock_milliseconds() -> None:
    site = Site()
    site.set_clock(datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), frozen=True)
    assert site.now().microsecond == 123000


def test_changes_follow_model_clock(site: Site) -> None:
    a = page(site, "A")
    assert a.changed_at == T0.timestamp()
    sequence = a.change_sequence
    site.set_clock(T0 + timedelta(minutes=3))
    site.add_label(a.id, "x")
    assert a.changed_at == (T0 + timedelta(minutes=3)).timestamp()
    assert a.change_sequence > sequence
    past = site.create_content(
        type=PAGE, space_key="ENG", title="Old", created=T0 - timedelta(days=30)
    )
    assert past.changed_at == (T0 - timedelta(days=30)).timestamp()
    assert past.created == T0 - timedelta(days=30)


def test_edit_before_previous_version_fails(site: Site) -> None:
    a = page(site, "A")
    with pytest.raises(InvalidOperation, match="versions are in time order"):
        site.edit_content(a.id, when=T0 - timedelta(seconds=1))


# ----------------------------------------------------------------- counts


def test_counts(site: Site) -> None:
    home = homepage(site, "ENG")
    a = page(site, "A", home)
    comment(site, a)
    site.create_content(type=BLOGPOST, space_key="ENG", title="Post")
    site.trash_content(a.id)
    site.archive_space("OPS")
    counts = site.counts()
    assert counts["page"] == 2
    assert counts["page:trashed"] == 1
    assert counts["comment"] == 0
    assert counts["comment:trashed"] == 1
    assert counts["blogpost"] == 1
    assert counts["attachment"] == 0
    assert counts["space"] == 1
    assert counts["space:archived"] == 1
    assert counts["user"] == 1


def test_empty_site_is_truthy() -> None:
    site = Site()
    assert len(site) == 0
    assert site
