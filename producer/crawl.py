"""The crawl job: the five steps of one run for one source.

1. Start: allocate a job id, read the job history to choose full or incremental mode
   and the window, publish a ``running`` Job record.
2. Spaces: list the configured spaces, fail the job on a configured key that does not
   exist, publish one Space record per space.
3. Content: per space and content type, list the items modified in the window with
   their bodies and metadata in list calls, publishing one Content record per item.
4. Structure: per space, list every current item of the crawled content types cheaply
   (ids, types, parents or containers, versions, status) and publish it as
   StructureListing chunks ending in ``complete``, or in ``aborted`` when the listing
   failed part-way. Pages and blog posts are always listed, comments and attachments
   when the source crawls them.
5. Finish: wait until the broker acknowledged every record, then publish the final Job
   record: ``succeeded``, ``partial`` (units skipped after errors) or ``failed``.

Units of steps 3 and 4 (one listing each) run on a thread pool of ``concurrency``
workers, longest listings first, and each unit requests its next page while it publishes
the current one. Records are published page by page, so no space is ever held in memory.

Listing strategy per deployment:

- ``cloud`` and ``datacenter``, full mode: offset lists ``/space/{key}/content/{type}``.
- Incremental mode, and comments and attachments in every mode: CQL search
  ``/content/search`` (cursor paging on Cloud, ``start`` paging on Data Center).
- ``cloud-oauth``: the gateway returns 410 Gone for deprecated v1 reads, so every
  content listing goes through CQL search.

Structure listings per deployment: pages and blog posts through the offset lists of full
mode, comments and attachments through one CQL search per space (``type in (comment,
attachment)``, expanding only ``container`` and ``version``). On a generated site that
search takes one request per 1,000 items, where child listings per page and blog post
would take two or more requests per container. ``cloud-oauth`` lists all four types in
one CQL search. A full job on ``cloud`` and ``datacenter`` walks those offset lists of
pages and blog posts for their content already, so their rows also fill the structure
listing, and no second walk of the same lists is requested.

Deletions are not listed as records: trashed and purged items are missing from the next
complete structure listing of their space, whose ``content_types`` names the types it
covers, and consumers compare against it. Moves create no new version, so an incremental
job finds them only in that listing too.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from importlib import metadata
from typing import Any, Protocol
from urllib.parse import quote

from producer.client import RequestStats
from producer.config import SourceConfig
from producer.errors import (
    ConfigurationError,
    FatalError,
    ProducerError,
    RetriableError,
    SkippableError,
)
from producer.history import JobError, JobState, last_successful_job
from producer.paging import Page, cursor_pages, datacenter_search_pages, offset_pages
from producer.progress import Progress
from producer.publisher import DeliveryError, Publisher, RecordTooLargeError
from producer.records import (
    RecordContext,
    RecordMappingError,
    content_record,
    site_base_of,
    space_record,
    structure_item,
)
from producer.window import JobMode, Window, compute_window, cql_window_clause, resolve_zone
from schemas.catalogue import RecordType
from schemas.keys import content_key, job_key, new_job_id, space_key, structure_key

log = logging.getLogger(__name__)

CONTENT_KINDS = ("page", "blogpost", "comment", "attachment")
STRUCTURE_CHUNK_SIZE = 500
STRUCTURE_PAGE_SIZE = 1000
# Expansions per content type. Confluence rejects more than 8 sub-expansions with a 400,
# and Data Center returns 500 for permission expansions of non-administrators, so each
# list requests only what the records use. Read restrictions are optional: a listing
# that fails with a server error before its first page is retried without them.
_CORE_EXPAND = {
    "page": ["body.storage", "version", "ancestors", "history"],
    "blogpost": ["body.storage", "version", "history"],
    "comment": ["body.storage", "version", "ancestors", "container", "history"],
    "attachment": ["version", "container", "history"],
}
_LABELS_EXPAND = "metadata.labels"
_RESTRICTIONS_EXPAND = [
    "restrictions.read.restrictions.user",
    "restrictions.read.restrictions.group",
]
_STRUCTURE_EXPAND = "ancestors,version"
# Comments and attachments take their parent from the container, not from ancestors.
_CONTAINED_STRUCTURE_EXPAND = "container,version"
_CONTAINED_KINDS = ("comment", "attachment")
# Types whose structure listing walks the same offset list as their full-mode content.
_SHARED_KINDS = ("page", "blogpost")
# Maximum and default page size of /content/{id}/label.
_LABEL_PAGE_SIZE = 200
_SPACE_EXPAND = "description.plain,history"
_OPTIONAL_EXPANSION_STATUSES = frozenset({500, 501})
# Order in which the units of all spaces start, longest listings first: a listing is
# walked one page after the other, so a long one that starts last keeps one worker busy
# while the others idle. Pages usually outnumber the other types, and a structure
# listing takes few requests at 1,000 rows each, but more than most blog post listings.
_UNIT_ORDER = ("page", "comment", "attachment", "structure", "blogpost")


class CrawlClient(Protocol):
    """The part of ``ConfluenceClient`` the crawl job uses."""

    stats: RequestStats

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]: ...

    def current_user(self) -> dict[str, Any]: ...


class CrawlCancelled(Exception):
    """Raised inside a unit when another unit failed the job."""


@dataclass(frozen=True)
class CrawlOptions:
    """Options of one run that do not come from the sources file."""

    full: bool = False
    since: datetime | None = None
    flush_timeout: float = 120.0


@dataclass
class JobResult:
    """Outcome of a job: its final Job record and how long it ran."""

    record: dict[str, Any]
    duration_seconds: float
    delivery_failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def job_id(self) -> str:
        return str(self.record["job_id"])

    @property
    def exit_code(self) -> int:
        """0 succeeded, 1 failed, 3 partial (2 is for configuration errors, before a job)."""
        return {"succeeded": 0, "partial": 3}.get(self.status, 1)


def producer_version() -> str:
    try:
        return metadata.version("confluence-stream")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def cql_string(value: str) -> str:
    """Quote ``value`` as a CQL string: escape backslashes, then double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class _SpaceTally:
    """Units still running for one space and what they produced, for the per-space log line."""

    remaining: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    structure: str = "not listed"


