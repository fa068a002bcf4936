"""Changes to the emulated site through the emulator's control API (``/_emulator/``).

``plan_changes`` picks two edits, a move, a trash and a purge (trash, then purge), each
on a different page without children. It reads the current page documents of a stream
collection, so the same code works on a generated site and on an imported corpus.
``apply_changes`` sends the changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_SECONDS = 30.0
EDIT_PARAGRAPH = "<p>Edited by the confluence-stream demo.</p>"


class ControlError(Exception):
    """The control API rejected a request."""


@dataclass(frozen=True)
class Change:
    """One change of the site: ``action`` is edit, move, trash or purge."""

    action: str
    content_id: str
    title: str
    new_parent_id: str | None = None
    new_parent_title: str | None = None

    def describe(self) -> str:
        if self.action == "move":
            return (
                f"move  page {self.content_id} {self.title!r} under "
                f"{self.new_parent_id} {self.new_parent_title!r}"
            )
        return f"{self.action:<5} page {self.content_id} {self.title!r}"


class ControlClient:
    """A small client of the emulator's control API at ``origin`` + ``/_emulator``."""

    def __init__(self, origin: str) -> None:
        self.base = origin.rstrip("/") + "/_emulator"
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Send one control request and return its JSON; raise ``ControlError`` on 4xx/5xx."""
        url = self.base + path
        response = self.session.request(method, url, json=body, timeout=CONTROL_TIMEOUT_SECONDS)
        if response.status_code >= 400:
            raise ControlError(
                f"{method} {url} failed with status {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def site(self) -> dict[str, Any]:
        """Return the site description: counts by type and status, clock, base URLs."""
        result: dict[str, Any] = self.call("GET", "/site")
        return result


def plan_changes(pages: Iterable[Mapping[str, Any]]) -> list[Change]:
    """Choose two edits, a move, a trash and a purge among current page documents.

    Every change touches a different page without children, so no change removes or
    moves a page that another change uses. The move's new parent is a page of the same
    space that is neither the moved page nor its parent. Raises ``ValueError`` when the
    site has fewer than five such pages.
    """
    current = [page for page in pages if page.get("status") == "current"]
    parents = {page.get("parent_id") for page in current}
    leaves = sorted(
        (page for page in current if page["id"] not in parents and page.get("parent_id")),
        key=lambda page: (page["space_key"], int(page["id"]) if page["id"].isdigit() else 0),
    )
    if len(leaves) < 5:
        raise ValueError(
            f"the site has {len(leaves)} current pages with a parent and no children; the "
            "demo changes five, so generate a larger site"
        )
    edit_a, edit_b, moved, trashed, purged = leaves[:5]
    changed_ids = {page["id"] for page in (edit_a, edit_b, moved, trashed, purged)}
    candidates = [
        page
        for page in current
        if page["space_key"] == moved["space_key"]
        and page["id"] not in changed_ids
        and page["id"] != moved.get("parent_id")
    ]
    if not candidates:
        raise ValueError(
            f"no page in space {moved['space_key']} can become the new parent of page "
            f"{moved['id']}; generate a larger site"
        )
    # The lowest id, so that the same site gives the same move in every run, whatever
    # order the database returned the pages in.
    new_parent = min(candidates, key=lambda page: (len(page["id"]), page["id"]))
    return [
        Change("edit", edit_a["id"], edit_a["title"]),
        Change("edit", edit_b["id"], edit_b["title"]),
        Change("move", moved["id"], moved["title"], new_parent["id"], new_parent["title"]),
        Change("trash", trashed["id"], trashed["title"]),
        Change("purge", purged["id"], purged["title"]),
    ]


def apply_changes(
    client: ControlClient, changes: Iterable[Change], bodies: Mapping[str, str]
) -> None:
    """Send ``changes`` to the control API; ``bodies`` maps content ids to current bodies."""
    for change in changes:
        path = f"/content/{change.content_id}"
        if change.action == "edit":
            body = bodies.get(change.content_id, "") + EDIT_PARAGRAPH
            client.call("POST", f"{path}/edit", {"body": body, "message": "demo edit"})
        elif change.action == "move":
            client.call("POST", f"{path}/move", {"parent_id": change.new_parent_id})
        elif change.action == "trash":
            client.call("POST", f"{path}/trash")
        elif change.action == "purge":
            client.call("POST", f"{path}/trash")
            client.call("POST", f"{path}/purge")
        else:
            raise ValueError(
                f"unknown change action {change.action!r}; use edit, move, trash or purge"
            )
        log.info("site changed action=%s content_id=%s", change.action, change.content_id)
