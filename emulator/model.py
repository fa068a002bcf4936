"""The emulated Confluence site: users, spaces, content, versions, labels and a clock.

One :class:`Site` instance contains the whole site of an emulator process. The server reads
it to answer REST calls, tests and the control API mutate it, and the seeded generator
and the documentation importer build it. Every datetime is timezone-aware UTC.

Indexes kept by the site, so that listings cost O(size of the result):

- content by id, in id order (ids are allocated in increasing order);
- per space and type, content in id order;
- per parent, child pages in position order, and root pages per space;
- per container (page or blog post), its comments and attachments in id order;
- per comment, its replies;
- unique page titles per space and blog-post titles per space and posting day.

Errors: :class:`NotFound` (a ``KeyError``) for an unknown id or key, and
:class:`InvalidOperation` (a ``ValueError``) for a mutation that Confluence rejects.
The ``Site`` is not thread-safe; use it from one event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from emulator.storage import extract_text

logger = logging.getLogger(__name__)

__all__ = [
    "Content",
    "ContentStatus",
    "ContentType",
    "InvalidOperation",
    "Label",
    "NotFound",
    "Site",
    "Space",
    "User",
    "Version",
]


class NotFound(KeyError):
    """An id, key or name that the site does not contain."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument; a message reads better unquoted.
        return str(self.args[0]) if self.args else ""


class InvalidOperation(ValueError):
    """A mutation that Confluence would reject, with the reason in the message."""


class ContentType(StrEnum):
    PAGE = "page"
    BLOGPOST = "blogpost"
    COMMENT = "comment"
    ATTACHMENT = "attachment"


class ContentStatus(StrEnum):
    CURRENT = "current"
    DRAFT = "draft"
    TRASHED = "trashed"
    ARCHIVED = "archived"
    HISTORICAL = "historical"


LABEL_PREFIXES = ("global", "my", "team")
COMMENT_LOCATIONS = ("footer", "inline")

_SPACE_KEY = re.compile(r"^(~[A-Za-z0-9:_.@-]+|[A-Za-z0-9]+)$")
_LABEL_NAME = re.compile(r"^[^\s:]+$")
# The API user every site starts with unless the caller passes one.
DEFAULT_API_USER_ID = "5b10ac8d82e05b22cc7d4ef5"


def _to_milliseconds(when: datetime) -> datetime:
    """Truncate to milliseconds, the resolution of Confluence timestamps, in UTC."""
    if when.tzinfo is None:
        raise ValueError(
            f"naive datetime {when.isoformat()} has no time zone; pass an aware UTC datetime"
        )
    when = when.astimezone(UTC)
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


@dataclass(slots=True)
class User:
    account_id: str
    display_name: str
    email: str
    time_zone: str
    username: str
    user_key: str
    # Names of the groups the user belongs to; group read restrictions admit their members.
    groups: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Version:
    number: int
    when: datetime
    by: str
    message: str = ""
    minor_edit: bool = False
    title: str = ""
    body_storage: str = ""


@dataclass(slots=True)
class Label:
    prefix: str
    name: str
    id: str


@dataclass(slots=True)
class Space:
    id: int
    key: str
    name: str
    type: str
    status: str
    description: str
    homepage_id: str | None
    created: datetime
    creator: str
    restricted_for_api: bool = False
    # Model clock (epoch seconds) of the last change to the space itself.
    changed_at: float = 0.0
    # Space categories, which `GET /space?label=` filters by.
    labels: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Content:
    """A page, blog post, comment or attachment.

    ``parent_id`` is the parent page of a page, or the comment that a reply replies to;
    it is ``None`` for root pages, blog posts, top-level comments and attachments.
    ``container_id`` is the page or blog post a comment or attachment belongs to.
    ``ancestor_ids`` (root first) is kept by the :class:`Site`: the page ancestors of a
    page, the parent-comment chain of a comment, and empty for blog posts and attachments.
    """

    id: str
    type: ContentType
    status: ContentStatus
    title: str
    space_key: str
    parent_id: str | None
    container_id: str | None
    position: int
    versions: list[Version]
    created: datetime
    created_by: str
    labels: list[Label] = field(default_factory=list)
    read_restriction_users: list[str] = field(default_factory=list)
    read_restriction_groups: list[str] = field(default_factory=list)
    comment_location: str | None = None
    inline_marker_ref: str | None = None
    media_type: str | None = None
    file_size: int | None = None
    changed_at: float = 0.0
    # Order of the last change across the whole site; ties in changed_at are common when
    # the model clock is frozen.
    change_sequence: int = 0
    stored_ancestor_ids: list[str] = field(default_factory=list, repr=False)
    text_cache: tuple[int, str] | None = field(default=None, repr=False, compare=False)

    @property
    def version(self) -> Version:
        return self.versions[-1]

    @property
    def body_storage(self) -> str:
        return self.versions[-1].body_storage

    @property
    def last_modified(self) -> datetime:
        return self.versions[-1].when

    @property
    def ancestor_ids(self) -> list[str]:
        return self.stored_ancestor_ids

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def text(self) -> str:
        """Plain text of the current body, cached per version number."""
        number = self.versions[-1].number
        if self.text_cache is None or self.text_cache[0] != number:
            self.text_cache = (number, extract_text(self.versions[-1].body_storage))
        return self.text_cache[1]

    @property
    def posting_day(self) -> date | None:
        if self.type is not ContentType.BLOGPOST:
            return None
        return self.created.date()

    @property
    def is_restricted(self) -> bool:
        return bool(self.read_restriction_users or self.read_restriction_groups)


