"""Extraction of page and blog post links from Confluence storage-format bodies.

Storage format is XHTML with ``ac:`` elements (links, macros) and ``ri:`` resource
identifiers. The links found here are:

- ``<ri:page ri:space-key="K" ri:content-title="T"/>``: a page by space key and title; a
  missing space key means the space of the content that contains the link;
- ``<ri:blog-post ri:space-key="K" ri:content-title="T" ri:posting-day="yyyy/MM/dd"/>``;
- ``<ri:page ri:content-id="123"/>`` and ``<ri:content-entity ri:content-id="123"/>``: a
  content item by id;
- ``<a href="...">`` to a page or blog post of the same site, by the id in its URL
  (``/spaces/K/pages/123/...``, ``/spaces/K/blog/yyyy/MM/dd/123/...`` or
  ``viewpage.action?pageId=123``).

Resource identifiers count wherever they occur, in ``ac:link`` elements and in macro
parameters (include and excerpt-include macros name pages the same way), except inside
``ri:attachment``, where an ``ri:page`` names the page that contains the attachment. Text in
CDATA sections (code macro bodies) is not parsed, so an example link in a code block is
not a link.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

LinkKind = Literal["page", "blogpost", "content"]

# Confluence Cloud page URLs: /wiki/spaces/KEY/pages/123/Title (also /pages/edit-v2/123).
_PAGE_PATH = re.compile(r"/spaces/[^/]+/pages/(?:[a-z-]+(?:-v2)?/)?(\d+)(?:/|$)")
# Blog post URLs: /wiki/spaces/KEY/blog/2023/03/06/1343496/Title (Cloud) or the same
# without the id (Data Center, where the title identifies the post).
_BLOG_PATH = re.compile(r"/spaces/[^/]+/blog/\d{4}/\d{2}/\d{2}/(\d+)(?:/|$)")
# Data Center and older Cloud page URLs carry the id as a query parameter.
_VIEWPAGE_PATH = re.compile(r"/pages/(?:viewpage|editpage)\.action$")


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """A page or blog post named by a link in a body.

    A link by title has ``space_key`` and ``title`` set (the space key filled in with the
    linking content's space when the link omits it) and ``kind`` ``page`` or ``blogpost``.
    A link by id has ``content_id`` set. Its ``kind`` is ``content`` when the link does
    not tell whether the target is a page or a blog post.
    """

    kind: LinkKind
    space_key: str | None = None
    title: str | None = None
    posting_day: str | None = None
    content_id: str | None = None

    @property
    def by_id(self) -> bool:
        return self.content_id is not None


class _StorageLinkParser(HTMLParser):
    def __init__(self, space_key: str, site_host: str | None) -> None:
        # Character references in attribute values are decoded by HTMLParser either way;
        # convert_charrefs only affects text, which is not needed here.
        super().__init__(convert_charrefs=True)
        self._space_key = space_key
        self._site_host = site_host.lower() if site_host else None
        self._attachment_depth = 0
        self.targets: list[LinkTarget] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs), self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs), self_closing=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "ri:attachment" and self._attachment_depth > 0:
            self._attachment_depth -= 1

    def _element(self, tag: str, attrs: dict[str, str | None], *, self_closing: bool) -> None:
        if tag == "ri:attachment":
            if not self_closing:
                self._attachment_depth += 1
            return
        if self._attachment_depth:
            return
        if tag == "ri:page":
            self._resource("page", attrs)
        elif tag == "ri:blog-post":
            self._resource("blogpost", attrs)
        elif tag == "ri:content-entity":
            content_id = _non_empty(attrs.get("ri:content-id"))
            if content_id is not None:
                self.targets.append(LinkTarget("content", content_id=content_id))
        elif tag == "a":
            href = _non_empty(attrs.get("href"))
            if href is not None:
                target = self._href_target(href)
                if target is not None:
                    self.targets.append(target)

    def _resource(self, kind: Literal["page", "blogpost"], attrs: dict[str, str | None]) -> None:
        content_id = _non_empty(attrs.get("ri:content-id"))
        if content_id is not None:
            self.targets.append(LinkTarget(kind, content_id=content_id))
            return
        title = _non_empty(attrs.get("ri:content-title"))
        if title is None:
            # An ri:page without a title or id names the containing page itself (for
            # example inside an attachment link); it is no link to another page.
            return
        space_key = _non_empty(attrs.get("ri:space-key")) or self._space_key
        posting_day = _non_empty(attrs.get("ri:posting-day")) if kind == "blogpost" else None
        self.targets.append(LinkTarget(kind, space_key, title, posting_day))

    def _href_target(self, href: str) -> LinkTarget | None:
        try:
            parts = urlsplit(href)
        except ValueError:
            return None
        if parts.netloc:
            if self._site_host is None or (parts.hostname or "").lower() != self._site_host:
                return None
        elif parts.scheme or not parts.path.startswith("/"):
            # mailto:, javascript: and paths relative to the page are not content links.
            return None
        page = _PAGE_PATH.search(parts.path)
        if page is not None:
            return LinkTarget("page", content_id=page.group(1))
        blog = _BLOG_PATH.search(parts.path)
        if blog is not None:
            return LinkTarget("blogpost", content_id=blog.group(1))
        if _VIEWPAGE_PATH.search(parts.path):
            page_ids = parse_qs(parts.query).get("pageId", [])
            if page_ids and page_ids[0].isdigit():
                return LinkTarget("content", content_id=page_ids[0])
        return None


def _non_empty(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def site_host_of(web_url: str | None) -> str | None:
    """Return the host name of a content item's web URL, or None without one."""
    if not web_url:
        return None
    try:
        return urlsplit(web_url).hostname
    except ValueError:
        return None


def extract_links(body: str, space_key: str, site_host: str | None = None) -> list[LinkTarget]:
    """Return the distinct content links of a storage-format body, in document order.

    ``space_key`` is the space of the content that contains the body; it fills in links
    without ``ri:space-key``. ``site_host`` is the host of the site, so that absolute
    ``<a href>`` URLs to it count; without it only site-relative URLs do.
    """
    parser = _StorageLinkParser(space_key, site_host)
    parser.feed(body)
    parser.close()
    seen: set[LinkTarget] = set()
    targets: list[LinkTarget] = []
    for target in parser.targets:
        if target not in seen:
            seen.add(target)
            targets.append(target)
    return targets
