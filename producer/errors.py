"""Errors of the producer, grouped by what the caller does next.

::

    ProducerError
    +-- ConfigurationError  invalid sources file or secrets: fail at start-up (exit 2)
    +-- FatalError          fail the job: invalid_grant, 401 after a refresh, unknown space
    +-- RetriableError      429/5xx/timeouts/connection errors still failing after retries
    +-- SkippableError      403 on one space, 404 on a vanished page, unreadable body:
                            record the error on the job and go on with the next unit

Every error carries the evidence of the request that failed, when there was one: the
method, the URL with secrets removed, the HTTP status and an excerpt of the response body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EXCERPT_CHARS = 500


def excerpt_of(text: str | bytes | None) -> str | None:
    """Return at most the first 500 characters of a response body, or None when empty."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if not text:
        return None
    if len(text) <= EXCERPT_CHARS:
        return text
    return text[: EXCERPT_CHARS - 3] + "..."


class ProducerError(Exception):
    """Root of the producer's errors; carries the failed request's evidence."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.excerpt = excerpt_of(excerpt)

    def evidence(self) -> dict[str, Any]:
        """Return the request evidence as a dict, e.g. for the job record's error list."""
        return {
            "kind": type(self).__name__,
            "message": self.message,
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "excerpt": self.excerpt,
        }

    def __str__(self) -> str:
        parts = [self.message]
        if self.method is not None or self.url is not None:
            request = " ".join(part for part in (self.method, self.url) if part)
            status = f" -> {self.status}" if self.status is not None else ""
            parts.append(f"(request: {request}{status})")
        return " ".join(parts)


class ConfigurationError(ProducerError):
    """Invalid settings; ``problems`` lists every problem, each naming key, value and fix."""

    def __init__(self, problems: Iterable[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration{where} ({count} {noun}):\n{lines}")


class FatalError(ProducerError):
    """An error that fails the whole job."""


class RetriableError(ProducerError):
    """A transient failure that persisted through every retry."""

    def __init__(self, message: str, *, attempts: int = 0, **evidence: Any) -> None:
        super().__init__(message, **evidence)
        self.attempts = attempts


class SkippableError(ProducerError):
    """A failure confined to one unit (space, page, body): record it and continue."""


class IncompleteListingError(SkippableError):
    """A paginated listing that stopped before its end (a repeated cursor or start).

    The listing's unit (a space, a page's children) is incomplete: record the error, and
    never derive deletions from what was listed.
    """
