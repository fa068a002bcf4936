"""The demo's choice of site changes, on page documents built in the test."""

from __future__ import annotations

from typing import Any

import pytest

from demo.changes import plan_changes


def page(content_id: str, parent_id: str | None, space_key: str = "ENG") -> dict[str, Any]:
    return {
        "id": content_id,
        "title": f"Page {content_id}",
        "status": "current",
        "space_key": space_key,
        "parent_id": parent_id,
    }


def tree() -> list[dict[str, Any]]:
    """A root page 1 with children 2..7; page 2 has children 8 and 9; page 10 is trashed."""
    pages = [page("1", None), *(page(str(n), "1") for n in range(2, 8))]
    pages += [page("8", "2"), page("9", "2")]
    pages.append({**page("10", "1"), "status": "trashed"})
    return pages


def test_plan_changes_uses_distinct_leaves() -> None:
    changes = plan_changes(tree())

    assert [change.action for change in changes] == ["edit", "edit", "move", "trash", "purge"]
    changed = [change.content_id for change in changes]
    assert len(set(changed)) == 5
    assert "1" not in changed
    assert "2" not in changed
    assert "10" not in changed


def test_plan_changes_moves_under_another_page() -> None:
    changes = plan_changes(tree())
    move = next(change for change in changes if change.action == "move")
    parents = {item["id"]: item["parent_id"] for item in tree()}

    assert move.new_parent_id is not None
    assert move.new_parent_id != move.content_id
    assert move.new_parent_id != parents[move.content_id]
    assert move.new_parent_id not in {change.content_id for change in changes}


def test_plan_changes_rejects_small_site() -> None:
    pages = [page("1", None), page("2", "1"), page("3", "1")]

    with pytest.raises(ValueError, match="2 current pages with a parent and no children"):
        plan_changes(pages)
