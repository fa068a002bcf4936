"""Helpers for Confluence storage format: building bodies, extracting text and links.

Storage format is the XHTML dialect Confluence stores page bodies in: HTML elements
plus ``ac:`` elements (macros, links, layouts) and ``ri:`` resource identifiers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def extract_text(body: str) -> str:
    """Return the plain text of a storage-format body, for CQL ``text ~`` matching.

    Tags are stripped, entities unescaped, CDATA sections (code macro bodies) kept and
    whitespace collapsed. This is a regular-expression strip, not a parser, so text
    inside attribute values (for example link titles) is not part of the result.
    """
    pieces: list[str] = []
    position = 0
    for match in _CDATA.finditer(body):
        pieces.append(html.unescape(_TAG.sub(" ", body[position : match.start()])))
        pieces.append(match.group(1))
        position = match.end()
    pieces.append(html.unescape(_TAG.sub(" ", body[position:])))
    return _SPACE.sub(" ", " ".join(pieces)).strip()


@dataclass(frozen=True, slots=True)
class Link:
    """A link found in a storage-format body.

    ``kind`` is ``"page"``, ``"blogpost"``, ``"user"`` or ``"attachment"``. For pages and
    blog posts ``space_key`` is ``None`` when the link omits ``ri:space-key``, which in
    Confluence means the space of the page that contains the link.
    """

    kind: str
    space_key: str | None = None
    title: str | None = None
    posting_day: str | None = None
    account_id: str | None = None
    filename: str | None = None


_RI_ELEMENT = re.compile(r"<ri:(page|blog-post|user|attachment)\b([^>]*?)/?>")
_ATTRIBUTE = re.compile(r'([\w:-]+)="([^"]*)"')


def _attributes(text: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(text)}


def find_links(body: str) -> list[Link]:
    """List the resource links (``ri:page``, ``ri:blog-post``, ``ri:user``, ``ri:attachment``)
    of a body in document order."""
    links: list[Link] = []
    for element, attribute_text in _RI_ELEMENT.findall(body):
        attributes = _attributes(attribute_text)
        if element == "page":
            links.append(
                Link(
                    "page",
                    space_key=attributes.get("ri:space-key"),
                    title=attributes.get("ri:content-title"),
                )
            )
        elif element == "blog-post":
            links.append(
                Link(
                    "blogpost",
                    space_key=attributes.get("ri:space-key"),
                    title=attributes.get("ri:content-title"),
                    posting_day=attributes.get("ri:posting-day"),
                )
            )
        elif element == "user":
            links.append(Link("user", account_id=attributes.get("ri:account-id")))
        else:
            links.append(Link("attachment", filename=attributes.get("ri:filename")))
    return links


def escape(text: str) -> str:
    """Escape text for an element body or a double-quoted attribute value."""
    return html.escape(text, quote=True)


def join(parts: Iterable[str]) -> str:
    return "".join(parts)
