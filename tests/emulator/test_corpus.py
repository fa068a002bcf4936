"""Tests of the HTML documentation importer, on a small tree and on python3.11-doc."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from emulator.corpus import DEFAULT_CORPUS, CorpusError, import_corpus
from emulator.model import Content, ContentType, Site
from emulator.storage import find_links, parse_posting_day

PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8" /><title>{title} &#8212; Demo 1.0 documentation</title>
<script>var navigation = "script text";</script>
<style>.x {{ color: red }}</style></head>
<body>
<div class="related" role="navigation"><a href="{root}genindex.html">index</a> related nav</div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="top">
<h1>{title}<a class="headerlink" href="#top" title="Permalink">¶</a></h1>
{body}
</section>
</div></div></div>
<div class="sphinxsidebar" role="navigation"><p>Sidebar chrome</p></div>
</div>
<div class="footer">Footer chrome</div>
</body></html>
"""


def write(root: Path, relative: str, title: str, body: str = "", *, compress: bool = False) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    depth = relative.count("/")
    html = PAGE_TEMPLATE.format(title=title, body=body, root="../" * depth)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(html.encode()))
    else:
        path.write_text(html, encoding="utf-8")


def toctree(*targets: str) -> str:
    items = "".join(
        f'<li class="toctree-l1"><a class="reference internal" href="{target}">{target}</a>'
        f'<ul><li class="toctree-l2"><a class="reference internal" href="{target}#part">'
        "Part</a></li></ul></li>"
        for target in targets
    )
    return f'<div class="toctree-wrapper compound"><ul>{items}</ul></div>'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "html"
    write(root, "index.html", "Demo documentation", "<p>Welcome.</p>")
    write(root, "about.html", "About", "<p>About these documents.</p>")
    write(root, "genindex.html", "Index", "<p>generated index</p>")
    write(root, "_static/theme.html", "Theme", "<p>static</p>")
    write(
        root,
        "guide/index.html",
        "User Guide",
        "<p>The guide.</p>" + toctree("intro.html", "advanced.html"),
    )
    write(
        root,
        "guide/intro.html",
        "Introduction",
        '<section id="section"><h2>Start<a class="headerlink" href="#section">¶</a></h2>'
        '<p>Read <a class="reference internal" href="advanced.html#tips">the tips</a> and '
        '<a href="https://example.org/x?a=1&amp;b=2">an external page</a>.</p>'
        '<img alt="diagram" src="../_images/diagram.png" />'
        "</section>",
    )
    write(
        root,
        "guide/advanced.html",
        "Advanced use",
        "<p>Deeper.</p>" + toctree("deep.html"),
    )
    write(root, "guide/deep.html", "Deep dive", "<p>The deepest page.</p>")
    write(root, "guide/orphan.html", "Introduction", "<p>Same title as another page.</p>")
    write(
        root,
        "api/index.html",
        "API reference",
        "<dl><dt>func(x)</dt><dd><p>Return <code>x</code> &amp; more.</p></dd></dl>"
        "<ul><li>one</li><li>two</li></ul>"
        "<table><thead><tr><th>Name</th></tr></thead><tbody><tr><td>x</td></tr></tbody></table>"
        '<div class="highlight-python3 notranslate"><div class="highlight"><pre>'
        '<span class="k">if</span> a &lt; b:\n    print(&quot;]]&gt;&quot;)\n</pre></div></div>'
        '<p>See <a class="reference internal" href="../guide/intro.html#section">'
        "<span>the <em>introduction</em></span></a>, "
        '<a class="reference internal" href="../whatsnew/1.0.html">release 1.0</a>, '
        '<a class="reference internal" href="../whatsnew/changelog.html#demo-1-1-final">'
        "1.1 changes</a> and "
        '<a class="reference internal" href="../genindex.html">the index</a>.</p>',
    )
    write(root, "whatsnew/index.html", "What's new", toctree("1.0.html", "2.0.html"))
    write(
        root,
        "whatsnew/1.0.html",
        "What's New In Demo 1.0",
        "<p>Demo 1.0 was released on March 3, 2021.</p>",
    )
    write(root, "whatsnew/2.0.html", "What's New In Demo 2.0", "<p>No date here.</p>")
    write(
        root,
        "whatsnew/changelog.html",
        "Changelog",
        '<section id="demo-1-1-final"><h2>Demo 1.1 final</h2>'
        "<p><em>Release date: 2022-01-02</em></p><p>Fixed things.</p></section>"
        '<section id="demo-1-2-final"><h2>Demo 1.2 final</h2>'
        "<p><em>Release date: 2022-06-30</em></p><p>More fixes.</p></section>",
        compress=True,
    )
    images = root / "_images"
    images.mkdir()
    (images / "diagram.png").write_bytes(b"\x89PNG" + b"\x00" * 96)
    return root


