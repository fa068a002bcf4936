"""Helpers for Confluence storage format: building bodies, extracting text and links.

Storage format is the XHTML dialect Confluence stores page bodies in: HTML elements
plus ``ac:`` elements (macros, links, layouts) and ``ri:`` resource identifiers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def extract_text(body: str) -> str:
    """Return the plain text of a storage-format body, for CQL ``text ~`` matching.

    Tags are stripped, entities unescaped, CDATA sections (code macro bodies) kept and
    whitespace collapsed. This is a regular-expression strip, not a parser, so text
    inside attribute values (for example link titles) is not part of the result.
    """
    if "<![CDATA[" not in body:
        return " ".join(_markup_text(body).split())
    pieces: list[str] = []
    position = 0
    for match in _CDATA.finditer(body):
        pieces.append(_markup_text(body[position : match.start()]))
        pieces.append(match.group(1))
        position = match.end()
    pieces.append(_markup_text(body[position:]))
    # Joined without separators: tags already became spaces, and a CDATA section split
    # around "]]>" must read as one text.
    return " ".join("".join(pieces).split())


def _markup_text(markup: str) -> str:
    text = _TAG.sub(" ", markup)
    # html.unescape is slow per call even without entities, and most text has none.
    return html.unescape(text) if "&" in text else text


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


def cdata(text: str) -> str:
    """Wrap text in a CDATA section; a ``]]>`` inside is split over two sections."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def heading(level: int, text: str) -> str:
    if not 1 <= level <= 6:
        raise ValueError(f"heading level {level} is outside 1..6")
    return f"<h{level}>{escape(text)}</h{level}>"


def paragraph(inner_html: str) -> str:
    """Return a ``<p>`` element around markup that is already escaped."""
    return f"<p>{inner_html}</p>"


def text_paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def bullet_list(items: Iterable[str], *, ordered: bool = False) -> str:
    """Return a list of already escaped item markup."""
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{item}</li>" for item in items) + f"</{tag}>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return a table with a header row. Cells are plain text and get escaped."""
    head = "".join(f"<th><p>{escape(cell)}</p></th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td><p>{escape(cell)}</p></td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tbody><tr>{head}</tr>{body}</tbody></table>"


def code_macro(code: str, *, language: str | None = None, macro_id: str = "") -> str:
    """Return a ``code`` macro with the code verbatim in a CDATA section."""
    parameters = (
        f'<ac:parameter ac:name="language">{escape(language)}</ac:parameter>' if language else ""
    )
    return (
        f'<ac:structured-macro ac:name="code" ac:schema-version="1"{_macro_id(macro_id)}>'
        f"{parameters}<ac:plain-text-body>{cdata(code)}</ac:plain-text-body>"
        "</ac:structured-macro>"
    )


def panel_macro(inner_html: str, *, kind: str = "info", macro_id: str = "") -> str:
    """Return an ``info``, ``note``, ``tip`` or ``warning`` macro around escaped markup."""
    if kind not in ("info", "note", "tip", "warning"):
        raise ValueError(f"unknown panel macro {kind!r}: use info, note, tip or warning")
    return (
        f'<ac:structured-macro ac:name="{kind}" ac:schema-version="1"{_macro_id(macro_id)}>'
        f"<ac:rich-text-body>{inner_html}</ac:rich-text-body></ac:structured-macro>"
    )


def _macro_id(macro_id: str) -> str:
    return f' ac:macro-id="{escape(macro_id)}"' if macro_id else ""


def _link_body(text: str | None) -> str:
    if text is None:
        return ""
    return f"<ac:plain-text-link-body>{cdata(text)}</ac:plain-text-link-body>"


def page_link(space_key: str | None, title: str, text: str | None = None) -> str:
    """Return a link to a page by space key and title (no key: the linking page's space)."""
    space = f' ri:space-key="{escape(space_key)}"' if space_key else ""
    return (
        f'<ac:link><ri:page{space} ri:content-title="{escape(title)}" />'
        f"{_link_body(text)}</ac:link>"
    )


def blog_post_link(
    space_key: str | None, title: str, posting_day: date, text: str | None = None
) -> str:
    """Return a link to a blog post by space key, title and posting day (``yyyy/MM/dd``)."""
    space = f' ri:space-key="{escape(space_key)}"' if space_key else ""
    day = posting_day.strftime("%Y/%m/%d")
    return (
        f'<ac:link><ri:blog-post{space} ri:content-title="{escape(title)}" '
        f'ri:posting-day="{day}" />{_link_body(text)}</ac:link>'
    )


def user_mention(account_id: str) -> str:
    return f'<ac:link><ri:user ri:account-id="{escape(account_id)}" /></ac:link>'


def attachment_link(filename: str, text: str | None = None) -> str:
    """Return a link to an attachment of the page that contains it."""
    return (
        f'<ac:link><ri:attachment ri:filename="{escape(filename)}" />{_link_body(text)}</ac:link>'
    )


def inline_comment_marker(marker_ref: str, inner_html: str) -> str:
    """Text that an inline comment is anchored to."""
    return (
        f'<ac:inline-comment-marker ac:ref="{escape(marker_ref)}">{inner_html}'
        "</ac:inline-comment-marker>"
    )


def parse_posting_day(value: str) -> date:
    """Parse the ``ri:posting-day`` value of a blog-post link (``yyyy/MM/dd``)."""
    year, month, day = value.split("/")
    return date(int(year), int(month), int(day))
