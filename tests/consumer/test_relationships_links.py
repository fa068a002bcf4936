"""Tests of link extraction from storage-format bodies."""

from __future__ import annotations

from consumer.relationships.links import LinkTarget, extract_links, site_host_of

SITE = "example.atlassian.net"


def test_page_link_without_space_key_uses_own_space() -> None:
    body = '<p><ac:link><ri:page ri:content-title="Getting started" /></ac:link></p>'

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", "Getting started")]


def test_page_link_with_space_key() -> None:
    body = (
        '<ac:link><ri:page ri:space-key="OPS" ri:content-title="Runbook" />'
        "<ac:plain-text-link-body><![CDATA[the runbook]]></ac:plain-text-link-body></ac:link>"
    )

    assert extract_links(body, "DOC") == [LinkTarget("page", "OPS", "Runbook")]


def test_blog_post_link_keeps_posting_day() -> None:
    body = (
        '<ac:link><ri:blog-post ri:content-title="Release 1.0" '
        'ri:posting-day="2024/05/01" /></ac:link>'
    )

    assert extract_links(body, "DOC") == [
        LinkTarget("blogpost", "DOC", "Release 1.0", posting_day="2024/05/01")
    ]


def test_content_entity_and_page_id_links() -> None:
    body = (
        '<ac:link><ri:content-entity ri:content-id="123" /></ac:link>'
        '<ac:link><ri:page ri:content-id="456" ri:content-title="Ignored" /></ac:link>'
    )

    assert extract_links(body, "DOC") == [
        LinkTarget("content", content_id="123"),
        LinkTarget("page", content_id="456"),
    ]


def test_entities_in_titles_are_decoded() -> None:
    body = '<ac:link><ri:page ri:content-title="Q&amp;A &quot;draft&quot;" /></ac:link>'

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", 'Q&A "draft"')]


def test_same_site_hrefs_by_id() -> None:
    body = (
        f'<a href="https://{SITE}/wiki/spaces/DOC/pages/2/Guide">guide</a>'
        '<a href="/wiki/spaces/DOC/pages/edit-v2/3">edit</a>'
        '<a href="/wiki/spaces/DOC/blog/2024/05/01/10/Release+1.0">post</a>'
        '<a href="/confluence/pages/viewpage.action?pageId=7">old style</a>'
    )

    assert extract_links(body, "DOC", SITE) == [
        LinkTarget("page", content_id="2"),
        LinkTarget("page", content_id="3"),
        LinkTarget("blogpost", content_id="10"),
        LinkTarget("content", content_id="7"),
    ]


def test_other_hrefs_are_not_links() -> None:
    body = (
        '<a href="https://other.example.org/wiki/spaces/DOC/pages/2/Guide">other site</a>'
        '<a href="mailto:user1@example.com">mail</a>'
        '<a href="#section">anchor</a>'
        '<a href="/wiki/spaces/DOC/overview">space overview</a>'
        '<a href="relative/pages/3">relative</a>'
    )

    assert extract_links(body, "DOC", SITE) == []


def test_absolute_href_needs_site_host() -> None:
    body = f'<a href="https://{SITE}/wiki/spaces/DOC/pages/2/Guide">guide</a>'

    assert extract_links(body, "DOC") == []


def test_code_block_links_are_ignored() -> None:
    body = (
        '<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA['
        '<ac:link><ri:page ri:content-title="Not a link" /></ac:link>'
        "]]></ac:plain-text-body></ac:structured-macro>"
        '<ac:link><ri:page ri:content-title="A link" /></ac:link>'
    )

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", "A link")]


def test_attachment_page_is_not_a_link() -> None:
    body = (
        '<ac:link><ri:attachment ri:filename="diagram.png">'
        '<ri:page ri:content-title="Other page" /></ri:attachment></ac:link>'
        '<ac:image><ri:attachment ri:filename="logo.png" /></ac:image>'
        '<ac:link><ri:page ri:content-title="After" /></ac:link>'
    )

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", "After")]


def test_include_macro_page_counts() -> None:
    body = (
        '<ac:structured-macro ac:name="include"><ac:parameter ac:name="">'
        '<ac:link><ri:page ri:space-key="OPS" ri:content-title="Snippet" /></ac:link>'
        "</ac:parameter></ac:structured-macro>"
    )

    assert extract_links(body, "DOC") == [LinkTarget("page", "OPS", "Snippet")]


def test_repeated_links_are_listed_once() -> None:
    link = '<ac:link><ri:page ri:content-title="FAQ" /></ac:link>'
    body = (
        f"<p>{link}</p><p>{link}</p>"
        + '<ac:link><ri:page ri:space-key="DOC" ri:content-title="FAQ" /></ac:link>'
    )

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", "FAQ")]


def test_user_mentions_and_empty_titles_are_skipped() -> None:
    body = (
        '<ac:link><ri:user ri:account-id="000000000000000000000001" /></ac:link>'
        '<ac:link><ri:page ri:content-title="  " /></ac:link>'
    )

    assert extract_links(body, "DOC") == []


def test_malformed_markup_still_parses() -> None:
    body = '<p>unclosed <b>bold <ac:link><ri:page ri:content-title="Kept" /></ac:link>&nbsp;'

    assert extract_links(body, "DOC") == [LinkTarget("page", "DOC", "Kept")]


def test_site_host_of_web_url() -> None:
    assert site_host_of(f"https://{SITE}/wiki/spaces/DOC/pages/2") == SITE
    assert site_host_of(None) is None
    assert site_host_of("") is None