def pages_by_title(site: Site, space_key: str) -> dict[str, Content]:
    return {c.title: c for c in site.space_contents(space_key, ContentType.PAGE)}


def only(site: Site, space_key: str, title: str) -> Content:
    found = pages_by_title(site, space_key).get(title)
    assert found is not None, f"no page {title!r} in {space_key}"
    return found


# ----------------------------------------------------------------- small tree


def test_spaces_from_directories(tree: Path) -> None:
    site = import_corpus(tree)
    assert list(site.spaces) == ["DOCS", "API", "GUIDE", "WHATSNEW"]
    docs = site.space("DOCS")
    guide = site.space("GUIDE")
    assert docs is not None and guide is not None
    assert docs.name == "Demo documentation"
    assert guide.name == "User Guide"
    assert guide.homepage_id == only(site, "GUIDE", "User Guide").id
    assert set(pages_by_title(site, "DOCS")) == {"Demo documentation", "About"}


def test_hierarchy_from_toctrees(tree: Path) -> None:
    site = import_corpus(tree)
    home = only(site, "GUIDE", "User Guide")
    advanced = only(site, "GUIDE", "Advanced use")
    deep = only(site, "GUIDE", "Deep dive")
    assert [c.title for c in site.children(home.id, ContentType.PAGE)] == [
        "Introduction",
        "Advanced use",
        "Introduction (2)",
    ]
    assert deep.parent_id == advanced.id
    assert deep.ancestor_ids == [home.id, advanced.id]


def test_duplicate_titles_get_suffix(tree: Path) -> None:
    site = import_corpus(tree)
    orphan = only(site, "GUIDE", "Introduction (2)")
    assert "Same title as another page." in orphan.text


def test_chrome_dropped(tree: Path) -> None:
    site = import_corpus(tree)
    for content in site.contents():
        body = content.body_storage
        for chrome in ("Sidebar chrome", "Footer chrome", "script text", "related nav", "¶"):
            assert chrome not in body, (content.title, chrome)
        assert "<script" not in body
        assert "<div" not in body
        assert "headerlink" not in body


def test_body_converted_to_storage(tree: Path) -> None:
    site = import_corpus(tree)
    api = only(site, "API", "API reference")
    body = api.body_storage
    assert body.startswith("<h1>API reference</h1>")
    assert "<p><strong>func(x)</strong></p>" in body
    assert "<p>Return <code>x</code> &amp; more.</p>" in body
    assert "<ul><li>one</li><li>two</li></ul>" in body
    assert "<th>Name</th>" in body
    assert '<ac:structured-macro ac:name="code"' in body
    assert '<ac:parameter ac:name="language">python</ac:parameter>' in body
    assert 'if a < b:\n    print("]]]]><![CDATA[>")' in body
    wrapper = '<root xmlns:ac="urn:ac" xmlns:ri="urn:ri">{}</root>'
    for content in site.contents():
        ElementTree.fromstring(wrapper.format(content.body_storage))


def test_links_rewritten(tree: Path) -> None:
    site = import_corpus(tree)
    api = only(site, "API", "API reference")
    links = find_links(api.body_storage)
    pages = [(link.space_key, link.title) for link in links if link.kind == "page"]
    assert pages == [("GUIDE", "Introduction")]
    blogs = [
        (link.space_key, link.title, link.posting_day) for link in links if link.kind == "blogpost"
    ]
    assert blogs == [
        ("WHATSNEW", "What's New In Demo 1.0", "2021/03/03"),
        ("WHATSNEW", "Demo 1.1 final", "2022/01/02"),
    ]
    assert "the introduction" in api.body_storage
    assert "the index" in api.text  # a link to a skipped document keeps its text
    assert "genindex" not in api.body_storage
    intro = only(site, "GUIDE", "Introduction")
    intro_links = find_links(intro.body_storage)
    assert [(link.kind, link.title) for link in intro_links] == [
        ("page", "Advanced use"),
        ("attachment", None),
    ]
    assert '<a href="https://example.org/x?a=1&amp;b=2">an external page</a>' in intro.body_storage


def test_release_notes_become_blog_posts(tree: Path) -> None:
    site = import_corpus(tree)
    blogs = {c.title: c for c in site.space_contents("WHATSNEW", ContentType.BLOGPOST)}
    assert set(blogs) == {
        "What's New In Demo 1.0",
        "What's New In Demo 2.0",
        "Demo 1.1 final",
        "Demo 1.2 final",
    }
    assert blogs["What's New In Demo 1.0"].posting_day == date(2021, 3, 3)
    assert blogs["Demo 1.1 final"].posting_day == date(2022, 1, 2)
    assert blogs["Demo 1.2 final"].posting_day == date(2022, 6, 30)
    assert "Fixed things." in blogs["Demo 1.1 final"].text
    assert "More fixes." not in blogs["Demo 1.1 final"].text
    derived = blogs["What's New In Demo 2.0"].posting_day
    assert derived is not None
    assert import_corpus(tree).find_blog_post("WHATSNEW", "What's New In Demo 2.0", derived)
    assert blogs["Demo 1.1 final"].label_names == ["changelog"]
    assert blogs["What's New In Demo 1.0"].label_names == ["release-notes"]
    assert only(site, "WHATSNEW", "What's new").parent_id is None