class CrawlJob:
    """One run of the crawl for one source. Create it, then call ``run()`` once."""

    def __init__(
        self,
        source: SourceConfig,
        client: CrawlClient,
        publisher: Publisher,
        load_history: Callable[[], Iterable[Mapping[str, Any]]],
        *,
        options: CrawlOptions | None = None,
        progress: Progress | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.client = client
        self.publisher = publisher
        self.load_history = load_history
        self.options = options or CrawlOptions()
        self.progress = progress or Progress(enabled=False)
        self.clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._tallies: dict[str, _SpaceTally] = {}
        self._space_ids: dict[str, int] = {}
        self._archived_spaces: set[str] = set()
        self._site_base: str | None = None
        self._zone: tzinfo | None = None
        self._fetch_pool: ThreadPoolExecutor | None = None
        self.state: JobState | None = None

    # --- step 1 and 5: the job around the steps ----------------------------------------

    def run(self) -> JobResult:
        """Run the job and return its outcome, also for a failed job.

        Raises only when the job cannot start: ``HistoryReadError`` when the job history
        is unreadable, ``ConfigurationError`` for a ``since`` after the job start.
        """
        started_monotonic = time.monotonic()
        window, state = self._start()
        failed = self._run_steps(window, state)
        return self._finish(state, failed, time.monotonic() - started_monotonic)

    def _start(self) -> tuple[Window, JobState]:
        # Job records store milliseconds, so the watermark is kept at that precision too.
        now = self.clock()
        started_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        job_id = new_job_id(started_at)
        window = self._choose_window(started_at, job_id)
        state = JobState(
            job_id=job_id,
            source_id=self.source.id,
            mode=window.mode.value,
            started_at=started_at,
            window_start=window.start,
            window_end=window.end,
            previous_job_id=window.previous_job_id,
            producer_version=producer_version(),
        )
        self.state = state
        log.info(
            "job started job_id=%s source=%s mode=%s window_start=%s window_end=%s previous_job=%s",
            job_id,
            self.source.id,
            window.mode.value,
            window.start.isoformat() if window.start else "-",
            window.end.isoformat(),
            window.previous_job_id or "-",
        )
        self._publish_job(state)
        return window, state

    def _run_steps(self, window: Window, state: JobState) -> bool:
        """Run steps 2 to 4; return True when a fatal error failed the job."""
        try:
            self._crawl(window, state)
        except ProducerError as error:
            # Outside a unit (the space listing, the user's time zone) every error is fatal,
            # because without the spaces there is nothing to crawl.
            self._record_error("job", error, fatal=True)
            return True
        except Exception as error:  # A bug must still end the job visibly as failed.
            log.exception("job failed with an unexpected error job_id=%s", state.job_id)
            state.add_error(
                JobError(unit="job", message=f"{type(error).__name__}: {error}", fatal=True)
            )
            return True
        return False

    def _finish(self, state: JobState, failed: bool, duration: float) -> JobResult:
        """Wait for every delivery, then publish the final Job record (step 5)."""
        delivery_failures = self._finish_delivery(state)
        self._copy_client_stats(state)
        state.finished_at = self.clock()
        if failed or delivery_failures:
            state.status = "failed"
        elif state.errors:
            state.status = "partial"
        else:
            state.status = "succeeded"
        record = self._publish_job(state)

        try:
            self.publisher.finish(self.options.flush_timeout)
        except DeliveryError as error:
            # The final state could not be stored, so the job counts as failed for the caller.
            log.error("final job record not acknowledged job_id=%s error=%s", state.job_id, error)
            record = dict(record, status="failed")
            delivery_failures.extend(error.failures)

        counts = " ".join(f"{kind}={count}" for kind, count in sorted(record["counts"].items()))
        log.info(
            "job finished job_id=%s status=%s %s api_calls=%d retries=%d errors=%d seconds=%.1f",
            state.job_id,
            record["status"],
            counts or "records=0",
            record["api_calls"],
            record["retries"],
            len(record["errors"]),
            duration,
        )
        return JobResult(
            record=record, duration_seconds=duration, delivery_failures=delivery_failures
        )

    def _choose_window(self, started_at: datetime, job_id: str) -> Window:
        previous_end: datetime | None = None
        previous_id: str | None = None
        if not self.options.full and self.options.since is None:
            previous = last_successful_job(self.load_history(), self.source.id)
            if previous is not None:
                previous_end = previous["window_end"]
                previous_id = str(previous["job_id"])
        try:
            window = compute_window(
                started_at,
                previous_window_end=previous_end,
                previous_job_id=previous_id,
                overlap=self.source.overlap,
                full=self.options.full,
                since=self.options.since,
            )
        except ValueError as error:
            raise ConfigurationError([str(error)]) from None
        log.debug("window chosen job_id=%s window=%s", job_id, window)
        return window

    def _publish_job(self, state: JobState) -> dict[str, Any]:
        record = state.to_record()
        self.publisher.publish(RecordType.JOB, job_key(self.source.id, state.job_id), record)
        return record

    def _finish_delivery(self, state: JobState) -> list[str]:
        try:
            self.publisher.finish(self.options.flush_timeout)
        except DeliveryError as error:
            state.add_error(JobError(unit="delivery", message=str(error), fatal=True))
            return list(error.failures) or [str(error)]
        return []

    def _copy_client_stats(self, state: JobState) -> None:
        snapshot = self.client.stats.snapshot()
        state.api_calls = int(snapshot.get("api_calls", 0))
        state.retries = int(snapshot.get("retries", 0))
        state.rate_limit_waits = int(snapshot.get("rate_limit_waits", 0))
        state.rate_limit_wait_seconds = float(snapshot.get("rate_limit_wait_seconds", 0.0))

    def _record_error(self, unit: str, error: ProducerError, *, fatal: bool = False) -> None:
        assert self.state is not None
        log_method = log.error if fatal else log.warning
        log_method(
            "%s unit=%s error=%s method=%s url=%s status=%s",
            "job failed" if fatal else "unit skipped",
            unit,
            error.message,
            error.method or "-",
            error.url or "-",
            error.status if error.status is not None else "-",
        )
        self.state.add_error(
            JobError(
                unit=unit,
                message=f"{type(error).__name__}: {error.message}",
                method=error.method,
                url=error.url,
                status=error.status,
                excerpt=error.excerpt,
                fatal=fatal,
            )
        )

    # --- steps 2 to 4 -------------------------------------------------------------------

    def _crawl(self, window: Window, state: JobState) -> None:
        spaces = self._fetch_spaces(state)
        if window.mode is JobMode.INCREMENTAL:
            self._zone = self._query_zone()
        kinds = [kind for kind in CONTENT_KINDS if kind in self.source.content_types]
        # A full job lists pages and blog posts through the same offset lists that the
        # structure listing walks, so their rows also fill the structure listing and the
        # structure unit walks only the other types.
        shared = [
            kind for kind in _SHARED_KINDS if kind in kinds and not self._uses_search(kind, window)
        ]
        own = [kind for kind in self.structure_types() if kind not in shared]
        units: list[tuple[int, str, Callable[[], None]]] = []
        listings: list[_StructureListing] = []
        for space in spaces:
            key = str(space["key"])
            space_id = space.get("id")
            if isinstance(space_id, int):
                self._space_ids[key] = space_id
            if space.get("status") == "archived":
                self._archived_spaces.add(key)
            self._tallies[key] = _SpaceTally(remaining=len(kinds) + (1 if own else 0))
            listing = _StructureListing(
                self,
                key,
                space_id if isinstance(space_id, int) else None,
                parts=len(shared) + (1 if own else 0),
            )
            listings.append(listing)
            for kind in kinds:
                part = listing if kind in shared else None
                unit = self._content_unit(key, kind, window, part)
                units.append((_UNIT_ORDER.index(kind), key, unit))
            if own:
                units.append(
                    (_UNIT_ORDER.index("structure"), key, self._structure_unit(listing, own))
                )
        # A stable sort keeps the spaces in listing order within each kind of unit.
        units.sort(key=lambda unit: unit[0])
        try:
            self._run_units([(key, unit) for _, key, unit in units])
        finally:
            for listing in listings:
                listing.abandon()

    def _run_units(self, units: list[tuple[str, Callable[[], None]]]) -> None:
        if not units:
            return
        workers = max(1, min(self.source.concurrency, len(units)))
        # Each running unit has at most one page request waiting in the fetch pool, so
        # the fetch pool needs as many threads as the unit pool and never queues.
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as fetch_pool,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crawl") as pool,
        ):
            self._fetch_pool = fetch_pool
            try:
                futures: list[Future[None]] = [
                    pool.submit(self._guarded, space, unit) for space, unit in units
                ]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                failure = next(
                    (future.exception() for future in done if future.exception() is not None),
                    None,
                )
                if failure is not None:
                    self._stop.set()
                    for future in pending:
                        future.cancel()
                    wait(pending)
                    raise failure
            finally:
                self._fetch_pool = None

    def _prefetched(self, pages: Iterator[Page]) -> Iterator[Page]:
        """Yield ``pages``, requesting the next page while the caller processes this one.

        The paginator still builds each request from the page before it, and a listing
        still has at most one request in flight. Outside ``_run_units`` there is no fetch
        pool, and the pages come one after the other.
        """
        fetch_pool = self._fetch_pool
        if fetch_pool is None:
            yield from pages
            return
        pending: Future[Page | None] | None = fetch_pool.submit(next, pages, None)
        try:
            while pending is not None:
                page = pending.result()
                pending = None
                if page is None:
                    return
                pending = fetch_pool.submit(next, pages, None)
                yield page
        finally:
            if pending is not None:
                # The caller stopped early, after an error or a cancelled job. The
                # paginator can be closed only after its running request returned.
                wait([pending])
            if isinstance(pages, Generator):
                pages.close()

    def _guarded(self, space: str, unit: Callable[[], None]) -> None:
        if self._stop.is_set():
            return
        try:
            unit()
        except CrawlCancelled:
            return
        finally:
            self._space_unit_done(space)

    def _space_unit_done(self, space: str) -> None:
        with self._lock:
            tally = self._tallies[space]
            tally.remaining -= 1
            if tally.remaining:
                return
        counts = " ".join(f"{kind}={count}" for kind, count in sorted(tally.counts.items()))
        log.info(
            "space done key=%s %s errors=%d structure=%s",
            space,
            counts or "records=0",
            tally.errors,
            tally.structure,
        )

    def _tally(self, space: str, kind: str, amount: int = 1) -> None:
        with self._lock:
            tally = self._tallies.get(space)
            if tally is not None:
                tally.counts[kind] = tally.counts.get(kind, 0) + amount

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise CrawlCancelled

    # --- step 2: spaces -------------------------------------------------------------------

    def _fetch_spaces(self, state: JobState) -> list[dict[str, Any]]:
        selection = self.source.spaces
        listed = self._list_spaces()
        by_key = {str(space.get("key")): space for space in listed if space.get("key")}
        missing = [key for key in selection.include if key not in by_key]
        if missing:
            raise FatalError(
                f"configured space key(s) {', '.join(repr(key) for key in missing)} of source "
                f"{self.source.id!r} do not exist or are not visible to the API user; fix "
                f"spaces.include in the sources file or grant the user access"
            )
        chosen: list[dict[str, Any]] = []
        for key, space in by_key.items():
            if selection.include and key not in selection.include:
                continue
            if key in selection.exclude:
                continue
            if (
                space.get("type") not in selection.types
                or space.get("status") not in selection.statuses
            ):
                if key in selection.include:
                    # A space the sources file names but the job leaves out is a visible
                    # error on the job, like a key that does not exist.
                    self._record_error(
                        f"space:{key}",
                        SkippableError(
                            f"configured space {key!r} of source {self.source.id!r} is a "
                            f"{space.get('type')} space with status {space.get('status')!r}, "
                            f"outside spaces.types {sorted(selection.types)} and "
                            f"spaces.statuses {sorted(selection.statuses)}, so it was not "
                            "crawled; add its type or status there, or remove the key "
                            "from spaces.include"
                        ),
                    )
                continue
            chosen.append(space)
        context = RecordContext(self.source.id, state.job_id, self._site_base)
        for space in chosen:
            record = space_record(space, context, self.clock())
            self.publisher.publish(
                RecordType.SPACE, space_key(self.source.id, record["key"]), record
            )
            state.count("space")
            self.progress.record("space")
        log.info(
            "spaces listed source=%s listed=%d selected=%d keys=%s",
            self.source.id,
            len(by_key),
            len(chosen),
            ",".join(str(space["key"]) for space in chosen) or "-",
        )
        return chosen

    def _list_spaces(self) -> list[dict[str, Any]]:
        limit = min(self.source.page_size * 4, 500)
        params: dict[str, str | int] = {"expand": _SPACE_EXPAND}
        try:
            # No bodies here, so a smaller page would not help: keep every retry for the page.
            pages = offset_pages(self.client, "/space", params, limit=limit, shrink=False)
            return self._collect(pages)
        except ProducerError as error:
            if self.source.deployment != "cloud-oauth" or error.status != 410:
                raise
            log.info("GET /space returned 410 Gone on the OAuth gateway; listing spaces by CQL")
        return self._list_spaces_by_search()

    def _collect(self, pages: Iterator[Page]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in pages:
            if self._site_base is None:
                self._site_base = site_base_of(page.raw)
            items.extend(page.results)
        return items

    def _list_spaces_by_search(self) -> list[dict[str, Any]]:
        """List spaces through ``/search`` (``type = space``), for roots without ``/space``."""
        params: dict[str, str | int] = {"cql": "type = space", "expand": "space.description.plain"}
        if "archived" in self.source.spaces.statuses:
            params["includeArchivedSpaces"] = "true"
        spaces = [
            result["space"]
            for result in self._collect(cursor_pages(self.client, "/search", params, limit=100))
            if isinstance(result.get("space"), dict)
        ]
        known = {space.get("key") for space in spaces}
        for key in self.source.spaces.include:
            if key not in known:
                found = self._probe_space(key)
                if found is not None:
                    spaces.append(found)
        return spaces

    def _probe_space(self, key: str) -> dict[str, Any] | None:
        """Find a configured space through one item of its content, when CQL lists no spaces."""
        params: dict[str, str | int] = {
            "cql": f"space = {cql_string(key)}",
            "expand": "space.description.plain,space.history",
            "limit": 1,
        }
        page = self.client.get("/content/search", params)
        if self._site_base is None:
            self._site_base = site_base_of(page)
        for item in page.get("results") or []:
            space = item.get("space")
            if isinstance(space, dict) and space.get("key") == key:
                return space
        return None

    def _query_zone(self) -> tzinfo:
        """Return the zone CQL date literals are read in: configured, else the user's."""
        name = self.source.time_zone
        if name is None:
            user = self.client.current_user()
            found = user.get("timeZone")
            if not isinstance(found, str) or not found:
                raise FatalError(
                    f"the API user's time zone is hidden (GET /user/current returned no "
                    f"timeZone), so the CQL window of source {self.source.id!r} cannot be "
                    f"written; set time_zone in the sources file to the user's zone"
                )
            name = found
        try:
            zone = resolve_zone(name)
        except ValueError as error:
            raise FatalError(f"{error} (time zone of source {self.source.id!r})") from None
        log.info("CQL date literals are read in zone=%s", name)
        return zone

    # --- step 3: content ------------------------------------------------------------------

    def _expand(self, kind: str, *, optional: bool) -> list[str]:
        expand = list(_CORE_EXPAND[kind])
        if "label" in self.source.content_types and kind != "attachment":
            expand.append(_LABELS_EXPAND)
        if optional and kind in ("page", "blogpost"):
            expand.extend(_RESTRICTIONS_EXPAND)
        return expand

    def _uses_search(self, kind: str, window: Window) -> bool:
        # NOTE: CQL's index lags writes by about a minute (reported for Cloud), so an item
        # written just before the job start may appear only in the next job's window.
        return (
            self.source.deployment == "cloud-oauth"
            or window.mode is JobMode.INCREMENTAL
            or kind in ("comment", "attachment")
        )

    def _search_pages(
        self, key: str, cql: str, expand: str, limit: int, *, every_row: bool = False
    ) -> Iterator[Page]:
        params: dict[str, str | int] = {"cql": cql}
        if expand:
            params["expand"] = expand
        if key in self._archived_spaces:
            # CQL leaves out the content of archived spaces unless the request includes them.
            params["includeArchivedSpaces"] = "true"
        if self.source.deployment == "datacenter":
            return datacenter_search_pages(
                self.client, "/content/search", params, limit=limit, stop_at_total=not every_row
            )
        return cursor_pages(self.client, "/content/search", params, limit=limit)

    def _content_pages(
        self, key: str, kind: str, window: Window, expand: list[str]
    ) -> Iterator[Page]:
        joined = ",".join(expand)
        limit = self.source.page_size
        if self._uses_search(kind, window):
            cql = f"space = {cql_string(key)} and type = {kind}"
            if window.mode is JobMode.INCREMENTAL:
                assert self._zone is not None
                cql += " and " + cql_window_clause(window, self._zone)
            return self._search_pages(key, cql, joined, limit)
        path = f"/space/{quote(key, safe='~')}/content/{kind}"
        return offset_pages(self.client, path, {"expand": joined}, limit=limit)

    def _content_unit(
        self, key: str, kind: str, window: Window, listing: _StructureListing | None
    ) -> Callable[[], None]:
        def unit() -> None:
            unit_name = f"space:{key}:{kind}"
            try:
                if listing is None:
                    self._walk_content(key, kind, window, unit_name, None)
                else:
                    listing.walk_part(
                        lambda: self._walk_content(key, kind, window, unit_name, listing)
                    )
            except (SkippableError, RetriableError) as error:
                self._record_error(unit_name, error)
                with self._lock:
                    self._tallies[key].errors += 1

        return unit

    def _walk_content(
        self,
        key: str,
        kind: str,
        window: Window,
        unit_name: str,
        listing: _StructureListing | None,
    ) -> None:
        assert self.state is not None
        context = RecordContext(self.source.id, self.state.job_id, self._site_base)
        expand = self._expand(kind, optional=True)
        served = 0
        try:
            for page in self._prefetched(self._content_pages(key, kind, window, expand)):
                served += self._publish_content(page, key, context, unit_name)
                if listing is not None:
                    listing.add(page)
        except (SkippableError, RetriableError) as error:
            if served or error.status not in _OPTIONAL_EXPANSION_STATUSES:
                raise
            reduced = self._expand(kind, optional=False)
            if reduced == expand:
                raise
            log.warning(
                "listing failed with status %s; retrying without optional expansions "
                "unit=%s dropped=%s",
                error.status,
                unit_name,
                ",".join(item for item in expand if item not in reduced),
            )
            for page in self._prefetched(self._content_pages(key, kind, window, reduced)):
                self._publish_content(page, key, context, unit_name)
                if listing is not None:
                    listing.add(page)

    def _publish_content(self, page: Page, key: str, context: RecordContext, unit_name: str) -> int:
        self._check_stop()
        assert self.state is not None
        if context.site_base is None:
            base = site_base_of(page.raw)
            context = RecordContext(context.source_id, context.job_id, base)
        fetched_at = self.clock()
        for item in page.results:
            self._complete_labels(item, unit_name)
            try:
                record = content_record(
                    item, context, fetched_at, space_key=key, space_id=self._space_ids.get(key)
                )
            except RecordMappingError as error:
                self._record_error(
                    f"{unit_name}:{item.get('id', '?')}",
                    SkippableError(str(error), method="GET", url=page.request_path),
                )
                continue
            try:
                self.publisher.publish(
                    RecordType.CONTENT, content_key(self.source.id, record["id"]), record
                )
            except RecordTooLargeError as error:
                self._record_error(
                    f"{unit_name}:{record['id']}",
                    SkippableError(str(error), method="GET", url=page.request_path),
                )
                continue
            kind = str(record["type"])
            self.state.count(kind)
            self._tally(key, kind)
            self.progress.record(kind)
        self.publisher.poll()
        return len(page.results)

    def _complete_labels(self, item: dict[str, Any], unit_name: str) -> None:
        """Fetch the labels past the first page of an item's ``metadata.labels`` expansion.

        The expansion returns at most 200 labels with a ``next`` link; the rest come from
        ``/content/{id}/label``, which only these rare items need.
        """
        metadata = item.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        if not isinstance(labels, dict) or not isinstance(labels.get("results"), list):
            return
        links = labels.get("_links")
        if not isinstance(links, dict) or not links.get("next"):
            return
        results: list[Any] = labels["results"]
        path = f"/content/{quote(str(item.get('id')), safe='')}/label"
        try:
            for page in offset_pages(
                self.client, path, {"start": len(results)}, limit=_LABEL_PAGE_SIZE, shrink=False
            ):
                results.extend(page.results)
        except ProducerError as error:
            # The OAuth gateway returns 410 Gone for this v1 read; the record then keeps the
            # labels of the expansion and the job records the loss.
            if isinstance(error, FatalError) and error.status != 410:
                raise
            self._record_error(f"{unit_name}:{item.get('id')}:labels", error)

    # --- step 4: structure ----------------------------------------------------------------

    def structure_types(self) -> list[str]:
        """Return the content types a structure listing covers, in listing order."""
        contained = [kind for kind in _CONTAINED_KINDS if kind in self.source.content_types]
        return ["page", "blogpost", *contained]

    def _structure_pages(self, key: str, types: list[str]) -> Iterator[Page]:
        """Walk the structure listing of ``types``, a subset of ``structure_types()``."""
        contained = [kind for kind in types if kind in _CONTAINED_KINDS]
        space = cql_string(key)
        if self.source.deployment == "cloud-oauth":
            cql = f"space = {space} and type in ({', '.join(types)})"
            expand = _STRUCTURE_EXPAND + (",container" if contained else "")
            yield from self._search_pages(key, cql, expand, STRUCTURE_PAGE_SIZE, every_row=True)
            return
        for kind in _SHARED_KINDS:
            if kind not in types:
                continue
            path = f"/space/{quote(key, safe='~')}/content/{kind}"
            yield from offset_pages(
                self.client, path, {"expand": _STRUCTURE_EXPAND}, limit=STRUCTURE_PAGE_SIZE
            )
        if contained:
            cql = f"space = {space} and type in ({', '.join(contained)})"
            yield from self._search_pages(
                key, cql, _CONTAINED_STRUCTURE_EXPAND, STRUCTURE_PAGE_SIZE, every_row=True
            )

    def _structure_unit(self, listing: _StructureListing, types: list[str]) -> Callable[[], None]:
        def unit() -> None:
            listing.walk_part(lambda: listing.walk(types), own=True)

        return unit


class _StructureListing:
    """Publishes one space's structure as chunks, ending in ``complete`` or ``aborted``.

    Its rows come from ``parts`` walks, which may run on different workers at once: the
    structure unit's own walk and, in a full job, the content walks of pages and blog
    posts. The listing is ``complete`` once every part finished, and ``aborted`` as soon
    as one part failed, so a consumer never derives deletions from a partial listing.
    """

    def __init__(self, job: CrawlJob, key: str, space_id: int | None, *, parts: int) -> None:
        assert job.state is not None
        self.job = job
        self.key = key
        self.record_key = structure_key(job.source.id, key)
        self.base: dict[str, Any] = {
            "source_id": job.source.id,
            "job_id": job.state.job_id,
            "space_key": key,
            "space_id": space_id,
            "listing_id": uuid.uuid4().hex,
            "content_types": job.structure_types(),
            "started_at": job.clock(),
        }
        self.parts = parts
        self.finished = False
        self.sequence = 0
        self.item_count = 0
        self.buffer: list[dict[str, Any]] = []
        # Held while a chunk is published, so chunks reach the topic in sequence order.
        self._lock = threading.Lock()

    @property
    def unit_name(self) -> str:
        return f"space:{self.key}:structure"

    def walk(self, types: list[str]) -> None:
        """Walk the structure listing of ``types`` and add its rows."""
        for page in self.job._prefetched(self.job._structure_pages(self.key, types)):
            self.job._check_stop()
            self.add(page)
            if self.finished:
                return

    def add(self, page: Page) -> None:
        """Add the rows of one page. A row that cannot be mapped aborts the listing."""
        try:
            items = [structure_item(item) for item in page.results]
        except RecordMappingError as error:
            self._abort(error)
            return
        with self._lock:
            if self.finished:
                return
            self.buffer.extend(items)
            while len(self.buffer) >= STRUCTURE_CHUNK_SIZE:
                self._flush_items(STRUCTURE_CHUNK_SIZE)

    def walk_part(self, walk: Callable[[], None], *, own: bool = False) -> None:
        """Run one part's walk, then end the listing after its last part or first failure.

        The walk's error is raised again, except a skippable or retriable error of the
        structure unit's ``own`` walk, which ends as an error recorded on the job.
        """
        try:
            walk()
            self._part_done()
        except Exception as error:
            self._abort(error)
            if own and isinstance(error, (SkippableError, RetriableError, RecordMappingError)):
                return
            raise

    def abandon(self) -> None:
        """End a listing whose parts did not all run, because a fatal error stopped the job.

        A listing that published no chunk stays unpublished, as one that never started.
        """
        with self._lock:
            if self.finished or self.sequence == 0:
                return
            self.finished = True
            try:
                self._publish_final(
                    "aborted", "the job stopped after a fatal error in another unit"
                )
            except Exception as error:  # The job already failed with the first error.
                log.error(
                    "aborted structure chunk not published space=%s error=%s", self.key, error
                )

    def _part_done(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.parts -= 1
            if self.parts > 0:
                return
            self._flush_items(len(self.buffer))
            self._publish_final("complete", None)
            self.finished = True
        with self.job._lock:
            self.job._tallies[self.key].structure = f"complete({self.item_count})"

    def _abort(self, error: Exception) -> None:
        """Publish the ``aborted`` chunk once and record the error on the job."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            if isinstance(error, CrawlCancelled):
                reason = "the job stopped after a fatal error in another unit"
            else:
                reason = self._reason(error)
            try:
                self._publish_final("aborted", reason)
            except Exception as publish_error:
                if isinstance(error, (SkippableError, RetriableError, RecordMappingError)):
                    raise
                # The error being raised is the one to report.
                log.error(
                    "aborted structure chunk not published space=%s error=%s",
                    self.key,
                    publish_error,
                )
        if isinstance(error, (SkippableError, RetriableError, RecordMappingError)):
            recorded = (
                SkippableError(str(error)) if isinstance(error, RecordMappingError) else error
            )
            self.job._record_error(self.unit_name, recorded)
            with self.job._lock:
                self.job._tallies[self.key].errors += 1
                self.job._tallies[self.key].structure = "aborted"

    @staticmethod
    def _reason(error: Exception) -> str:
        if isinstance(error, ProducerError):
            request = " ".join(part for part in (error.method, error.url) if part)
            status = f" -> {error.status}" if error.status is not None else ""
            return f"{type(error).__name__}: {error.message} (request: {request or '-'}{status})"
        return f"{type(error).__name__}: {error}"

    def _chunk(self, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = dict(self.base)
        chunk.update(
            {
                "sequence": self.sequence,
                "kind": kind,
                "items": items,
                "item_count": None,
                "abort_reason": None,
                "fetched_at": self.job.clock(),
            }
        )
        self.sequence += 1
        return chunk

    def _flush_items(self, count: int) -> None:
        if not count:
            return
        items = self.buffer[:count]
        chunk = self._chunk("items", items)
        self.job.publisher.publish(RecordType.STRUCTURE_LISTING, self.record_key, chunk)
        assert self.job.state is not None
        self.job.state.count("structure_listing")
        self.item_count += len(items)
        self.job.progress.record("structure_item", len(items))
        self.buffer = self.buffer[count:]

    def _publish_final(self, kind: str, reason: str | None) -> None:
        assert self.job.state is not None
        chunk = self._chunk(kind, [])
        chunk["item_count"] = self.item_count
        chunk["abort_reason"] = reason
        self.job.publisher.publish(RecordType.STRUCTURE_LISTING, self.record_key, chunk)
        self.job.state.count("structure_listing")
        if kind == "aborted":
            log.warning(
                "structure listing aborted space=%s items_before_abort=%d reason=%s",
                self.key,
                self.item_count,
                reason,
            )
