"""Spaces and users as CQL search entries, for ``type = space`` and ``type = user``.

``/search`` returns one result per space (``entityType: "space"``) or user
(``entityType: "user"``) when the query's ``type`` clause names them. These adapters give
a space or a user the attributes the CQL evaluator reads from content, so the other
clauses (``space``, ``title``, ``text``, ``label``, dates) filter and order them as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from emulator.model import Site, Space, User

# A user has no creation or change time in the model, so user entries carry this one.
# NOTE: which dates Cloud reports for a user hit is not recorded.
USER_ENTRY_TIME = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SpaceEntry:
    """A space as the CQL evaluator reads it: its name is the title, its key the space."""

    space: Space

    @property
    def id(self) -> str:
        # A prefix keeps space ids apart from content ids in one result list.
        return f"space:{self.space.id}"

    @property
    def type(self) -> str:
        return "space"

    @property
    def status(self) -> str:
        # Archived spaces are left out through the space status, as their content is.
        return "current"

    @property
    def title(self) -> str:
        return self.space.name

    @property
    def space_key(self) -> str:
        return self.space.key

    @property
    def parent_id(self) -> str | None:
        return None

    @property
    def created(self) -> datetime:
        return self.space.created

    @property
    def last_modified(self) -> datetime:
        if self.space.changed_at > self.space.created.timestamp():
            return datetime.fromtimestamp(self.space.changed_at, UTC)
        return self.space.created

    @property
    def ancestor_ids(self) -> Sequence[str]:
        return ()

    @property
    def label_names(self) -> Sequence[str]:
        return self.space.labels

    @property
    def text(self) -> str:
        return f"{self.space.name} {self.space.description}"


@dataclass(frozen=True)
class UserEntry:
    """A user as the CQL evaluator reads it: the display name is the title and the text."""

    user: User

    @property
    def id(self) -> str:
        return f"user:{self.user.account_id}"

    @property
    def type(self) -> str:
        return "user"

    @property
    def status(self) -> str:
        return "current"

    @property
    def title(self) -> str:
        return self.user.display_name

    @property
    def space_key(self) -> str:
        return ""

    @property
    def parent_id(self) -> str | None:
        return None

    @property
    def created(self) -> datetime:
        return USER_ENTRY_TIME

    @property
    def last_modified(self) -> datetime:
        return USER_ENTRY_TIME

    @property
    def ancestor_ids(self) -> Sequence[str]:
        return ()

    @property
    def label_names(self) -> Sequence[str]:
        return ()

    @property
    def text(self) -> str:
        return self.user.display_name


SearchEntry = SpaceEntry | UserEntry


def entries_for(site: Site, types: set[str] | None) -> list[SearchEntry]:
    """Return the space and user entries that a query's ``type`` clause names.

    Only a query that names ``space`` or ``user`` in its ``type`` clause gets them.
    NOTE: whether Cloud mixes spaces and users into a query without a ``type`` clause is
    not recorded; such a query returns content only here.
    """
    if types is None:
        return []
    entries: list[SearchEntry] = []
    if "space" in types:
        entries.extend(SpaceEntry(space) for space in site.spaces.values())
    if "user" in types:
        entries.extend(UserEntry(user) for user in site.users.values())
    return entries
