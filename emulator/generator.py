"""Seeded generator of emulated Confluence sites, from a handful of pages to 100,000.

The same seed and options give the same site: the same ids, titles, bodies, times and
structure. All randomness comes from one ``random.Random(seed)`` and every content time
lies before a fixed base time (2024-01-01 UTC by default), never the wall clock. Only the
model clock of the returned site runs from real time.

What a generated site contains, for crawler tests to rely on:

- global spaces (the last one archived when there are three or more) and personal
  spaces, each with a homepage;
- pages in trees under the homepages, some extra root pages, and one chain of depth 12
  in the first space when there are enough pages;
- blog posts with posting days, footer and inline comments (some replies), attachment
  metadata, labels, read restrictions, drafts, trashed and archived pages;
- storage bodies with headings, paragraphs, lists, tables, code and info macros, links
  to pages (same space, other spaces, blog posts, and dangling titles that start with
  :data:`DANGLING_TITLE_PREFIX`), user mentions, and unicode text;
- titles with accents, CJK, emoji, right-to-left script, and characters that need
  escaping in CQL and HTML (quotes, ampersands, backslashes, angle brackets);
- a small fraction of large pages (hundreds of KB);
- pages whose child lists span several result pages (:data:`CROWDED_PAGES`): 230
  attachments, 60 comments, 205 labels.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from emulator import storage
from emulator.model import ContentStatus, ContentType, Site, User

logger = logging.getLogger(__name__)

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
# Generated history spans this many days before the base time.
HISTORY_DAYS = 3 * 365
DANGLING_TITLE_PREFIX = "Missing page"
DEEP_CHAIN_LENGTH = 12

# Titles that need escaping in CQL (quotes, backslashes) or HTML (ampersands, brackets).
SPECIAL_TITLES = (
    'Q&A: "Release" notes',
    "Tom's guide to C++ & Rust",
    "Paths like C:\\temp\\new",
    "50% <faster> builds",
    "Quote \"inside\" & 'single'",
)
# Title, attachments, comments and labels of pages with long child lists.
CROWDED_PAGES = (
    ("Attachment gallery", 230, 0, 0),
    ("Busy discussion", 0, 60, 0),
    ("Label catalogue", 0, 0, 205),
)
UNICODE_TITLES = (
    "Café résumé naïve",
    "Über Größe und Maß",
    "東京の設計ドキュメント",
    "数据管道概述",
    "🚀 Launch checklist ✅",
    "מדריך התקנה",
    "دليل المستخدم",
    "Ελληνικά σημειώσεις",
    "Привет мир",
    "한국어 문서",
)

_SPACE_NAMES = (
    "Engineering", "Operations", "Documentation", "Marketing", "Sales", "Support",
    "Research", "Design", "Finance", "Legal", "Security", "Platform", "Data", "Mobile",
    "Infrastructure", "Quality", "Product", "People", "Growth", "Analytics", "Billing",
    "Compliance", "Architecture", "Releases", "Onboarding", "Partners", "Identity",
    "Search", "Payments", "Frontend", "Backend", "Networking", "Storage", "Machine",
    "Firmware", "Hardware", "Localization", "Accessibility", "Reliability", "Tooling",
)  # fmt: skip
_ADJECTIVES = (
    "Quarterly", "Annual", "Draft", "Final", "Internal", "Public", "Legacy", "New",
    "Shared", "Core", "Advanced", "Basic", "Weekly", "Monthly", "Critical", "Optional",
    "Remote", "Local", "Global", "Regional", "Secure", "Fast", "Stable", "Experimental",
)  # fmt: skip
_NOUNS = (
    "roadmap", "runbook", "retrospective", "design review", "architecture", "onboarding",
    "guidelines", "postmortem", "meeting notes", "requirements", "checklist", "FAQ",
    "migration plan", "release notes", "API reference", "deployment guide", "budget",
    "hiring plan", "incident report", "test plan", "style guide", "glossary", "overview",
    "benchmark", "policy", "handbook", "proposal", "decision log", "status report",
)  # fmt: skip
_WORDS = (
    "the", "service", "cluster", "request", "latency", "deploy", "config", "team",
    "customer", "metric", "index", "query", "page", "space", "token", "cache", "queue",
    "topic", "partition", "offset", "schema", "record", "window", "retry", "timeout",
    "owner", "review", "release", "branch", "commit", "build", "pipeline", "alert",
    "dashboard", "budget", "quarter", "goal", "risk", "plan", "design", "feature",
    "support", "ticket", "workflow", "approval", "access", "policy", "audit", "backup",
    "restore", "region", "replica", "shard", "storage", "network", "client", "server",
)  # fmt: skip
_UNICODE_SENTENCES = (
    "Les données sont synchronisées chaque nuit à 02h00, même pendant les congés.",
    "Die Größe des Caches hängt von der Anzahl der Schlüssel ab.",
    "このページはデータパイプラインの設計について説明します。",
    "本文档描述了数据同步的流程和注意事项。",
    "배포 전에 모든 테스트가 통과했는지 확인하세요.",
    "הנתונים מסונכרנים כל לילה לשרת הגיבוי.",
    "يتم تحديث البيانات كل ساعة من الخادم الرئيسي.",
    "Статус задачи обновляется автоматически после проверки.",
    "Deploy finished 🎉 — latency down 30% 📉, errors at zero ✅.",
    # Greek letters look like Latin ones on purpose: text search must not confuse them.
    "Ναι, το σύστημα υποστηρίζει πολλαπλές γλώσσες.",  # noqa: RUF001
)
_FIRST_NAMES = (
    "Alice", "Bob", "Carol", "Dmitri", "Eve", "Fatima", "Gustav", "Hiro", "Ingrid",
    "José", "Zoë", "Łukasz", "Mei", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Søren",
    "Tariq", "Uma", "Viktor", "Wen", "Xavier", "Yara", "Zhang",
)  # fmt: skip
_LAST_NAMES = (
    "Anderson", "Brown", "Çelik", "Dubois", "Evans", "Fischer", "García", "Hansen",
    "Ivanova", "Jensen", "Kowalski", "Lee", "Müller", "Nakamura", "O'Brien", "Patel",
    "Rossi", "Schmidt", "Tanaka", "Usman", "Wang", "Yilmaz",
)  # fmt: skip
_TIME_ZONES = (
    "UTC", "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles",
    "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney", "America/Sao_Paulo", "Pacific/Auckland",
)  # fmt: skip
_LABELS = (
    "architecture", "howto", "meeting-notes", "decision", "draft", "archived-info",
    "team-a", "team-b", "security", "onboarding", "runbook", "faq", "release", "q1",
    "q2", "q3", "q4", "api", "incident", "postmortem", "design", "roadmap", "review",
    "important", "deprecated", "kafka", "mongodb", "python", "java", "frontend",
)  # fmt: skip
_SPACE_CATEGORIES = ("engineering", "business")
_GROUPS = ("confluence-administrators", "engineering-leads", "finance-team", "hr-private")
_ATTACHMENT_KINDS = (
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("csv", "text/csv"),
    ("zip", "application/zip"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
)
_CODE_SAMPLES = (
    ("python", "def handler(event):\n    return {'status': 200, 'items': len(event)}\n"),
    ("java", "public final class Main {\n  public static void main(String[] a) {}\n}\n"),
    ("bash", "set -euo pipefail\nkubectl rollout status deploy/api --timeout=120s\n"),
    ("sql", "SELECT id, title FROM pages WHERE space = 'ENG' AND updated > now() - 1;\n"),
    ("json", '{"key": "value", "nested": {"list": [1, 2, 3]}, "html": "<b>&amp;</b>"}\n'),
    ("xml", '<config><entry key="a">]]&gt; edge</entry></config>\n'),
    ("python", "print('CDATA end marker ]]> inside code')\n"),
)


@dataclass(slots=True)
class _PagePlan:
    space_index: int
    title: str
    parent: int | None  # index into the plan list, or None for a root page
    # Minimum numbers of attachments, comments and labels (pages that overflow pages).
    attachments: int = 0
    comments: int = 0
    labels: int = 0
    status: ContentStatus = ContentStatus.CURRENT
    children: int = 0
    large: bool = False
    content_id: str = ""


@dataclass(slots=True)
class _CommentPlan:
    inline: bool
    reply: bool  # a footer comment that replies to the previous footer comment
    marker: str | None  # inline comments: the ac:ref of their marker in the page body


@dataclass(slots=True)
class _BlogPlan:
    space_index: int
    title: str
    day_offset: int  # days before the base time
    trashed: bool = False
    content_id: str = ""


@dataclass(slots=True)
class _SpacePlan:
    key: str
    name: str
    personal: bool
    owner: str
    page_titles: set[str] = field(default_factory=set)
    pages: list[int] = field(default_factory=list)
    homepage: int = -1


class _Fragments:
    """Precomputed body fragments, so that bodies are joins of ready strings."""

    def __init__(self, rng: random.Random) -> None:
        self.paragraphs = [self._paragraph(rng) for _ in range(160)]
        self.paragraphs += [storage.text_paragraph(s) for s in _UNICODE_SENTENCES]
        self.unicode_start = len(self.paragraphs) - len(_UNICODE_SENTENCES)
        self.headings = [
            storage.heading(rng.choice((1, 2, 2, 3)), self._sentence(rng, 2, 5).rstrip("."))
            for _ in range(60)
        ]
        self.tables = [self._table(rng) for _ in range(24)]
        self.codes = [
            storage.code_macro(code, language=language, macro_id=str(_uuid(rng)))
            for language, code in _CODE_SAMPLES
        ]
        self.panels = [
            storage.panel_macro(
                self.paragraphs[rng.randrange(160)], kind=rng.choice(("info", "note", "tip"))
            )
            for _ in range(24)
        ]
        self.lists = [
            storage.bullet_list(
                (storage.escape(self._sentence(rng, 3, 8)) for _ in range(rng.randint(2, 6))),
                ordered=rng.random() < 0.3,
            )
            for _ in range(24)
        ]
        self.stubs = [
            self.headings[i] + storage.text_paragraph("TODO: " + self._sentence(rng, 3, 9))
            for i in range(60)
        ]
        # About 10 KB of mixed fragments, repeated to make large pages cheaply.
        self.large_block = "".join(
            self.headings[i] + self.paragraphs[i] + self.tables[i % 24] + self.codes[i % 7]
            for i in range(12)
        )

    @staticmethod
    def _sentence(rng: random.Random, low: int, high: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
        return " ".join(words).capitalize() + "."

    def _paragraph(self, rng: random.Random) -> str:
        return storage.text_paragraph(
            " ".join(self._sentence(rng, 5, 14) for _ in range(rng.randint(1, 4)))
        )

    def _table(self, rng: random.Random) -> str:
        columns = rng.randint(2, 5)
        header = [rng.choice(_WORDS).capitalize() for _ in range(columns)]
        rows = [
            [
                rng.choice(_WORDS) if rng.random() < 0.7 else str(rng.randint(0, 9999))
                for _ in range(columns)
            ]
            for _ in range(rng.randint(1, 6))
        ]
        return storage.table(header, rows)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _account_id(rng: random.Random, index: int) -> str:
    # Cloud account ids: mostly 24 hex digits, older ones "557058:<uuid>".
    if index % 5 == 4:
        return f"557058:{_uuid(rng)}"
    return f"{rng.getrandbits(96):024x}"


def generate_site(
    seed: int,
    pages: int,
    *,
    spaces: int | None = None,
    personal_spaces: int | None = None,
    blog_posts: int | None = None,
    users: int | None = None,
    comment_ratio: float = 0.5,
    attachment_ratio: float = 0.3,
    large_page_ratio: float = 0.002,
    base_time: datetime = BASE_TIME,
    site_name: str = "example",
    time_zone: str = "UTC",
) -> Site:
    """Build a site with ``pages`` pages (homepages included) and return it.

    ``spaces`` is the number of global spaces and ``personal_spaces`` the number of
    personal ones; defaults grow with ``pages``. ``comment_ratio`` and
    ``attachment_ratio`` are the mean number of comments and attachments per page or
    blog post. ``large_page_ratio`` is the share of pages with bodies of hundreds of KB.
    """
    if pages < 1:
        raise ValueError(f"pages={pages}: a site needs at least 1 page")
    if spaces is None:
        spaces = 1 if pages < 20 else min(40, 3 + pages // 2500)
    if personal_spaces is None:
        personal_spaces = 0 if pages < 20 else min(20, 1 + pages // 10000)
    if spaces < 1:
        raise ValueError(f"spaces={spaces}: a site needs at least 1 global space")
    if pages < spaces + personal_spaces:
        raise ValueError(
            f"pages={pages} is fewer than the {spaces + personal_spaces} spaces, and every "
            "space has a homepage; pass more pages or fewer spaces"
        )
    if blog_posts is None:
        blog_posts = pages // 10
    if users is None:
        users = max(5, min(500, pages // 100))
    if base_time.tzinfo is None:
        raise ValueError(f"base_time {base_time.isoformat()} has no time zone; pass UTC")

    builder = _Builder(
        random.Random(seed),
        pages=pages,
        spaces=spaces,
        personal_spaces=personal_spaces,
        blog_posts=blog_posts,
        users=users,
        comment_ratio=comment_ratio,
        attachment_ratio=attachment_ratio,
        large_page_ratio=large_page_ratio,
        base_time=base_time,
        site=Site(name=site_name, time_zone=time_zone),
    )
    site = builder.build()
    logger.info(
        "generated site: seed=%d pages=%d spaces=%d blog_posts=%d items=%d",
        seed,
        pages,
        len(site.spaces),
        blog_posts,
        len(site),
    )
    return site


class _Builder:
    def __init__(
        self,
        rng: random.Random,
        *,
        pages: int,
        spaces: int,
        personal_spaces: int,
        blog_posts: int,
        users: int,
        comment_ratio: float,
        attachment_ratio: float,
        large_page_ratio: float,
        base_time: datetime,
        site: Site,
    ) -> None:
        self.rng = rng
        self.page_count = pages
        self.global_space_count = spaces
        self.personal_space_count = personal_spaces
        self.blog_count = blog_posts
        self.user_count = users
        self.comment_ratio = comment_ratio
        self.attachment_ratio = attachment_ratio
        self.large_page_ratio = large_page_ratio
        self.base_time = base_time
        self.site = site
        self.fragments = _Fragments(rng)
        self.account_ids: list[str] = []
        self.space_plans: list[_SpacePlan] = []
        self.page_plans: list[_PagePlan] = []
        self.blog_plans: list[_BlogPlan] = []
        self.next_id = 98304

    def build(self) -> Site:
        # Mutations that use the model clock (trash, archive) happen at the base time.
        self.site.set_clock(self.base_time, frozen=True)
        self._make_users()
        self._plan_spaces()
        self._plan_pages()
        self._plan_blog_posts()
        self._create_spaces()
        self._create_pages()
        self._create_blog_posts()
        self._apply_statuses()
        self.site.set_clock(offset_seconds=0.0)
        return self.site

    # ----------------------------------------------------------- planning

    def _make_users(self) -> None:
        rng = self.rng
        self.account_ids.append(self.site.current_user_id)
        for index in range(self.user_count):
            account_id = _account_id(rng, index)
            first = rng.choice(_FIRST_NAMES)
            last = rng.choice(_LAST_NAMES)
            username = f"{first}.{last}{index}".lower().replace("'", "")
            self.site.add_user(
                User(
                    account_id=account_id,
                    display_name=f"{first} {last}",
                    email=f"user{index}@example.com",
                    time_zone=rng.choice(_TIME_ZONES),
                    username=username,
                    user_key=f"{rng.getrandbits(128):032x}",
                )
            )
            self.account_ids.append(account_id)

    def _plan_spaces(self) -> None:
        used_keys: set[str] = set()
        for index in range(self.global_space_count):
            name = _SPACE_NAMES[index % len(_SPACE_NAMES)]
            if index >= len(_SPACE_NAMES):
                name = f"{name} {index // len(_SPACE_NAMES) + 1}"
            key = "".join(ch for ch in name.upper() if ch.isalnum())[:3]
            suffix = 2
            base_key = key
            while key in used_keys:
                key = f"{base_key}{suffix}"
                suffix += 1
            used_keys.add(key)
            self.space_plans.append(_SpacePlan(key, name, False, self.rng.choice(self.account_ids)))
        owners = self.account_ids[1:] or self.account_ids
        for index in range(self.personal_space_count):
            owner = owners[index % len(owners)]
            user = self.site.users[owner]
            self.space_plans.append(_SpacePlan(f"~{owner}", user.display_name, True, owner))

    def _unique_title(self, space: _SpacePlan, title: str) -> str:
        candidate = title
        number = 2
        while candidate in space.page_titles:
            candidate = f"{title} ({number})"
            number += 1
        space.page_titles.add(candidate)
        return candidate

    def _random_title(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            return rng.choice(UNICODE_TITLES)
        title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        if roll < 0.5:
            title = f"{title} {rng.randint(1, 999)}"
        return title

    def _plan_pages(self) -> None:
        rng = self.rng
        plans = self.page_plans
        space_count = len(self.space_plans)
        # Homepages first, one per space.
        for space_index, space in enumerate(self.space_plans):
            # Confluence Cloud titles a personal space's homepage "Overview".
            home_title = "Overview" if space.personal else f"{space.name} Home"
            title = self._unique_title(space, home_title)
            space.homepage = len(plans)
            space.pages.append(len(plans))
            plans.append(_PagePlan(space_index, title, None))
        remaining = self.page_count - len(plans)
        first = self.space_plans[0]
        # A chain of depth DEEP_CHAIN_LENGTH below the first homepage.
        if remaining >= DEEP_CHAIN_LENGTH + 10:
            chain_parent = first.homepage
            for level in range(DEEP_CHAIN_LENGTH):
                title = self._unique_title(first, f"Level {level + 1} of the deep chain")
                plans[chain_parent].children += 1
                first.pages.append(len(plans))
                plans.append(_PagePlan(0, title, chain_parent))
                chain_parent = len(plans) - 1
            remaining -= DEEP_CHAIN_LENGTH
        # Titles that need escaping, in the first space.
        if remaining >= len(SPECIAL_TITLES) + 10:
            for special in SPECIAL_TITLES:
                title = self._unique_title(first, special)
                plans[first.homepage].children += 1
                first.pages.append(len(plans))
                plans.append(_PagePlan(0, title, first.homepage))
            remaining -= len(SPECIAL_TITLES)
        # Pages whose attachments, comments or labels span several result pages: past
        # the default limits (25 comments, 50 attachments in common clients, 200 labels)
        # and past 200 attachments, where Data Center over-counts.
        if remaining >= len(CROWDED_PAGES) + 10:
            for title, attachments, comments, labels in CROWDED_PAGES:
                plans[first.homepage].children += 1
                first.pages.append(len(plans))
                plans.append(
                    _PagePlan(
                        0,
                        self._unique_title(first, title),
                        first.homepage,
                        attachments=attachments,
                        comments=comments,
                        labels=labels,
                    )
                )
            remaining -= len(CROWDED_PAGES)
        personal_share = 0.03 if self.personal_space_count else 0.0
        for _ in range(remaining):
            if rng.random() < personal_share:
                space_index = rng.randrange(self.global_space_count, space_count)
            else:
                space_index = rng.randrange(self.global_space_count)
            space = self.space_plans[space_index]
            title = self._unique_title(space, self._random_title())
            roll = rng.random()
            if roll < 0.03:
                parent: int | None = None  # an extra root page besides the homepage
            elif roll < 0.25:
                parent = space.homepage
            else:
                # Prefer recent pages, which grows deeper trees.
                window = space.pages[-50:]
                parent = window[rng.randrange(len(window))]
            if parent is not None:
                plans[parent].children += 1
            space.pages.append(len(plans))
            plans.append(
                _PagePlan(
                    space_index,
                    title,
                    parent,
                    large=rng.random() < self.large_page_ratio,
                )
            )
        self._plan_page_statuses()

    def _plan_page_statuses(self) -> None:
        rng = self.rng
        homepages = {space.homepage for space in self.space_plans}
        chain = {
            index for index, plan in enumerate(self.page_plans) if plan.title.startswith("Level ")
        }
        for index, plan in enumerate(self.page_plans):
            # Only leaf pages change status, so no current page sits under a trashed or
            # draft page and every link to a current title resolves.
            if index in homepages or index in chain or plan.children:
                continue
            roll = rng.random()
            if roll < 0.01:
                plan.status = ContentStatus.DRAFT
            elif roll < 0.02:
                plan.status = ContentStatus.TRASHED
            elif roll < 0.025:
                plan.status = ContentStatus.ARCHIVED

    def _plan_blog_posts(self) -> None:
        rng = self.rng
        seen: set[tuple[int, int, str]] = set()
        for _ in range(self.blog_count):
            space_index = rng.randrange(len(self.space_plans))
            day_offset = rng.randrange(1, HISTORY_DAYS)
            title = f"{rng.choice(_ADJECTIVES)} update: {rng.choice(_NOUNS)}"
            if rng.random() < 0.05:
                title = f"{rng.choice(UNICODE_TITLES)} — {rng.choice(_NOUNS)}"
            candidate = title
            number = 2
            while (space_index, day_offset, candidate) in seen:
                candidate = f"{title} ({number})"
                number += 1
            seen.add((space_index, day_offset, candidate))
            self.blog_plans.append(_BlogPlan(space_index, candidate, day_offset))
        # Blog posts are created in posting order, so ids follow posting days.
        self.blog_plans.sort(key=lambda plan: -plan.day_offset)
        for plan in self.blog_plans[3::97]:
            plan.trashed = True

    # ----------------------------------------------------------- creating

    def _allocate_id(self) -> str:
        self.next_id += self.rng.randint(1, 7)
        return str(self.next_id)

    def _time_of(self, sequence: int) -> datetime:
        """Creation time of the sequence-th page: spread over the history, increasing."""
        fraction = sequence / max(1, len(self.page_plans))
        seconds = (fraction * 0.9) * HISTORY_DAYS * 86400 + self.rng.randrange(3600)
        start = self.base_time - timedelta(days=HISTORY_DAYS)
        return start + timedelta(seconds=seconds)

    def _create_spaces(self) -> None:
        rng = self.rng
        start = self.base_time - timedelta(days=HISTORY_DAYS + 30)
        for index, plan in enumerate(self.space_plans):
            description = (
                f"Personal space of {plan.name}."
                if plan.personal
                else f"{plan.name} team space: {rng.choice(_NOUNS)} and {rng.choice(_NOUNS)}."
            )
            if not plan.personal and index % 4 == 2:
                description += " Équipe · チーム · 团队 🌍"
            # Global spaces get a category without a random draw, so the rest of the
            # generated site stays the same for a seed.
            categories = () if plan.personal else (_SPACE_CATEGORIES[index % 2], "team")
            self.site.create_space(
                plan.key,
                plan.name,
                type="personal" if plan.personal else "global",
                description=description,
                creator=plan.owner,
                created=start + timedelta(hours=index),
                labels=categories,
            )

    def _create_pages(self) -> None:
        site = self.site
        rng = self.rng
        for sequence, plan in enumerate(self.page_plans):
            space = self.space_plans[plan.space_index]
            created = self._time_of(sequence)
            author = rng.choice(self.account_ids)
            versions = self._version_count()
            comments = (
                [] if plan.status is ContentStatus.DRAFT else self._plan_comments(plan.comments)
            )
            body = self._page_body(plan) + self._markers_paragraph(comments)
            # Earlier versions share stub bodies from a pool, which keeps the history of
            # 100,000 pages affordable in memory.
            first_body = body if versions == 1 else rng.choice(self.fragments.stubs)
            plan.content_id = self._allocate_id()
            parent_id = self.page_plans[plan.parent].content_id if plan.parent is not None else None
            labels = [rng.choice(_LABELS) for _ in range(rng.choice((0, 0, 1, 1, 2, 3)))]
            labels += [f"catalogue-{number:03d}" for number in range(plan.labels)]
            content = site.create_content(
                type=ContentType.PAGE,
                space_key=space.key,
                title=plan.title,
                body_storage=first_body,
                parent_id=parent_id,
                author=author,
                status=(
                    ContentStatus.DRAFT
                    if plan.status is ContentStatus.DRAFT
                    else ContentStatus.CURRENT
                ),
                labels=labels,
                created=created,
                content_id=plan.content_id,
            )
            if space.homepage == sequence:
                site.set_homepage(space.key, content.id)
            self._add_history(content.id, created, versions, first_body, body)
            if rng.random() < 0.02:
                self._restrict(content.id)
            if plan.status is not ContentStatus.DRAFT:
                self._add_comments(content.id, space.key, plan.title, created, comments)
                self._add_attachments(content.id, space.key, created, plan.attachments)

    def _version_count(self) -> int:
        roll = self.rng.random()
        if roll < 0.6:
            return 1
        if roll < 0.85:
            return 2
        if roll < 0.95:
            return 3
        return self.rng.randint(4, 8)

    def _add_history(
        self, content_id: str, created: datetime, versions: int, first_body: str, body: str
    ) -> None:
        rng = self.rng
        when = created
        latest = self.base_time - timedelta(minutes=1)
        for number in range(2, versions + 1):
            gap = timedelta(seconds=rng.randrange(60, 30 * 86400))
            # Content created in the last minute before the base time keeps its edits at
            # its creation time rather than going back in time.
            when = max(min(when + gap, latest), when)
            self.site.edit_content(
                content_id,
                body_storage=body if number == versions else first_body,
                author=rng.choice(self.account_ids),
                message=rng.choice(("", "", "Fix typos", "Update links", "Add section")),
                minor_edit=rng.random() < 0.3,
                when=when,
            )

    def _restrict(self, content_id: str) -> None:
        rng = self.rng
        # The API user is in every generated restriction, so a crawler that signs in as
        # that user can read the whole site. The other users are left out of some.
        users = [self.site.current_user_id]
        users.extend(rng.choice(self.account_ids) for _ in range(rng.randint(1, 2)))
        groups = [rng.choice(_GROUPS)] if rng.random() < 0.5 else []
        self.site.set_read_restrictions(content_id, users=list(dict.fromkeys(users)), groups=groups)

    def _plan_comments(self, minimum: int = 0) -> list[_CommentPlan]:
        rng = self.rng
        count = 0
        while rng.random() < self.comment_ratio / (1 + self.comment_ratio) and count < 20:
            count += 1
        plans: list[_CommentPlan] = []
        for _ in range(max(count, minimum)):
            inline = rng.random() < 0.2
            reply = rng.random() < 0.25
            plans.append(_CommentPlan(inline, reply, str(_uuid(rng)) if inline else None))
        return plans

    def _markers_paragraph(self, comments: list[_CommentPlan]) -> str:
        """Build the text that inline comments are anchored to, one marker per comment."""
        markers = [
            storage.inline_comment_marker(plan.marker, storage.escape(self.rng.choice(_WORDS)))
            for plan in comments
            if plan.marker is not None
        ]
        return storage.paragraph("Highlighted: " + " ".join(markers)) if markers else ""

    def _add_comments(
        self,
        container_id: str,
        space_key: str,
        title: str,
        created: datetime,
        comments: list[_CommentPlan],
    ) -> None:
        rng = self.rng
        previous: str | None = None
        for index, plan in enumerate(comments):
            reply_to = previous if plan.reply else None
            when = created + timedelta(seconds=rng.randrange(60, 86400 * 20) * (index + 1))
            when = min(when, self.base_time - timedelta(seconds=1))
            body = storage.paragraph(
                storage.escape(rng.choice(("Thanks!", "Looks good.", "Can we clarify this?")))
                + " "
                + storage.user_mention(rng.choice(self.account_ids))
            )
            comment = self.site.create_content(
                type=ContentType.COMMENT,
                space_key=space_key,
                title=f"Re: {title}",
                body_storage=body,
                container_id=container_id,
                parent_id=None if plan.inline else reply_to,
                author=rng.choice(self.account_ids),
                created=max(when, created),
                content_id=self._allocate_id(),
                comment_location="inline" if plan.inline else "footer",
                inline_marker_ref=plan.marker,
            )
            previous = None if plan.inline else comment.id

    def _add_attachments(
        self, container_id: str, space_key: str, created: datetime, minimum: int = 0
    ) -> None:
        rng = self.rng
        count = 0
        while rng.random() < self.attachment_ratio / (1 + self.attachment_ratio) and count < 60:
            count += 1
        count = max(count, minimum)
        for index in range(count):
            extension, media_type = rng.choice(_ATTACHMENT_KINDS)
            stem = rng.choice(("diagram", "report", "screenshot", "export", "notes", "résumé"))
            when = min(
                created + timedelta(seconds=rng.randrange(60, 86400)),
                self.base_time - timedelta(seconds=1),
            )
            attachment = self.site.create_content(
                type=ContentType.ATTACHMENT,
                space_key=space_key,
                title=f"{stem}-{index + 1}.{extension}",
                container_id=container_id,
                author=rng.choice(self.account_ids),
                created=max(when, created),
                content_id=self._allocate_id(),
                media_type=media_type,
                file_size=rng.randint(200, 5_000_000),
            )
            if rng.random() < 0.1:
                # A new upload of the same file name is a new attachment version.
                self.site.edit_content(
                    attachment.id,
                    author=rng.choice(self.account_ids),
                    when=min(
                        attachment.created + timedelta(days=rng.randint(1, 30)),
                        self.base_time - timedelta(seconds=1),
                    ),
                    file_size=rng.randint(200, 5_000_000),
                )

    def _create_blog_posts(self) -> None:
        rng = self.rng
        site = self.site
        for plan in self.blog_plans:
            space = self.space_plans[plan.space_index]
            posting_day = self._posting_day(plan)
            created = datetime.combine(posting_day, time(0), UTC) + timedelta(
                seconds=rng.randrange(86400)
            )
            created = min(created, self.base_time - timedelta(seconds=1))
            plan.content_id = self._allocate_id()
            comments = self._plan_comments()
            body = self._blog_body(plan.space_index) + self._markers_paragraph(comments)
            versions = 2 if rng.random() < 0.2 else 1
            first_body = body if versions == 1 else rng.choice(self.fragments.stubs)
            site.create_content(
                type=ContentType.BLOGPOST,
                space_key=space.key,
                title=plan.title,
                body_storage=first_body,
                author=rng.choice(self.account_ids),
                labels=[rng.choice(_LABELS)] if rng.random() < 0.4 else [],
                created=created,
                content_id=plan.content_id,
            )
            self._add_history(plan.content_id, created, versions, first_body, body)
            self._add_comments(plan.content_id, space.key, plan.title, created, comments)
            self._add_attachments(plan.content_id, space.key, created)

    def _apply_statuses(self) -> None:
        for plan in self.page_plans:
            if plan.status is ContentStatus.TRASHED:
                self.site.trash_content(plan.content_id)
            elif plan.status is ContentStatus.ARCHIVED:
                self.site.archive_content(plan.content_id)
        if self.global_space_count >= 3:
            self.site.archive_space(self.space_plans[self.global_space_count - 1].key)
        for blog in self.blog_plans:
            if blog.trashed:
                self.site.trash_content(blog.content_id)

    # ------------------------------------------------------------- bodies

    def _page_body(self, plan: _PagePlan) -> str:
        rng = self.rng
        fragments = self.fragments
        parts: list[str] = []
        for _ in range(rng.randint(1, 4)):
            parts.append(rng.choice(fragments.headings))
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.05:
                    parts.append(
                        fragments.paragraphs[
                            rng.randrange(fragments.unicode_start, len(fragments.paragraphs))
                        ]
                    )
                else:
                    parts.append(fragments.paragraphs[rng.randrange(fragments.unicode_start)])
            roll = rng.random()
            if roll < 0.2:
                parts.append(rng.choice(fragments.tables))
            elif roll < 0.35:
                parts.append(rng.choice(fragments.codes))
            elif roll < 0.45:
                parts.append(rng.choice(fragments.panels))
            elif roll < 0.55:
                parts.append(rng.choice(fragments.lists))
        parts.append(self._links_paragraph(plan.space_index))
        if plan.large:
            # Python stores a string with any non-Latin-1 character at 2 or 4 bytes per
            # character, so large bodies stay ASCII.
            head = "".join(parts)
            if not head.isascii():
                head = fragments.headings[0] + fragments.paragraphs[0]
            return head + fragments.large_block * rng.randint(10, 40)
        return "".join(parts)

    def _posting_day(self, plan: _BlogPlan) -> date:
        return (self.base_time - timedelta(days=plan.day_offset)).date()

    def _blog_body(self, space_index: int) -> str:
        rng = self.rng
        fragments = self.fragments
        parts = [rng.choice(fragments.headings), rng.choice(fragments.paragraphs)]
        if rng.random() < 0.3:
            parts.append(rng.choice(fragments.codes))
        parts.append(self._links_paragraph(space_index))
        return "".join(parts)

    def _links_paragraph(self, space_index: int) -> str:
        """Build a paragraph of links to pages and blog posts, some dangling, and mentions."""
        rng = self.rng
        space = self.space_plans[space_index]
        links: list[str] = []
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
            roll = rng.random()
            if roll < 0.05:
                title = f"{DANGLING_TITLE_PREFIX} {rng.randint(1, 10**6)}"
                links.append(storage.page_link(space.key, title, title))
            elif roll < 0.15 and self.blog_plans:
                blog = rng.choice(self.blog_plans)
                if blog.trashed:
                    continue
                blog_space = self.space_plans[blog.space_index].key
                links.append(
                    storage.blog_post_link(
                        blog_space, blog.title, self._posting_day(blog), blog.title
                    )
                )
            else:
                if roll < 0.35:
                    target_space = self.space_plans[rng.randrange(len(self.space_plans))]
                else:
                    target_space = space
                target = self.page_plans[target_space.pages[rng.randrange(len(target_space.pages))]]
                if target.status is not ContentStatus.CURRENT:
                    target = self.page_plans[target_space.homepage]
                key = target_space.key if rng.random() < 0.9 or target_space is not space else None
                links.append(storage.page_link(key, target.title, target.title))
        if rng.random() < 0.3:
            links.append(storage.user_mention(rng.choice(self.account_ids)))
        if not links:
            return ""
        return storage.paragraph("See also: " + ", ".join(links))