def test_images_become_attachments(tree: Path) -> None:
    site = import_corpus(tree)
    intro = only(site, "GUIDE", "Introduction")
    attachments = site.children(intro.id, ContentType.ATTACHMENT)
    assert [(a.title, a.media_type, a.file_size) for a in attachments] == [
        ("diagram.png", "image/png", 100)
    ]
    assert '<ri:attachment ri:filename="diagram.png" />' in intro.body_storage


def test_import_is_deterministic(tree: Path) -> None:
    def snapshot(site: Site) -> list[tuple[str, str, str, str | None, str]]:
        return [
            (c.id, c.title, c.space_key, c.parent_id, c.created.isoformat())
            for c in site.contents()
        ]

    assert snapshot(import_corpus(tree, seed=4)) == snapshot(import_corpus(tree, seed=4))
    assert snapshot(import_corpus(tree, seed=4)) != snapshot(import_corpus(tree, seed=5))


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusError, match=r"python3\.11-doc") as raised:
        import_corpus(missing)
    assert str(missing) in str(raised.value)
    assert "--corpus PATH" in str(raised.value)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not html")
    with pytest.raises(CorpusError, match=r"contains no \.html files") as raised:
        import_corpus(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_site_options(tree: Path) -> None:
    site = import_corpus(tree, time_zone="Europe/Paris", site_name="demo")
    assert site.time_zone == "Europe/Paris"
    assert site.name == "demo"
    assert not site.clock_frozen


# ----------------------------------------------------------------- real corpus


@pytest.fixture(scope="module")
def python_docs() -> Site:
    if not (DEFAULT_CORPUS / "index.html").is_file():
        pytest.skip(f"{DEFAULT_CORPUS} is missing; install it with apt-get install python3.11-doc")
    return import_corpus(DEFAULT_CORPUS)


def test_python_docs_spaces(python_docs: Site) -> None:
    for key in ("DOCS", "LIBRARY", "TUTORIAL", "REFERENCE", "HOWTO", "CAPI", "WHATSNEW"):
        space = python_docs.space(key)
        assert space is not None, key
        assert space.homepage_id is not None
    library = python_docs.space("LIBRARY")
    assert library is not None
    assert library.name == "The Python Standard Library"


def test_python_docs_sizes(python_docs: Site) -> None:
    counts = python_docs.counts()
    assert counts["page"] > 400
    assert counts["blogpost"] > 50
    library_pages = python_docs.space_contents("LIBRARY", ContentType.PAGE)
    assert len(library_pages) > 250


def test_python_docs_hierarchy(python_docs: Site) -> None:
    os_page = python_docs.find_page("LIBRARY", "os — Miscellaneous operating system interfaces")
    assert os_page is not None
    assert [a.title for a in python_docs.ancestors(os_page.id)] == [
        "The Python Standard Library",
        "Generic Operating System Services",
    ]
    depths = Counter(len(c.ancestor_ids) for c in python_docs.contents())
    assert depths[2] > 100


def test_python_docs_links_resolve(python_docs: Site) -> None:
    kinds: Counter[str] = Counter()
    for content in python_docs.contents():
        for link in find_links(content.body_storage):
            if link.kind == "page":
                assert link.space_key is not None and link.title is not None
                assert python_docs.find_page(link.space_key, link.title), link
            elif link.kind == "blogpost":
                assert link.space_key, link
                assert link.title, link
                assert link.posting_day, link
                day = parse_posting_day(link.posting_day)
                assert python_docs.find_blog_post(link.space_key, link.title, day), link
            kinds[link.kind] += 1
    assert kinds["page"] > 10_000
    assert kinds["blogpost"] > 100


def test_python_docs_release_dates(python_docs: Site) -> None:
    blogs = {c.title: c for c in python_docs.space_contents("WHATSNEW", ContentType.BLOGPOST)}
    # Sphinx typesets the apostrophe as U+2019.
    assert blogs["What\u2019s New In Python 3.10"].posting_day == date(2021, 10, 4)
    assert blogs["Python 3.11.0 final"].posting_day == date(2022, 10, 24)


def test_python_docs_bodies_well_formed(python_docs: Site) -> None:
    wrapper = '<root xmlns:ac="urn:ac" xmlns:ri="urn:ri">{}</root>'
    for content in python_docs.contents():
        root = ElementTree.fromstring(wrapper.format(content.body_storage))
        # Code samples may mention <script> as text; no element may be one.
        assert root.find(".//script") is None
