"""Queries of what the consumers wrote to MongoDB, formatted for the demo's output.

Stream documents (``source_{id}_stream``) with ``current: true`` are the newest version
of each space, content item and relationship. A relationship whose current version has
``op: remove`` is an edge that no longer exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.database import Database

CONTENT_TYPES = ("page", "blogpost", "comment", "attachment")
CONTENT_LABELS = {
    "page": "pages",
    "blogpost": "blog posts",
    "comment": "comments",
    "attachment": "attachments",
}
JOB_COLLECTION = "job_history"


def stream_collection(source_id: str) -> str:
    return f"source_{source_id}_stream"


@dataclass
class StreamCounts:
    """Current documents of a stream collection by kind."""

    spaces: int = 0
    content: Counter[str] = field(default_factory=Counter)
    edges: Counter[str] = field(default_factory=Counter)
    removed_edges: Counter[str] = field(default_factory=Counter)


def count_stream(database: Database[dict[str, Any]], source_id: str) -> StreamCounts:
    """Count the current space, content and relationship documents of ``source_id``."""
    counts = StreamCounts()
    projection = {"entity_type": 1, "type": 1, "relation": 1, "op": 1}
    for document in database[stream_collection(source_id)].find({"current": True}, projection):
        kind = document.get("entity_type")
        if kind == "space":
            counts.spaces += 1
        elif kind == "content":
            counts.content[str(document.get("type"))] += 1
        elif kind == "relationship" and document.get("op") == "remove":
            counts.removed_edges[str(document.get("relation"))] += 1
        elif kind == "relationship":
            counts.edges[str(document.get("relation"))] += 1
    return counts


def jobs_of(database: Database[dict[str, Any]], source_id: str) -> list[dict[str, Any]]:
    """Return the job documents of ``source_id``, oldest first."""
    return list(database[JOB_COLLECTION].find({"source_id": source_id}).sort("_id", 1))


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    return "-" if value is None else str(value)


def job_seconds(job: Mapping[str, Any]) -> float | None:
    """Return the job's run time in seconds, or None while it runs."""
    started, finished = job.get("started_at"), job.get("finished_at")
    if isinstance(started, datetime) and isinstance(finished, datetime):
        return (finished - started).total_seconds()
    return None


def format_counts(counts: StreamCounts) -> list[str]:
    lines = [f"  spaces        {counts.spaces:>7}"]
    for kind in CONTENT_TYPES:
        lines.append(f"  {CONTENT_LABELS[kind]:<13} {counts.content.get(kind, 0):>7}")
    lines.append(f"  relationships {sum(counts.edges.values()):>7}")
    for relation, number in sorted(counts.edges.items()):
        lines.append(f"    {relation:<15} {number:>7}")
    if counts.removed_edges:
        removed = ", ".join(
            f"{relation}={n}" for relation, n in sorted(counts.removed_edges.items())
        )
        lines.append(f"  removed edges: {removed}")
    return lines


def format_job(job: Mapping[str, Any]) -> list[str]:
    """Return the lines that describe one job document."""
    counts = job.get("counts") or {}
    items = sum(number for kind, number in counts.items() if kind != "structure_listing")
    seconds = job_seconds(job)
    rate = f"{items / seconds:.0f} items/s" if seconds else "-"
    errors = job.get("errors") or []
    lines = [
        f"  job {job['_id']}: status={job.get('status')} mode={job.get('mode')}",
        f"    window       {_time(job.get('window_start'))} .. {_time(job.get('window_end'))}",
        "    counts       " + " ".join(f"{kind}={n}" for kind, n in sorted(counts.items())),
        f"    API calls    {job.get('api_calls')}  retries {job.get('retries')}  "
        f"rate-limit waits {job.get('rate_limit_waits')} "
        f"({float(job.get('rate_limit_wait_seconds') or 0):.1f} s)",
        f"    duration     {seconds:.1f} s, {rate}" if seconds else "    duration     -",
        f"    errors       {len(errors)}",
    ]
    for error in errors[:5]:
        lines.append(f"      {error}")
    return lines


def changed_documents(
    database: Database[dict[str, Any]], source_id: str, job_id: str
) -> list[dict[str, Any]]:
    """Return the stream documents written from the records of ``job_id``."""
    projection = {
        "entity_type": 1,
        "type": 1,
        "id": 1,
        "title": 1,
        "version_number": 1,
        "status": 1,
        "relation": 1,
        "op": 1,
        "from_id": 1,
        "to_id": 1,
        "to_space_key": 1,
        "to_title": 1,
        "key": 1,
        "current": 1,
    }
    return list(
        database[stream_collection(source_id)].find({"job_id": job_id}, projection).sort("_id", 1)
    )


def format_changed(documents: list[dict[str, Any]], limit: int = 40) -> list[str]:
    kinds = Counter(str(document.get("entity_type")) for document in documents)
    operations = Counter(
        str(document.get("op"))
        for document in documents
        if document.get("entity_type") == "relationship"
    )
    lines = [
        f"  content versions {kinds['content']}, spaces {kinds['space']}, edge records "
        f"{kinds['relationship']} (upsert {operations['upsert']}, remove {operations['remove']})"
    ]
    for document in documents[:limit]:
        kind = document.get("entity_type")
        if kind == "content":
            lines.append(
                f"  {document['type']:<10} {document['id']:>8} v{document.get('version_number')} "
                f"{document.get('status')} {document.get('title')!r}"
            )
        elif kind == "relationship":
            # An unresolved link has no target id; show the space key and title it names.
            target = document.get("to_id") or (
                f"{document.get('to_space_key')}:{document.get('to_title')!r}"
            )
            lines.append(
                f"  edge {document.get('op'):<6} {document.get('from_id')} "
                f"{document.get('relation')} {target}"
            )
        else:
            lines.append(f"  space      {document.get('key')}")
    if len(documents) > limit:
        lines.append(f"  ... and {len(documents) - limit} more")
    return lines