class Site:
    """The whole emulated site; one instance per emulator process.

    Not thread-safe: use it from one event loop. Content ids are numeric strings
    allocated in increasing order, so creation order is id order.
    """

    def __init__(
        self,
        *,
        api_user: User | None = None,
        name: str = "example",
        time_zone: str = "UTC",
        first_content_id: int = 65537,
        first_space_id: int = 32769,
        time_source: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        # Zone that CQL date literals are read in when the caller has no zone of its own.
        self.time_zone = time_zone
        self.users: dict[str, User] = {}
        self.spaces: dict[str, Space] = {}
        if api_user is None:
            api_user = User(
                account_id=DEFAULT_API_USER_ID,
                display_name="Emulator API User",
                email="api-user@example.com",
                time_zone="Europe/Berlin",
                username="api-user",
                user_key="8a7f808a7a1b2c3d017a1b2c3d4e0001",
            )
        self.add_user(api_user)
        self.current_user_id = api_user.account_id

        self._time_source = time_source
        self._clock_offset = 0.0
        self._frozen_at: datetime | None = None
        self._change_sequence = 0
        self._trash_sequence = 0

        self._next_content_id = first_content_id
        self._next_space_id = first_space_id
        self._next_label_id = 1

        self._contents: dict[str, Content] = {}
        self._spaces_by_id: dict[int, Space] = {}
        self._by_space: dict[str, dict[str, Content]] = {}
        self._by_space_type: dict[str, dict[ContentType, dict[str, Content]]] = {}
        self._root_pages: dict[str, list[str]] = {}
        self._child_pages: dict[str, list[str]] = {}
        self._replies: dict[str, list[str]] = {}
        self._attached: dict[str, dict[ContentType, dict[str, Content]]] = {}
        self._page_titles: dict[str, dict[str, str]] = {}
        self._blog_titles: dict[str, dict[tuple[date, str], str]] = {}
        self._labels: dict[tuple[str, str], Label] = {}
        # Content id -> (number of the trash operation that trashed it, status before),
        # so a restore brings back exactly what was trashed together, as it was.
        self._trash_group: dict[str, tuple[int, ContentStatus]] = {}
        # Account id (None for anonymous) -> ids that caller may not read, valid for one
        # change sequence.
        self._hidden_cache: dict[str | None, frozenset[str]] = {}
        self._hidden_sequence = -1
        # Seconds the search index lags behind changes; see the `index_lag` property.
        self._index_lag = 0.0
        self.last_change_at = 0.0
        self._indexed: dict[str, list[tuple[float, Content | None]]] = {}

    # ------------------------------------------------------------------ clock

    def now(self) -> datetime:
        """Return the model time: frozen, or real time plus an offset, in milliseconds."""
        if self._frozen_at is not None:
            return self._frozen_at
        real = datetime.fromtimestamp(self._time_source() + self._clock_offset, UTC)
        return _to_milliseconds(real)

    @property
    def clock_frozen(self) -> bool:
        return self._frozen_at is not None

    def set_clock(
        self,
        when: datetime | None = None,
        *,
        offset_seconds: float | None = None,
        frozen: bool | None = None,
    ) -> None:
        """Set the model clock.

        - ``when``: the model time becomes ``when``. The clock stays frozen or running as
          it was unless ``frozen`` is given.
        - ``offset_seconds``: the model time becomes real time plus the offset, running
          (unless ``frozen=True``, which freezes it at that time).
        - ``frozen=True`` alone freezes the clock at the current model time;
          ``frozen=False`` alone lets it run on from the current model time.
        """
        if when is not None and offset_seconds is not None:
            raise InvalidOperation("set_clock got both when and offset_seconds; pass one of them")
        if when is not None:
            target = _to_milliseconds(when)
        elif offset_seconds is not None:
            target = _to_milliseconds(
                datetime.fromtimestamp(self._time_source() + offset_seconds, UTC)
            )
            if frozen is None:
                frozen = False
        else:
            target = self.now()
        keep_frozen = self._frozen_at is not None if frozen is None else frozen
        if keep_frozen:
            self._frozen_at = target
        else:
            self._frozen_at = None
            self._clock_offset = target.timestamp() - self._time_source()
        logger.info("model clock set: now=%s frozen=%s", target.isoformat(), keep_frozen)

    def advance_clock(self, seconds: float) -> datetime:
        """Move the model clock forward (or back, for a negative value) and return it."""
        if self._frozen_at is not None:
            self._frozen_at = _to_milliseconds(self._frozen_at + timedelta(seconds=seconds))
        else:
            self._clock_offset += seconds
        return self.now()

    def _touch(self, content: Content, at: datetime | None = None) -> None:
        self._change_sequence += 1
        content.changed_at = (self.now() if at is None else at).timestamp()
        content.change_sequence = self._change_sequence
        self.last_change_at = max(self.last_change_at, content.changed_at)
        if self.index_lag > 0:
            self._record_indexed(content.id, content.changed_at, _index_copy(content))

    @property
    def index_lag(self) -> float:
        """Seconds the search index lags behind changes.

        While it is above zero, every change records a copy of the item, so search can
        serve the version it indexed before. Turning the lag on copies every item once as
        the index's starting point; turning it off drops the copies.
        """
        return self._index_lag

    @index_lag.setter
    def index_lag(self, seconds: float) -> None:
        if seconds > 0 and self._index_lag <= 0:
            self._indexed = {
                content.id: [(content.changed_at, _index_copy(content))]
                for content in self._contents.values()
            }
        elif seconds <= 0:
            self._indexed = {}
        self._index_lag = seconds

    def _record_indexed(self, content_id: str, at: float, copy: Content | None) -> None:
        history = self._indexed.setdefault(content_id, [])
        history.append((at, copy))
        # Entries older than the newest one that the index has already caught up with are
        # never served again.
        cutoff = self.now().timestamp() - self.index_lag
        settled = [index for index, (when, _copy) in enumerate(history) if when <= cutoff]
        if len(settled) > 1:
            del history[: settled[-1]]

    def indexed_version(self, content_id: str, cutoff: float) -> Content | None:
        """Return the item as the search index saw it at ``cutoff`` (epoch seconds).

        Returns None when the index had not seen the item by then, or saw it purged.
        """
        history = self._indexed.get(content_id)
        if not history:
            content = self._contents.get(content_id)
            if content is None or content.changed_at > cutoff:
                return None
            return content
        seen: Content | None = None
        for when, copy in history:
            if when > cutoff:
                break
            seen = copy
        return seen

    def hidden_from(self, account_id: str | None) -> frozenset[str]:
        """Return the ids of the content ``account_id`` may not read (None: anonymous).

        A read restriction admits its users and the members of its groups. It covers the
        item, its descendant pages and the comments and attachments of all of them, as
        Confluence's inherited page restrictions do.
        """
        if self._hidden_sequence != self._change_sequence:
            self._hidden_cache.clear()
            self._hidden_sequence = self._change_sequence
        cached = self._hidden_cache.get(account_id)
        if cached is not None:
            return cached
        user = self.users.get(account_id) if account_id is not None else None
        groups = set(user.groups) if user is not None else set()
        hidden: set[str] = set()
        for content in self._contents.values():
            if not content.is_restricted or content.id in hidden:
                continue
            if account_id in content.read_restriction_users or groups.intersection(
                content.read_restriction_groups
            ):
                continue
            hidden.update(item.id for item in self._subtree(content.id))
        result = frozenset(hidden)
        self._hidden_cache[account_id] = result
        return result

    @property
    def change_sequence(self) -> int:
        """Number of content changes so far; grows by one per changed item."""
        return self._change_sequence

    # ---------------------------------------------------------------- lookups

    def user(self, account_id: str) -> User | None:
        return self.users.get(account_id)

    def space(self, key: str) -> Space | None:
        return self.spaces.get(key)

    def space_by_id(self, space_id: int) -> Space | None:
        return self._spaces_by_id.get(space_id)

    def content(self, content_id: str) -> Content | None:
        return self._contents.get(content_id)

    def contents(self) -> Iterable[Content]:
        """Return all content of every type and status, in id order."""
        return self._contents.values()

    def __len__(self) -> int:
        return len(self._contents)

    def __bool__(self) -> bool:
        # A site without content is still a site; without this, len() would make it falsy.
        return True

    def space_contents(self, key: str, type: ContentType | None = None) -> list[Content]:
        """Content of a space, any status, in id order; all types when ``type`` is None."""
        if type is None:
            return list(self._by_space.get(key, {}).values())
        return list(self._by_space_type.get(key, {}).get(type, {}).values())

    def root_pages(self, key: str) -> list[Content]:
        """Pages without a parent in a space, any status, in position order."""
        return [self._contents[i] for i in self._root_pages.get(key, [])]

    def children(self, content_id: str, type: ContentType) -> list[Content]:
        """Return the direct children of one type, any status.

        Pages: child pages in position order. Comments and attachments: those that
        belong to a page or blog post, in id order, replies included. For a comment,
        ``COMMENT`` lists its direct replies.
        """
        content = self._require(content_id)
        if type is ContentType.PAGE:
            if content.type is not ContentType.PAGE:
                return []
            return [self._contents[i] for i in self._child_pages.get(content_id, [])]
        if type is ContentType.COMMENT and content.type is ContentType.COMMENT:
            return [self._contents[i] for i in self._replies.get(content_id, [])]
        if type in (ContentType.COMMENT, ContentType.ATTACHMENT):
            return list(self._attached.get(content_id, {}).get(type, {}).values())
        return []

    def descendants(self, content_id: str, type: ContentType) -> list[Content]:
        """Return the descendants of one type, any status.

        Pages: every page below, depth first in position order. Comments and
        attachments: those that belong to this page or blog post only, not to the pages
        below it. For a comment, every reply below it.
        """
        content = self._require(content_id)
        if type is ContentType.PAGE:
            return [self._contents[i] for i in self._descendant_page_ids(content_id)]
        if content.type is ContentType.COMMENT:
            if type is not ContentType.COMMENT:
                return []
            return [self._contents[i] for i in self._reply_ids(content_id)]
        return self.children(content_id, type)

    def ancestors(self, content_id: str) -> list[Content]:
        """Return the ancestors, root first (see :attr:`Content.ancestor_ids`)."""
        content = self._require(content_id)
        return [self._contents[i] for i in content.stored_ancestor_ids]

    def find_page(self, space_key: str, title: str) -> Content | None:
        """Return the current or archived page with this exact title in a space."""
        content_id = self._page_titles.get(space_key, {}).get(title)
        return None if content_id is None else self._contents[content_id]

    def find_blog_post(self, space_key: str, title: str, posting_day: date) -> Content | None:
        """Return the current or archived blog post with this title and posting day."""
        content_id = self._blog_titles.get(space_key, {}).get((posting_day, title))
        return None if content_id is None else self._contents[content_id]

    def find_attachment(self, container_id: str, filename: str) -> Content | None:
        for attachment in (
            self._attached.get(container_id, {}).get(ContentType.ATTACHMENT, {}).values()
        ):
            if attachment.title == filename:
                return attachment
        return None

    def label(self, name: str, prefix: str = "global") -> Label | None:
        return self._labels.get((prefix, name))

    def counts(self) -> dict[str, int]:
        """Count items, as a flat dict.

        ``"<type>"`` counts current content of that type (``page``, ``blogpost``,
        ``comment``, ``attachment``). ``"<type>:<status>"`` counts each other status that
        occurs, for example ``page:trashed``. ``"space"`` and ``"space:archived"`` count
        current and archived spaces, and ``"user"`` counts users.
        """
        result: dict[str, int] = {str(t): 0 for t in ContentType}
        for content in self._contents.values():
            if content.status is ContentStatus.CURRENT:
                key = str(content.type)
            else:
                key = f"{content.type}:{content.status}"
            result[key] = result.get(key, 0) + 1
        result["space"] = sum(1 for s in self.spaces.values() if s.status == "current")
        result["space:archived"] = sum(1 for s in self.spaces.values() if s.status == "archived")
        result["user"] = len(self.users)
        return result

    # -------------------------------------------------------- users and spaces

    def add_user(self, user: User) -> User:
        if user.account_id in self.users:
            raise InvalidOperation(f"user {user.account_id} already exists; account ids are unique")
        self.users[user.account_id] = user
        return user

    def create_space(
        self,
        key: str,
        name: str,
        *,
        type: str = "global",
        description: str = "",
        creator: str | None = None,
        created: datetime | None = None,
        space_id: int | None = None,
        homepage_title: str | None = None,
        homepage_body: str = "",
        labels: Sequence[str] = (),
    ) -> Space:
        """Create a space, with a homepage (a root page) when ``homepage_title`` is given.

        Personal space keys start with ``~`` (``~`` plus the owner's account id on Cloud).
        """
        if not _SPACE_KEY.match(key):
            raise InvalidOperation(
                f"invalid space key {key!r}: use letters and digits, or '~' plus an "
                "account id for a personal space"
            )
        if key in self.spaces:
            raise InvalidOperation(f"space key {key!r} already exists; space keys are unique")
        if type not in ("global", "personal"):
            raise InvalidOperation(f"invalid space type {type!r}: use 'global' or 'personal'")
        if (type == "personal") != key.startswith("~"):
            raise InvalidOperation(
                f"space {key!r} of type {type!r}: personal space keys, and only they, "
                "start with '~'"
            )
        creator = self._require_user(creator or self.current_user_id)
        if space_id is None:
            space_id = self._next_space_id
        if space_id in self._spaces_by_id:
            raise InvalidOperation(f"space id {space_id} already exists; space ids are unique")
        self._next_space_id = max(self._next_space_id, space_id + 1)
        space = Space(
            id=space_id,
            key=key,
            name=name,
            type=type,
            status="current",
            description=description,
            homepage_id=None,
            created=_to_milliseconds(created) if created is not None else self.now(),
            creator=creator,
            changed_at=self.now().timestamp(),
            labels=[_space_label(label) for label in labels],
        )
        self.spaces[key] = space
        self._spaces_by_id[space_id] = space
        self._by_space[key] = {}
        self._by_space_type[key] = {t: {} for t in ContentType}
        self._root_pages[key] = []
        self._page_titles[key] = {}
        self._blog_titles[key] = {}
        if homepage_title is not None:
            homepage = self.create_content(
                type=ContentType.PAGE,
                space_key=key,
                title=homepage_title,
                body_storage=homepage_body,
                author=creator,
                created=space.created,
            )
            space.homepage_id = homepage.id
        return space

    def set_homepage(self, key: str, content_id: str | None) -> Space:
        space = self._require_space(key)
        if content_id is not None:
            page = self._require(content_id)
            if page.type is not ContentType.PAGE or page.space_key != key:
                raise InvalidOperation(
                    f"content {content_id} cannot be the homepage of space {key}: "
                    f"it is a {page.type} in space {page.space_key}; use a page of that space"
                )
        space.homepage_id = content_id
        space.changed_at = self.now().timestamp()
        return space

    def archive_space(self, key: str) -> Space:
        """Mark a space archived; its content keeps its own status, as in Confluence."""
        space = self._require_space(key)
        space.status = "archived"
        space.changed_at = self.now().timestamp()
        self._touch_space_content(key)
        return space

    def unarchive_space(self, key: str) -> Space:
        space = self._require_space(key)
        space.status = "current"
        space.changed_at = self.now().timestamp()
        self._touch_space_content(key)
        return space

    def _touch_space_content(self, key: str) -> None:
        # Search visibility of every item changes with the space status.
        for content in self._by_space[key].values():
            self._touch(content)

    # --------------------------------------------------------------- creating

    def create_content(
        self,
        *,
        type: ContentType,
        space_key: str,
        title: str,
        body_storage: str = "",
        parent_id: str | None = None,
        container_id: str | None = None,
        author: str | None = None,
        status: ContentStatus = ContentStatus.CURRENT,
        labels: Iterable[str | Label] = (),
        created: datetime | None = None,
        content_id: str | None = None,
        position: int | None = None,
        message: str = "",
        comment_location: str | None = None,
        inline_marker_ref: str | None = None,
        media_type: str | None = None,
        file_size: int | None = None,
        read_restriction_users: Sequence[str] = (),
        read_restriction_groups: Sequence[str] = (),
    ) -> Content:
        """Create content with version 1 and return it.

        ``created`` defaults to the model time and is also the time of version 1.
        ``content_id`` defaults to the next free id. An explicit id must be numeric and
        greater than every existing id, which keeps creation order equal to id order.
        ``position`` inserts a page at that index among its siblings (default: last).
        ``labels`` are names (global prefix) or ``Label`` objects.
        """
        type = ContentType(type)
        status = ContentStatus(status)
        space = self._require_space(space_key)
        if status not in (ContentStatus.CURRENT, ContentStatus.DRAFT, ContentStatus.ARCHIVED):
            raise InvalidOperation(
                f"cannot create content with status {status}: create it current, draft or "
                "archived, then trash it with trash_content"
            )
        author = self._require_user(author or self.current_user_id)
        if not title.strip():
            raise InvalidOperation(f"empty title for new {type} in space {space_key}: pass a title")

        container: Content | None = None
        parent: Content | None = None
        if type in (ContentType.PAGE, ContentType.BLOGPOST):
            if container_id is not None:
                raise InvalidOperation(
                    f"a {type} has no container, got container_id={container_id}; "
                    "only comments and attachments have one"
                )
            if type is ContentType.BLOGPOST and parent_id is not None:
                raise InvalidOperation(
                    f"a blog post has no parent page, got parent_id={parent_id}; omit it"
                )
            if parent_id is not None:
                parent = self._require(parent_id)
                self._check_page_parent(parent, space_key)
        else:
            if container_id is None:
                raise InvalidOperation(
                    f"a {type} needs container_id, the page or blog post it belongs to"
                )
            container = self._require(container_id)
            if container.type not in (ContentType.PAGE, ContentType.BLOGPOST):
                raise InvalidOperation(
                    f"content {container_id} is a {container.type}; a {type} belongs to a "
                    "page or a blog post"
                )
            if container.status is ContentStatus.TRASHED:
                raise InvalidOperation(
                    f"container {container_id} is trashed; restore it before adding a {type}"
                )
            if container.space_key != space_key:
                raise InvalidOperation(
                    f"container {container_id} is in space {container.space_key}, not "
                    f"{space_key}; pass space_key={container.space_key!r}"
                )
            if type is ContentType.ATTACHMENT:
                if parent_id is not None:
                    raise InvalidOperation(f"an attachment has no parent, got {parent_id}")
                if self.find_attachment(container_id, title) is not None:
                    raise InvalidOperation(
                        f"container {container_id} already has an attachment named "
                        f"{title!r}; edit it to add a version or pick another file name"
                    )
            elif parent_id is not None:
                parent = self._require(parent_id)
                if parent.type is not ContentType.COMMENT or parent.container_id != container_id:
                    raise InvalidOperation(
                        f"a reply's parent_id must be a comment on container {container_id}; "
                        f"content {parent_id} is a {parent.type} on {parent.container_id}"
                    )

        if type is ContentType.COMMENT:
            comment_location = comment_location or "footer"
            if comment_location not in COMMENT_LOCATIONS:
                raise InvalidOperation(
                    f"invalid comment location {comment_location!r}: use footer or inline"
                )
        elif comment_location is not None or inline_marker_ref is not None:
            raise InvalidOperation(f"a {type} has no comment location; omit it")
        if type is ContentType.ATTACHMENT:
            media_type = media_type or "application/octet-stream"
            file_size = 0 if file_size is None else file_size
            if file_size < 0:
                raise InvalidOperation(f"negative file size {file_size} for attachment {title!r}")

        when = _to_milliseconds(created) if created is not None else self.now()
        new_id = self._allocate_id(content_id)
        if type is ContentType.COMMENT and comment_location == "inline" and not inline_marker_ref:
            inline_marker_ref = f"{int(new_id):032x}"
        content = Content(
            id=new_id,
            type=type,
            status=status,
            title=title,
            space_key=space.key,
            parent_id=parent.id if parent is not None else None,
            container_id=container.id if container is not None else None,
            position=0,
            versions=[
                Version(
                    number=1,
                    when=when,
                    by=author,
                    message=message,
                    title=title,
                    body_storage=body_storage,
                )
            ],
            created=when,
            created_by=author,
            read_restriction_users=list(read_restriction_users),
            read_restriction_groups=list(read_restriction_groups),
            comment_location=comment_location,
            inline_marker_ref=inline_marker_ref,
            media_type=media_type,
            file_size=file_size,
        )
        self._check_title_free(content, space.key, title)
        self._contents[new_id] = content
        self._index_in_space(content)
        self._link_structure(content, position)
        self._claim_title(content)
        for label in labels:
            self._attach_label(content, label)
        # Content created with an explicit past time counts as changed at that time, so
        # generated sites are searchable at once despite the search index lag.
        self._touch(content, when if created is not None else None)
        return content

    def _allocate_id(self, content_id: str | None) -> str:
        if content_id is None:
            number = self._next_content_id
        else:
            if not content_id.isdigit():
                raise InvalidOperation(f"content id {content_id!r} is not numeric")
            number = int(content_id)
            if number < self._next_content_id:
                raise InvalidOperation(
                    f"content id {content_id} is not above every existing id (next free id "
                    f"is {self._next_content_id}); ids grow with creation order"
                )
        self._next_content_id = number + 1
        return str(number)

    def _check_page_parent(self, parent: Content, space_key: str) -> None:
        if parent.type is not ContentType.PAGE:
            raise InvalidOperation(
                f"parent {parent.id} is a {parent.type}; a page's parent must be a page"
            )
        if parent.space_key != space_key:
            raise InvalidOperation(
                f"parent page {parent.id} is in space {parent.space_key}, not {space_key}; "
                "a page and its parent share a space"
            )
        if parent.status is ContentStatus.TRASHED:
            raise InvalidOperation(f"parent page {parent.id} is trashed; restore it first")

    # --------------------------------------------------------------- editing

    def edit_content(
        self,
        content_id: str,
        *,
        title: str | None = None,
        body_storage: str | None = None,
        author: str | None = None,
        message: str = "",
        minor_edit: bool = False,
        when: datetime | None = None,
        media_type: str | None = None,
        file_size: int | None = None,
    ) -> Content:
        """Append a new version (number + 1, at ``when`` or the model time) and return it.

        Omitted title or body keep their current value. For attachments a new version is
        a new upload, so ``media_type`` and ``file_size`` may change too.
        """
        content = self._require(content_id)
        if content.status is ContentStatus.TRASHED:
            raise InvalidOperation(f"content {content_id} is trashed; restore it before editing")
        author = self._require_user(author or self.current_user_id)
        new_title = content.title if title is None else title
        if not new_title.strip():
            raise InvalidOperation(f"empty title for content {content_id}: pass a title")
        if new_title != content.title:
            self._check_title_free(content, content.space_key, new_title)
            if (
                content.type is ContentType.ATTACHMENT
                and content.container_id is not None
                and self.find_attachment(content.container_id, new_title) is not None
            ):
                raise InvalidOperation(
                    f"container {content.container_id} already has an attachment named "
                    f"{new_title!r}"
                )
        if content.type is not ContentType.ATTACHMENT and (
            media_type is not None or file_size is not None
        ):
            raise InvalidOperation(f"content {content_id} is a {content.type}, not an attachment")
        version_time = _to_milliseconds(when) if when is not None else self.now()
        if version_time < content.versions[-1].when:
            raise InvalidOperation(
                f"version time {version_time.isoformat()} for content {content_id} is before "
                f"its version {content.versions[-1].number} "
                f"({content.versions[-1].when.isoformat()}); versions are in time order"
            )
        self._release_title(content)
        content.title = new_title
        self._claim_title(content)
        if media_type is not None:
            content.media_type = media_type
        if file_size is not None:
            content.file_size = file_size
        content.versions.append(
            Version(
                number=content.versions[-1].number + 1,
                when=version_time,
                by=author,
                message=message,
                minor_edit=minor_edit,
                title=new_title,
                body_storage=content.body_storage if body_storage is None else body_storage,
            )
        )
        self._touch(content, version_time if when is not None else None)
        return content

    def set_read_restrictions(
        self, content_id: str, *, users: Sequence[str] = (), groups: Sequence[str] = ()
    ) -> Content:
        """Replace the read restrictions; empty lists remove them."""
        content = self._require(content_id)
        for account_id in users:
            self._require_user(account_id)
        content.read_restriction_users = list(users)
        content.read_restriction_groups = list(groups)
        self._touch(content)
        return content

    def publish_draft(self, content_id: str) -> Content:
        """Turn a draft into current content (a new version, as publishing does)."""
        content = self._require(content_id)
        if content.status is not ContentStatus.DRAFT:
            raise InvalidOperation(f"content {content_id} is {content.status}, not a draft")
        self._check_title_free(
            content, content.space_key, content.title, as_status=ContentStatus.CURRENT
        )
        content.status = ContentStatus.CURRENT
        self._claim_title(content)
        return self.edit_content(content_id)

    def archive_content(self, content_id: str) -> Content:
        """Archive one page or blog post (its child pages are not archived with it)."""
        content = self._require(content_id)
        if content.type not in (ContentType.PAGE, ContentType.BLOGPOST):
            raise InvalidOperation(
                f"content {content_id} is a {content.type}; only pages and blog posts are archived"
            )
        if content.status is not ContentStatus.CURRENT:
            raise InvalidOperation(
                f"content {content_id} is {content.status}; only current content can be archived"
            )
        content.status = ContentStatus.ARCHIVED
        self._touch(content)
        return content

    def unarchive_content(self, content_id: str) -> Content:
        content = self._require(content_id)
        if content.status is not ContentStatus.ARCHIVED:
            raise InvalidOperation(f"content {content_id} is {content.status}, not archived")
        content.status = ContentStatus.CURRENT
        self._touch(content)
        return content

    # ----------------------------------------------------------------- labels

    def add_label(self, content_id: str, name: str, prefix: str = "global") -> Label:
        """Add a label (names are lower-cased, as Confluence does); return it.

        Adding a label the content already has changes nothing.
        """
        content = self._require(content_id)
        label = self._label_for(name, prefix)
        if all(existing is not label for existing in content.labels):
            content.labels.append(label)
            self._touch(content)
        return label

    def remove_label(self, content_id: str, name: str) -> None:
        content = self._require(content_id)
        name = name.lower()
        kept = [label for label in content.labels if label.name != name]
        if len(kept) == len(content.labels):
            raise NotFound(f"content {content_id} has no label {name!r}")
        content.labels = kept
        self._touch(content)

    def _label_for(self, name: str, prefix: str) -> Label:
        name = name.strip().lower()
        if not name or not _LABEL_NAME.match(name):
            raise InvalidOperation(
                f"invalid label name {name!r}: labels are one word without spaces or colons"
            )
        if prefix not in LABEL_PREFIXES:
            raise InvalidOperation(f"invalid label prefix {prefix!r}: use global, my or team")
        label = self._labels.get((prefix, name))
        if label is None:
            label = Label(prefix=prefix, name=name, id=str(self._next_label_id))
            self._next_label_id += 1
            self._labels[(prefix, name)] = label
        return label

    def _attach_label(self, content: Content, label: str | Label) -> None:
        resolved = (
            self._label_for(label, "global")
            if isinstance(label, str)
            else self._label_for(label.name, label.prefix)
        )
        if all(existing is not resolved for existing in content.labels):
            content.labels.append(resolved)

    # ------------------------------------------------------------------ moves

    def move_content(
        self,
        content_id: str,
        *,
        new_parent_id: str | None = None,
        new_space_key: str | None = None,
        position: int | None = None,
    ) -> Content:
        """Move a page (with its descendants) or a blog post, and return it.

        - ``new_parent_id``: the page becomes a child of that page (in its space).
        - ``new_space_key`` without a parent: the page becomes a root page of that space
          (pass its own space key to make it a root page where it is).
        - Neither: the page keeps its parent and only ``position`` changes.
        ``position`` is the index among the new siblings (default: last). Comments and
        attachments of the moved pages follow them. A move creates no version but counts
        as a change of every moved item.
        """
        content = self._require(content_id)
        if content.type not in (ContentType.PAGE, ContentType.BLOGPOST):
            raise InvalidOperation(
                f"content {content_id} is a {content.type}; only pages and blog posts move "
                "(comments and attachments follow their container)"
            )
        if content.status is ContentStatus.TRASHED:
            raise InvalidOperation(f"content {content_id} is trashed; restore it before moving")
        if new_parent_id is None and new_space_key is None and position is None:
            raise InvalidOperation(
                f"move of content {content_id} names no target: pass new_parent_id, "
                "new_space_key or position"
            )
        target_parent: Content | None
        if content.type is ContentType.BLOGPOST:
            if new_parent_id is not None or position is not None:
                raise InvalidOperation(
                    f"blog post {content_id} has no parent or position; pass new_space_key only"
                )
            target_parent = None
            target_space = new_space_key or content.space_key
        elif new_parent_id is not None:
            target_parent = self._require(new_parent_id)
            if new_parent_id == content_id or new_parent_id in self._descendant_page_ids(
                content_id
            ):
                raise InvalidOperation(
                    f"cannot move page {content_id} under page {new_parent_id}: the target is "
                    "the page itself or one of its descendants"
                )
            self._check_page_parent(target_parent, target_parent.space_key)
            if new_space_key is not None and new_space_key != target_parent.space_key:
                raise InvalidOperation(
                    f"new parent {new_parent_id} is in space {target_parent.space_key}, not "
                    f"{new_space_key}; omit new_space_key or pick a parent in that space"
                )
            target_space = target_parent.space_key
        elif new_space_key is not None:
            target_parent = None
            target_space = new_space_key
        else:
            target_parent = (
                self._contents[content.parent_id] if content.parent_id is not None else None
            )
            target_space = content.space_key
        self._require_space(target_space)

        moved_pages = [content_id, *self._descendant_page_ids(content_id)]
        if target_space != content.space_key:
            self._check_titles_free_in(target_space, moved_pages)

        self._unlink_structure(content)
        if target_space != content.space_key:
            self._move_to_space(moved_pages, target_space)
        content.parent_id = target_parent.id if target_parent is not None else None
        self._link_structure(content, position)
        if content.type is ContentType.PAGE:
            self._refresh_ancestors(content_id)
        for moved_id in moved_pages:
            self._touch(self._contents[moved_id])
        return content

    def _check_titles_free_in(self, space_key: str, page_ids: list[str]) -> None:
        for page_id in page_ids:
            page = self._contents[page_id]
            if not self._holds_title(page):
                continue
            if page.type is ContentType.PAGE:
                clash = self._page_titles[space_key].get(page.title)
            else:
                clash = self._blog_titles[space_key].get((page.created.date(), page.title))
            if clash is not None:
                raise InvalidOperation(
                    f"cannot move content {page_id} to space {space_key}: {clash} there "
                    f"already has the title {page.title!r}; rename one of them first"
                )

    def _move_to_space(self, page_ids: list[str], space_key: str) -> None:
        moved: list[Content] = []
        for page_id in page_ids:
            page = self._contents[page_id]
            moved.append(page)
            for attached in self._attached.get(page_id, {}).values():
                moved.extend(attached.values())
        space = self.spaces[space_key]
        for item in moved:
            self._release_title(item)
            self._unindex_in_space(item)
            old_space = self.spaces[item.space_key]
            if old_space.homepage_id == item.id:
                old_space.homepage_id = None
            item.space_key = space.key
            self._index_in_space(item)
            self._claim_title(item)
            if item.type is not ContentType.PAGE and item.id not in page_ids:
                self._touch(item)

    # ------------------------------------------------------ trash and purge

    def trash_content(self, content_id: str) -> Content:
        """Move content to the trash and return it.

        Trashing a page also trashes its descendant pages and the comments and
        attachments of all of them. Trashing a blog post trashes its comments and
        attachments, and trashing a comment trashes its replies. Items that were already
        trashed stay as they are.
        """
        content = self._require(content_id)
        if content.status is ContentStatus.TRASHED:
            raise InvalidOperation(
                f"content {content_id} is already trashed; purge it to remove it for good"
            )
        self._trash_sequence += 1
        for item in self._subtree(content_id):
            if item.status is ContentStatus.TRASHED:
                continue
            self._release_title(item)
            self._trash_group[item.id] = (self._trash_sequence, item.status)
            item.status = ContentStatus.TRASHED
            self._touch(item)
        return content

    def restore_content(self, content_id: str) -> Content:
        """Restore trashed content, with everything trashed together with it below it.

        A page whose parent is still trashed is restored as a root page of its space.
        """
        content = self._require(content_id)
        if content.status is not ContentStatus.TRASHED:
            raise InvalidOperation(
                f"content {content_id} is {content.status}, not trashed; only trashed content "
                "can be restored"
            )
        group = self._trash_group.get(content_id, (0, ContentStatus.CURRENT))[0]
        restored = [
            item
            for item in self._subtree(content_id)
            if item.status is ContentStatus.TRASHED
            and (item.id == content_id or self._trash_group.get(item.id, (-1,))[0] == group)
        ]
        if content.type in (ContentType.COMMENT, ContentType.ATTACHMENT):
            assert content.container_id is not None
            if self._contents[content.container_id].status is ContentStatus.TRASHED:
                raise InvalidOperation(
                    f"{content.type} {content_id} belongs to trashed content "
                    f"{content.container_id}; restore that first"
                )
        for item in restored:
            previous = self._previous_status(item)
            if self._holds_title(item, as_status=previous):
                self._check_title_free(item, item.space_key, item.title, as_status=previous)
        if content.type is ContentType.PAGE and content.parent_id is not None:
            parent = self._contents[content.parent_id]
            if parent.status is ContentStatus.TRASHED:
                self._unlink_structure(content)
                content.parent_id = None
                self._link_structure(content, None)
                self._refresh_ancestors(content_id)
        for item in restored:
            item.status = self._previous_status(item)
            self._trash_group.pop(item.id, None)
            self._claim_title(item)
            self._touch(item)
        return content

    def _previous_status(self, content: Content) -> ContentStatus:
        return self._trash_group.get(content.id, (0, ContentStatus.CURRENT))[1]

    def purge_content(self, content_id: str) -> None:
        """Remove trashed content and everything below it (pages, comments, attachments)."""
        content = self._require(content_id)
        if content.status is not ContentStatus.TRASHED:
            raise InvalidOperation(
                f"content {content_id} is {content.status}; only trashed content can be "
                "purged, so trash it first"
            )
        doomed = self._subtree(content_id)
        alive = [item.id for item in doomed if item.status is not ContentStatus.TRASHED]
        if alive:
            raise InvalidOperation(
                f"cannot purge content {content_id}: content below it is not trashed "
                f"({', '.join(alive[:5])}); trash or move it first"
            )
        doomed_ids = {item.id for item in doomed}
        if self._index_lag > 0:
            purged_at = self.now().timestamp()
            for item in doomed:
                self._record_indexed(item.id, purged_at, None)
        self._unlink_structure(content)
        for item in doomed:
            self._contents.pop(item.id)
            self._unindex_in_space(item)
            self._trash_group.pop(item.id, None)
            self._child_pages.pop(item.id, None)
            self._replies.pop(item.id, None)
            self._attached.pop(item.id, None)
            if item.container_id is not None and item.container_id not in doomed_ids:
                # Replies of a purged comment sit in their container's index too.
                self._attached[item.container_id][item.type].pop(item.id, None)
            space = self.spaces[item.space_key]
            if space.homepage_id == item.id:
                space.homepage_id = None
                space.changed_at = self.now().timestamp()
        self._change_sequence += 1

    # ------------------------------------------------------- index upkeep

    def _subtree(self, content_id: str) -> list[Content]:
        """Collect the content, its descendant pages and replies, and what is attached."""
        result: list[Content] = []
        stack = [content_id]
        while stack:
            current_id = stack.pop()
            item = self._contents[current_id]
            result.append(item)
            if item.type is ContentType.COMMENT:
                stack.extend(reversed(self._replies.get(current_id, [])))
                continue
            for attached in self._attached.get(current_id, {}).values():
                for attached_item in attached.values():
                    if attached_item.parent_id is None:
                        stack.append(attached_item.id)
            stack.extend(reversed(self._child_pages.get(current_id, [])))
        return result

    def _descendant_page_ids(self, content_id: str) -> list[str]:
        result: list[str] = []
        stack = list(reversed(self._child_pages.get(content_id, [])))
        while stack:
            page_id = stack.pop()
            result.append(page_id)
            stack.extend(reversed(self._child_pages.get(page_id, [])))
        return result

    def _reply_ids(self, comment_id: str) -> list[str]:
        result: list[str] = []
        stack = list(reversed(self._replies.get(comment_id, [])))
        while stack:
            reply_id = stack.pop()
            result.append(reply_id)
            stack.extend(reversed(self._replies.get(reply_id, [])))
        return result

    def _index_in_space(self, content: Content) -> None:
        _insert_in_id_order(self._by_space[content.space_key], content)
        _insert_in_id_order(self._by_space_type[content.space_key][content.type], content)

    def _unindex_in_space(self, content: Content) -> None:
        self._by_space[content.space_key].pop(content.id, None)
        self._by_space_type[content.space_key][content.type].pop(content.id, None)

    def _link_structure(self, content: Content, position: int | None) -> None:
        """Insert content into its parent's or container's child index."""
        if content.type in (ContentType.PAGE, ContentType.BLOGPOST):
            if content.type is ContentType.BLOGPOST:
                return
            if content.parent_id is None:
                siblings = self._root_pages[content.space_key]
                content.stored_ancestor_ids = []
            else:
                siblings = self._child_pages.setdefault(content.parent_id, [])
                parent = self._contents[content.parent_id]
                content.stored_ancestor_ids = [*parent.stored_ancestor_ids, parent.id]
            self._insert_sibling(siblings, content, position)
            return
        assert content.container_id is not None
        attached = self._attached.setdefault(content.container_id, {})
        _insert_in_id_order(attached.setdefault(content.type, {}), content)
        if content.type is ContentType.COMMENT and content.parent_id is not None:
            self._replies.setdefault(content.parent_id, []).append(content.id)
            parent = self._contents[content.parent_id]
            content.stored_ancestor_ids = [*parent.stored_ancestor_ids, parent.id]

    def _insert_sibling(self, siblings: list[str], content: Content, position: int | None) -> None:
        if position is None or position >= len(siblings):
            content.position = self._contents[siblings[-1]].position + 1 if siblings else 0
            siblings.append(content.id)
            return
        if position < 0:
            raise InvalidOperation(f"negative position {position} for page {content.id}")
        siblings.insert(position, content.id)
        for index in range(position, len(siblings)):
            self._contents[siblings[index]].position = index

    def _unlink_structure(self, content: Content) -> None:
        if content.type is ContentType.PAGE:
            if content.parent_id is None:
                siblings = self._root_pages[content.space_key]
            else:
                siblings = self._child_pages[content.parent_id]
            siblings.remove(content.id)
        elif content.type in (ContentType.COMMENT, ContentType.ATTACHMENT):
            assert content.container_id is not None
            self._attached[content.container_id][content.type].pop(content.id, None)
            if content.parent_id is not None:
                self._replies[content.parent_id].remove(content.id)

    def _refresh_ancestors(self, page_id: str) -> None:
        page = self._contents[page_id]
        stack = [page]
        while stack:
            current = stack.pop()
            for child_id in self._child_pages.get(current.id, []):
                child = self._contents[child_id]
                child.stored_ancestor_ids = [*current.stored_ancestor_ids, current.id]
                stack.append(child)

    # ------------------------------------------------------------ titles

    @staticmethod
    def _holds_title(content: Content, as_status: ContentStatus | None = None) -> bool:
        """Tell whether the content takes part in title uniqueness (current or archived)."""
        status = content.status if as_status is None else as_status
        return content.type in (ContentType.PAGE, ContentType.BLOGPOST) and status in (
            ContentStatus.CURRENT,
            ContentStatus.ARCHIVED,
        )

    def _check_title_free(
        self,
        content: Content,
        space_key: str,
        title: str,
        *,
        as_status: ContentStatus | None = None,
    ) -> None:
        if not self._holds_title(content, as_status=as_status):
            return
        if content.type is ContentType.PAGE:
            clash = self._page_titles[space_key].get(title)
            what = f"a page titled {title!r}"
        else:
            clash = self._blog_titles[space_key].get((content.created.date(), title))
            what = f"a blog post titled {title!r} on {content.created.date().isoformat()}"
        if clash is not None and clash != content.id:
            raise InvalidOperation(
                f"space {space_key} already has {what} (content {clash}); titles are unique "
                "per space, so pick another title"
            )

    def _claim_title(self, content: Content) -> None:
        if not self._holds_title(content):
            return
        if content.type is ContentType.PAGE:
            self._page_titles[content.space_key][content.title] = content.id
        else:
            key = (content.created.date(), content.title)
            self._blog_titles[content.space_key][key] = content.id

    def _release_title(self, content: Content) -> None:
        if content.type is ContentType.PAGE:
            titles = self._page_titles[content.space_key]
            if titles.get(content.title) == content.id:
                del titles[content.title]
        elif content.type is ContentType.BLOGPOST:
            blog_titles = self._blog_titles[content.space_key]
            key = (content.created.date(), content.title)
            if blog_titles.get(key) == content.id:
                del blog_titles[key]

    # ---------------------------------------------------------- validation

    def _require(self, content_id: str) -> Content:
        content = self._contents.get(content_id)
        if content is None:
            raise NotFound(f"no content with id {content_id!r} in this site")
        return content

    def _require_space(self, key: str) -> Space:
        space = self.spaces.get(key)
        if space is None:
            raise NotFound(f"no space with key {key!r} in this site")
        return space

    def _require_user(self, account_id: str) -> str:
        if account_id not in self.users:
            raise NotFound(f"no user with account id {account_id!r}; add the user first")
        return account_id

    def iter_versions(self, content_id: str) -> Iterator[Version]:
        """Return the versions of content, newest first, as the version list endpoint does."""
        return reversed(self._require(content_id).versions)


def _insert_in_id_order(index: dict[str, Content], content: Content) -> None:
    """Add to a dict kept in id order. Appending costs O(1) and an out-of-order id re-sorts."""
    if not index or int(next(reversed(index))) < int(content.id):
        index[content.id] = content
        return
    items = sorted([*index.values(), content], key=lambda item: int(item.id))
    index.clear()
    index.update((item.id, item) for item in items)


def _space_label(name: str) -> str:
    if not _LABEL_NAME.match(name):
        raise InvalidOperation(
            f"invalid space category {name!r}: use a label name without spaces or ':'"
        )
    return name.lower()


def _index_copy(content: Content) -> Content:
    """Copy the fields search reads, so later in-place changes do not reach the copy."""
    return dataclasses.replace(
        content,
        versions=list(content.versions),
        labels=list(content.labels),
        read_restriction_users=list(content.read_restriction_users),
        read_restriction_groups=list(content.read_restriction_groups),
        stored_ancestor_ids=list(content.stored_ancestor_ids),
        text_cache=None,
    )
