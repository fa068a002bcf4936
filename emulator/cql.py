"""CQL (Confluence Query Language) parser and evaluator for the emulator's search routes.

Pure code: `parse` turns a query string into a `Query` whose predicate is compiled to closures
once, so matching an item costs a few attribute reads and comparisons.

Supported syntax:

- Fields: `type`, `space` (also `space.key`), `id` (also `content`), `title`, `text`,
  `siteSearch` (evaluated like `text`), `label`, `ancestor`, `parent`, `container`,
  `creator`, `contributor`, `created`, `lastmodified` (also `lastModified`). Field names and
  keywords are case-insensitive.
- Operators: `=`, `!=`, `~`, `!~`, `<`, `<=`, `>`, `>=`, `in (...)`, `not in (...)`, and the
  boolean `and`, `or`, `not` with parentheses (`not` binds tighter than `and`, which binds
  tighter than `or`).
- Values: double- or single-quoted strings with backslash escapes, or bare words (`page`,
  `ENG`, `123`).
- Date values: the literals `yyyy/MM/dd HH:mm`, `yyyy-MM-dd HH:mm`, `yyyy/MM/dd` and
  `yyyy-MM-dd`, and the functions `now()`, `startOfDay()`, `startOfWeek()`, `startOfMonth()`,
  `startOfYear()` and their `endOf*` forms, each with an optional increment such as `"-1d"`,
  `"+2w"` or `"-1w 2d"` (units y, M, w, d, h, m).
- `order by field [asc|desc], ...` over `lastmodified`, `created`, `title`, `id`, `type`
  and `space`.

Evaluation rules:

- Only content with status `current` matches. Confluence Cloud's search does not show
  archived pages; that it leaves out trashed and draft content too is assumed, not recorded.
- Space keys, titles (`=`), labels and type names compare case-insensitively. An unknown
  space key matches nothing rather than raising.
- `text ~` and `title ~` split the value into lower-cased words and require every word to
  occur as a whole word (in the body text or the title for `text`), in any order. An inner
  quoted phrase (`text ~ "\\"exact words\\""`) must occur as consecutive words, and `*` or `?`
  inside a word are wildcards. The word `AND` inside the value is ignored.
- Date literals are read in the query's time zone, which is the calling user's zone or the
  site's, and UTC only when that is the configured zone. They have minute granularity: an
  item's timestamp is truncated to the minute before comparing, so seconds never matter.
  A literal names an interval of one minute (with a time) or one local day (date only):
  `=` means inside the interval, `<` before it, `>=` from its start, `<=` up to its end and
  `>` after it. `now()` names the current minute, `startOf*` the first minute of the period
  and `endOf*` its last minute. Weeks start on Sunday, the default of Confluence's en_US
  locale.
- A wall-clock time that does not exist in the zone (a daylight-saving gap) is moved later
  by the length of the gap, and an ambiguous one (an overlap) takes the earlier of its two
  instants, as `java.time.ZonedDateTime.of` resolves them. So in Europe/Berlin
  `"2024-03-31 02:30"` is 01:30 UTC (the same instant as 03:30 CEST) and
  `"2024-10-27 02:30"` is 00:30 UTC.

Errors are `CqlError` (HTTP 400), whose `body()` is the JSON error body the server returns.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ORDER_FIELDS",
    "SUPPORTED_FIELDS",
    "TYPE_VALUES",
    "ContentLike",
    "CqlError",
    "Query",
    "parse",
]

# Errors -------------------------------------------------------------------------------------

# The exception class Confluence Cloud names at the start of a search refusal's message,
# recorded on the 400 for a missing `cql` parameter.
_BAD_REQUEST_CLASS: Final = (
    "com.atlassian.confluence.api.service.exceptions.api.BadRequestException"
)


class CqlError(ValueError):
    """A query Confluence refuses with HTTP 400.

    `reason` is the message text Confluence gives for the case. `message` is that text as the
    Cloud body carries it, after the Java exception class. `detail` explains for logs and tests
    what exactly was wrong where the Confluence text is generic. It never goes into the body.
    """

    status: int = 400

    def __init__(self, reason: str, *, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.message = f"{_BAD_REQUEST_CLASS}: {reason}"
        super().__init__(f"{self.message} ({detail})" if detail else self.message)

    @classmethod
    def required(cls) -> CqlError:
        """Build the refusal of a request whose `cql` parameter is missing or empty."""
        return cls("cql query parameter is required")

    def body(self, flavour: str = "cloud") -> dict[str, Any]:
        """Build the JSON error body: the Cloud shape, or the Data Center one for "datacenter"."""
        if flavour == "datacenter":
            return {
                "statusCode": self.status,
                "data": {
                    "authorized": False,
                    "valid": True,
                    "allowedInReadOnlyMode": True,
                    "errors": [],
                    "successful": False,
                },
                "message": self.reason,
                "reason": "Bad Request",
            }
        return {
            "statusCode": self.status,
            "data": {"authorized": True, "valid": True, "errors": [], "successful": True},
            "message": self.message,
        }


# NOTE: only three refusal texts are recorded from Confluence Cloud: "Could not parse cql : "
# (whitespace-only query), the unknown-field text for `status` and the bad `type` value text.
# Every other syntax or operator error reuses the unparsable-query text, and that text is
# assumed to carry the same exception class as the recorded missing-`cql` refusal.
def _unparsable(query: str, detail: str) -> CqlError:
    return CqlError(f"Could not parse cql : {query.strip()}", detail=detail)


# Field vocabulary ---------------------------------------------------------------------------

# Valid `type` values as the 400 for a bad value lists them on Cloud. Sites add app-defined
# content types to the end of this list; the emulator has none.
TYPE_VALUES: Final[tuple[str, ...]] = (
    "space",
    "user",
    "page",
    "blogpost",
    "comment",
    "attachment",
    "database",
    "whiteboard",
    "slide",
    "embed",
    "folder",
)

# The CQL fields Confluence Cloud documents, plus `siteSearch` and `subtype`, which only its
# "Did you mean" suggestions name. Fields equally far from a misspelt name are suggested in
# this order, which matches the recorded suggestions for `status`.
_CONFLUENCE_FIELDS: Final[tuple[str, ...]] = (
    "ancestor",
    "container",
    "content",
    "contributor",
    "created",
    "creator",
    "favourite",
    "id",
    "label",
    "lastmodified",
    "macro",
    "mention",
    "parent",
    "space",
    "space.key",
    "siteSearch",
    "space.type",
    "space.title",
    "subtype",
    "text",
    "title",
    "type",
    "user",
    "user.accountid",
    "user.fullname",
    "watcher",
)

# Accepted spellings (lower-cased) of the fields this module evaluates, to canonical names.
_FIELD_ALIASES: Final[dict[str, str]] = {
    "ancestor": "ancestor",
    "container": "container",
    "content": "id",
    "contributor": "contributor",
    "created": "created",
    "creator": "creator",
    "id": "id",
    "label": "label",
    "lastmodified": "lastmodified",
    "parent": "parent",
    "sitesearch": "text",
    "space": "space",
    "space.key": "space",
    "text": "text",
    "title": "title",
    "type": "type",
}

# The accepted spellings as Confluence's documentation writes them.
SUPPORTED_FIELDS: Final[tuple[str, ...]] = (
    "ancestor",
    "container",
    "content",
    "contributor",
    "created",
    "creator",
    "id",
    "label",
    "lastmodified",
    "parent",
    "siteSearch",
    "space",
    "space.key",
    "text",
    "title",
    "type",
)

# Fields `order by` accepts, lower-cased, to canonical names.
ORDER_FIELDS: Final[dict[str, str]] = {
    "created": "created",
    "id": "id",
    "lastmodified": "lastmodified",
    "space": "space",
    "space.key": "space",
    "title": "title",
    "type": "type",
}

# Date fields sort newest first unless `asc` is given, and other fields ascending.
# NOTE: CQL's documentation says only that "the field's own default direction" applies. These
# directions follow Jira's field defaults, because no Confluence value is recorded.
_DEFAULT_DESCENDING: Final[frozenset[str]] = frozenset({"created", "lastmodified"})

# Without `order by`, results come most recently modified first. Search scores were 0.0 on
# every Cloud row sampled, so relevance gives no order to copy.
_DEFAULT_ORDER: Final[tuple[tuple[str, bool], ...]] = (("lastmodified", True),)

_MAX_SUGGESTIONS: Final = 5


def _levenshtein(left: str, right: str) -> int:
    previous = list(range(len(right) + 1))
    for i, left_char in enumerate(left, 1):
        current = [i]
        for j, right_char in enumerate(right, 1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (left_char != right_char),
                )
            )
        previous = current
    return previous[-1]


def _suggest_fields(name: str) -> list[str]:
    """Pick the fields Confluence suggests for an unknown field name.

    Fields that share the first letter, closest edit distance first, at most five. This
    reproduces the recorded suggestion list for `status`.
    """
    lowered = name.lower()
    same_initial = [f for f in _CONFLUENCE_FIELDS if f[:1].lower() == lowered[:1]]
    ranked = sorted(same_initial, key=lambda f: _levenshtein(lowered, f.lower()))
    return ranked[:_MAX_SUGGESTIONS]


def _unknown_field(name: str) -> CqlError:
    reason = f"No field exists with the name: '{name}'"
    suggestions = _suggest_fields(name)
    if suggestions:
        reason += " Did you mean one of : " + ", ".join(suggestions)
    return CqlError(reason)


def _unsupported_field(name: str) -> CqlError:
    supported = ", ".join(SUPPORTED_FIELDS)
    return CqlError(
        f"The CQL field '{name}' exists in Confluence but this emulator does not evaluate it; "
        f"use one of: {supported}"
    )


# Items --------------------------------------------------------------------------------------


class ContentLike(Protocol):
    """Attributes the evaluator reads from a content item; the model's `Content` has them all.

    Three fields read optional attributes. `creator` reads `created_by` (an account id),
    `contributor` reads `versions`, whose entries carry a `by` account id, and `container`
    reads `container_id`. An item without the attribute never equals a value of that field.
    """

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def space_key(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def created(self) -> datetime: ...
    @property
    def last_modified(self) -> datetime: ...
    @property
    def ancestor_ids(self) -> Sequence[str]: ...
    @property
    def label_names(self) -> Sequence[str]: ...
    @property
    def text(self) -> str: ...


Predicate = Callable[[ContentLike], bool]
_Item = TypeVar("_Item", bound=ContentLike)

# Tokens -------------------------------------------------------------------------------------

_OPERATORS: Final[tuple[str, ...]] = ("!=", "!~", "<=", ">=", "=", "~", "<", ">")
_KEYWORDS: Final[frozenset[str]] = frozenset(
    {"and", "or", "not", "in", "order", "by", "asc", "desc"}
)
_WORD_STOP: Final = frozenset("\"'()=!~<>,")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", "string", "op", "(", ")", ",", "end"
    text: str
    position: int

    def is_keyword(self, keyword: str) -> bool:
        return self.kind == "word" and self.text.lower() == keyword


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    length = len(query)
    while i < length:
        char = query[i]
        if char.isspace():
            i += 1
            continue
        if char in "(),":
            tokens.append(_Token(char, char, i))
            i += 1
            continue
        if char in "\"'":
            text, end = _read_string(query, i)
            tokens.append(_Token("string", text, i))
            i = end
            continue
        operator = next((op for op in _OPERATORS if query.startswith(op, i)), None)
        if operator is not None:
            tokens.append(_Token("op", operator, i))
            i += len(operator)
            continue
        if char == "!":
            raise _unparsable(query, f"'!' at offset {i} is not followed by '=' or '~'")
        start = i
        while i < length and not query[i].isspace() and query[i] not in _WORD_STOP:
            i += 1
        tokens.append(_Token("word", query[start:i], start))
    tokens.append(_Token("end", "", length))
    return tokens


def _read_string(query: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at `start`; return its unescaped text and the next offset."""
    quote = query[start]
    parts: list[str] = []
    i = start + 1
    while i < len(query):
        char = query[i]
        if char == "\\" and i + 1 < len(query):
            parts.append(query[i + 1])
            i += 2
            continue
        if char == quote:
            return "".join(parts), i + 1
        parts.append(char)
        i += 1
    raise _unparsable(query, f"the string starting at offset {start} has no closing {quote}")


# Syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    text: str
    function: bool = False  # a call such as now("-1d"), whose arguments are in `args`
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Clause:
    field: str  # canonical name
    written: str  # the field name as the query spells it
    operator: str  # "=", "!=", "~", "!~", "<", "<=", ">", ">=", "in", "not in"
    values: tuple[_Value, ...]


@dataclass(frozen=True, slots=True)
class _And:
    children: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    children: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    child: _Node


_Node = _Clause | _And | _Or | _Not

# Parser -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokenize(query)
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def fail(self, detail: str) -> CqlError:
        return _unparsable(self.query, detail)

    def expect(self, kind: str) -> _Token:
        token = self.current
        if token.kind != kind:
            found = repr(token.text) if token.kind != "end" else "the end of the query"
            raise self.fail(f"expected {kind!r} at offset {token.position}, found {found}")
        return self.advance()

    def parse(self) -> tuple[_Node, list[tuple[str, bool]]]:
        if self.current.kind == "end" or self.current.is_keyword("order"):
            raise self.fail("the query has no search clause")
        node = self.parse_or()
        order_by = self.parse_order_by()
        if self.current.kind != "end":
            token = self.current
            raise self.fail(f"unexpected {token.text!r} at offset {token.position}")
        return node, order_by

    def parse_or(self) -> _Node:
        children = [self.parse_and()]
        while self.current.is_keyword("or"):
            self.advance()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else _Or(tuple(children))

    def parse_and(self) -> _Node:
        children = [self.parse_not()]
        while self.current.is_keyword("and"):
            self.advance()
            children.append(self.parse_not())
        return children[0] if len(children) == 1 else _And(tuple(children))

    def parse_not(self) -> _Node:
        if self.current.is_keyword("not"):
            self.advance()
            return _Not(self.parse_not())
        if self.current.kind == "(":
            self.advance()
            node = self.parse_or()
            self.expect(")")
            return node
        return self.parse_clause()

    def parse_clause(self) -> _Clause:
        token = self.current
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            found = repr(token.text) if token.kind != "end" else "the end of the query"
            raise self.fail(f"expected a field name at offset {token.position}, found {found}")
        self.advance()
        written = token.text
        operator = self.parse_operator()
        in_list = operator in ("in", "not in")
        values = self.parse_value_list() if in_list else (self.parse_value(),)
        canonical = _resolve_field(written)
        return _Clause(canonical, written, operator, values)

    def parse_operator(self) -> str:
        token = self.current
        if token.kind == "op":
            self.advance()
            return token.text
        if token.is_keyword("in"):
            self.advance()
            return "in"
        if token.is_keyword("not") and self.tokens[self.index + 1].is_keyword("in"):
            self.advance()
            self.advance()
            return "not in"
        raise self.fail(f"expected an operator at offset {token.position}")

    def parse_value_list(self) -> tuple[_Value, ...]:
        self.expect("(")
        values = [self.parse_value()]
        while self.current.kind == ",":
            self.advance()
            values.append(self.parse_value())
        self.expect(")")
        return tuple(values)

    def parse_value(self) -> _Value:
        token = self.current
        if token.kind == "string":
            self.advance()
            return _Value(token.text)
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            found = repr(token.text) if token.kind != "end" else "the end of the query"
            raise self.fail(f"expected a value at offset {token.position}, found {found}")
        self.advance()
        if self.current.kind != "(":
            return _Value(token.text)
        self.advance()
        args: list[str] = []
        while self.current.kind != ")":
            if args:
                self.expect(",")
            argument = self.current
            if argument.kind not in ("string", "word"):
                raise self.fail(f"invalid argument of {token.text}() at offset {argument.position}")
            args.append(argument.text)
            self.advance()
        self.advance()
        return _Value(token.text, function=True, args=tuple(args))

    def parse_order_by(self) -> list[tuple[str, bool]]:
        if not self.current.is_keyword("order"):
            return []
        self.advance()
        if not self.current.is_keyword("by"):
            raise self.fail(f"expected 'by' after 'order' at offset {self.current.position}")
        self.advance()
        order_by = [self.parse_order_item()]
        while self.current.kind == ",":
            self.advance()
            order_by.append(self.parse_order_item())
        return order_by

    def parse_order_item(self) -> tuple[str, bool]:
        token = self.current
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            raise self.fail(f"expected a field to order by at offset {token.position}")
        self.advance()
        canonical = ORDER_FIELDS.get(token.text.lower())
        if canonical is None:
            # An unknown field gets Confluence's unknown-field refusal; a known one that has
            # several values per item (label, ancestor) or is text cannot be ordered by.
            _resolve_field(token.text)
            raise self.fail(f"results cannot be ordered by the field {token.text!r}")
        descending = canonical in _DEFAULT_DESCENDING
        if self.current.is_keyword("asc"):
            self.advance()
            descending = False
        elif self.current.is_keyword("desc"):
            self.advance()
            descending = True
        return canonical, descending


def _resolve_field(written: str) -> str:
    lowered = written.lower()
    canonical = _FIELD_ALIASES.get(lowered)
    if canonical is not None:
        return canonical
    if lowered in {f.lower() for f in _CONFLUENCE_FIELDS}:
        raise _unsupported_field(written)
    raise _unknown_field(written)


# Dates --------------------------------------------------------------------------------------

_DATE_LITERAL: Final = re.compile(
    r"(?P<year>\d{4})(?P<sep>[-/])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2}))?"
)
_INCREMENT_PART: Final = re.compile(r"\s*(\d+)\s*([yMwdhm])")
_PERIOD_FUNCTIONS: Final[dict[str, tuple[str, bool]]] = {
    "startofday": ("day", False),
    "startofweek": ("week", False),
    "startofmonth": ("month", False),
    "startofyear": ("year", False),
    "endofday": ("day", True),
    "endofweek": ("week", True),
    "endofmonth": ("month", True),
    "endofyear": ("year", True),
}
_SUNDAY: Final = 6  # date.weekday() of Sunday


@dataclass(frozen=True, slots=True)
class _Increment:
    sign: int
    amounts: tuple[tuple[int, str], ...]  # (count, unit) with unit in y M w d h m


def _epoch_minute(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    # fold=0 resolves a gap by moving later by the gap's length and an overlap to the earlier
    # instant, the same choices java.time.ZonedDateTime.of makes.
    # NOTE: how Confluence reads such a time is not recorded; this is the plausible Java default.
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _add_months(local: datetime, months: int) -> datetime:
    month_index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(month_index, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return local.replace(year=year, month=month + 1, day=min(local.day, last_day))


def _apply_increment(local: datetime, increment: _Increment) -> datetime:
    """Shift a naive local date-time by calendar units (y, M, w, d) and clock units (h, m)."""
    for count, unit in increment.amounts:
        amount = increment.sign * count
        if unit == "y":
            local = _add_months(local, 12 * amount)
        elif unit == "M":
            local = _add_months(local, amount)
        elif unit == "w":
            local += timedelta(weeks=amount)
        elif unit == "d":
            local += timedelta(days=amount)
        elif unit == "h":
            local += timedelta(hours=amount)
        else:
            local += timedelta(minutes=amount)
    return local


def _period_start(local: datetime, period: str) -> datetime:
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day_start
    if period == "week":
        days_since_sunday = (day_start.weekday() - _SUNDAY) % 7
        return day_start - timedelta(days=days_since_sunday)
    if period == "month":
        return day_start.replace(day=1)
    return day_start.replace(month=1, day=1)


def _next_period_start(start: datetime, period: str) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    if period == "month":
        return _add_months(start, 1)
    return _add_months(start, 12)


class _DateContext:
    """Time zone, current instant and query text that date values are resolved against."""

    def __init__(self, query: str, zone: ZoneInfo, now: datetime) -> None:
        self.query = query
        self.zone = zone
        self.now = now

    def interval(self, value: _Value, written_field: str) -> tuple[int, int]:
        """Resolve a date value to the epoch minutes [start, end) it names."""
        if value.function:
            return self.function_interval(value, written_field)
        return self.literal_interval(value.text, written_field)

    def literal_interval(self, text: str, written_field: str) -> tuple[int, int]:
        match = _DATE_LITERAL.fullmatch(text.strip())
        if match is None:
            raise _unparsable(
                self.query,
                f"{text!r} for {written_field} is not a date in one of the formats "
                '"yyyy/MM/dd HH:mm", "yyyy-MM-dd HH:mm", "yyyy/MM/dd" or "yyyy-MM-dd"',
            )
        has_time = match["hour"] is not None
        try:
            local_start = datetime(
                int(match["year"]),
                int(match["month"]),
                int(match["day"]),
                int(match["hour"]) if has_time else 0,
                int(match["minute"]) if has_time else 0,
            )
        except ValueError as error:
            raise _unparsable(
                self.query, f"{text!r} for {written_field} is not a valid date: {error}"
            ) from error
        start = _epoch_minute(_local_to_utc(local_start, self.zone))
        if has_time:
            # Converting the next local minute instead would stretch a minute at the end of an
            # overlap to 61 minutes, because that minute resolves to its earlier instant.
            return start, start + 1
        # A local day lasts 23 or 25 hours on a daylight-saving change.
        end = _epoch_minute(_local_to_utc(local_start + timedelta(days=1), self.zone))
        return start, end

    def function_interval(self, value: _Value, written_field: str) -> tuple[int, int]:
        name = value.text.lower()
        if name != "now" and name not in _PERIOD_FUNCTIONS:
            raise _unparsable(
                self.query, f"{value.text}() is not a date function usable with {written_field}"
            )
        if len(value.args) > 1:
            raise _unparsable(self.query, f"{value.text}() takes at most one increment")
        increment = self.increment(value.args[0]) if value.args else None
        if name == "now":
            moment = self.now
            if increment is not None:
                moment = _apply_increment_absolute(moment, increment)
            start = _epoch_minute(moment)
            return start, start + 1
        period, is_end = _PERIOD_FUNCTIONS[name]
        local_now = self.now.astimezone(self.zone).replace(tzinfo=None)
        if increment is not None:
            local_now = _apply_increment(local_now, increment)
        local_start = _period_start(local_now, period)
        local_next = _next_period_start(local_start, period)
        if is_end:
            end = _epoch_minute(_local_to_utc(local_next, self.zone))
            return end - 1, end
        start = _epoch_minute(_local_to_utc(local_start, self.zone))
        return start, start + 1

    def increment(self, text: str) -> _Increment:
        stripped = text.strip()
        sign = 1
        if stripped.startswith(("+", "-")):
            sign = -1 if stripped[0] == "-" else 1
            stripped = stripped[1:]
        amounts: list[tuple[int, str]] = []
        position = 0
        while position < len(stripped):
            match = _INCREMENT_PART.match(stripped, position)
            if match is None:
                break
            amounts.append((int(match[1]), match[2]))
            position = match.end()
        if not amounts or stripped[position:].strip():
            raise _unparsable(
                self.query,
                f'{text!r} is not a date increment such as "-1d", "+2w" or "-1w 2d" '
                "(units y, M, w, d, h, m)",
            )
        return _Increment(sign, tuple(amounts))


def _apply_increment_absolute(moment: datetime, increment: _Increment) -> datetime:
    """Shift an aware instant: months and years by the calendar, other units as durations."""
    calendar_part = _Increment(
        increment.sign, tuple(a for a in increment.amounts if a[1] in ("y", "M"))
    )
    duration_part = _Increment(
        increment.sign, tuple(a for a in increment.amounts if a[1] not in ("y", "M"))
    )
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
    shifted = _apply_increment(_apply_increment(naive_utc, calendar_part), duration_part)
    return shifted.replace(tzinfo=UTC)


# Text matching ------------------------------------------------------------------------------

_WORD: Final = re.compile(r"\w+")
_PHRASE: Final = re.compile(r'"([^"]*)"')


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _contains_word(text: str, word: str) -> bool:
    """Tell whether `word` occurs in `text` with no word character on either side."""
    # A find loop is about eight times faster than a regular expression with word boundaries.
    index = text.find(word)
    while index != -1:
        end = index + len(word)
        starts_word = index == 0 or not _is_word_char(text[index - 1])
        ends_word = end == len(text) or not _is_word_char(text[end])
        if starts_word and ends_word:
            return True
        index = text.find(word, index + 1)
    return False


@dataclass(frozen=True, slots=True)
class _Term:
    """One word, wildcard word or phrase of a `~` value, matched in lower-cased text."""

    # The word itself, or for a wildcard word or phrase a substring of every match: testing
    # it with `in` first rejects most texts far faster than the regular expression would.
    needle: str
    pattern: re.Pattern[str] | None = None  # None for a plain word

    def found_in(self, lowered: str) -> bool:
        if self.pattern is None:
            return _contains_word(lowered, self.needle)
        return self.needle in lowered and self.pattern.search(lowered) is not None


def _whole_words(body: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){body}(?!\w)")


def _wildcard_term(raw: str) -> _Term:
    """Build a term where `*` stands for any run of word characters and `?` for one."""
    parts: list[str] = []
    for char in raw:
        if char == "*":
            parts.append(r"\w*")
        elif char == "?":
            parts.append(r"\w")
        elif _WORD.fullmatch(char):
            parts.append(re.escape(char))
    needle = max(re.split(r"[*?]", raw), key=len)
    return _Term(needle, _whole_words("".join(parts)))


def _parse_terms(value: str) -> tuple[_Term, ...]:
    """Split a `~` value into the words, wildcard words and inner quoted phrases it requires."""
    terms: list[_Term] = []
    for phrase in _PHRASE.findall(value):
        phrase_words = _WORD.findall(phrase.lower())
        if phrase_words:
            body = r"\W+".join(re.escape(w) for w in phrase_words)
            terms.append(_Term(max(phrase_words, key=len), _whole_words(body)))
    for raw in _PHRASE.sub(" ", value).split():
        if raw == "AND":
            continue
        lowered = raw.lower()
        if "*" in lowered or "?" in lowered:
            cleaned = "".join(c for c in lowered if c in "*?" or _WORD.fullmatch(c))
            terms.append(_wildcard_term(cleaned))
            continue
        terms.extend(_Term(word) for word in _WORD.findall(lowered))
    return tuple(terms)


def _all_found(terms: Sequence[_Term], sources: Sequence[str]) -> bool:
    """Tell whether every term occurs in at least one of the lower-cased sources."""
    return all(any(term.found_in(source) for source in sources) for term in terms)


# Compiler -----------------------------------------------------------------------------------

_EQUALITY: Final = frozenset({"=", "!=", "in", "not in"})
_DATE_OPERATORS: Final = frozenset({"=", "!=", "<", "<=", ">", ">="})
_ALLOWED_OPERATORS: Final[dict[str, frozenset[str]]] = {
    "type": _EQUALITY,
    "space": _EQUALITY,
    "id": _EQUALITY,
    "title": _EQUALITY | {"~", "!~"},
    "text": frozenset({"~", "!~"}),
    "label": _EQUALITY,
    "ancestor": _EQUALITY,
    "parent": _EQUALITY,
    "container": _EQUALITY,
    "creator": _EQUALITY,
    "contributor": _EQUALITY,
    "created": _DATE_OPERATORS,
    "lastmodified": _DATE_OPERATORS,
}


def _negate(predicate: Predicate) -> Predicate:
    return lambda item: not predicate(item)


def _any_of(values: frozenset[str], read: Callable[[ContentLike], str | None]) -> Predicate:
    if len(values) == 1:
        (only,) = values
        return lambda item: read(item) == only
    return lambda item: read(item) in values


def _contains_any(
    values: frozenset[str], read: Callable[[ContentLike], Iterable[str]]
) -> Predicate:
    return lambda item: any(member in values for member in read(item))


def _read_contributors(item: ContentLike) -> list[str]:
    versions = getattr(item, "versions", None) or ()
    return [str(getattr(version, "by", "")) for version in versions]


class _Compiler:
    def __init__(self, query: str, dates: _DateContext, current_user: str | None) -> None:
        self.query = query
        self.dates = dates
        self.current_user = current_user

    def compile(self, node: _Node) -> Predicate:
        if isinstance(node, _And):
            parts = [self.compile(child) for child in node.children]
            return lambda item: all(part(item) for part in parts)
        if isinstance(node, _Or):
            parts = [self.compile(child) for child in node.children]
            return lambda item: any(part(item) for part in parts)
        if isinstance(node, _Not):
            return _negate(self.compile(node.child))
        return self.compile_clause(node)

    def compile_clause(self, clause: _Clause) -> Predicate:
        if clause.operator not in _ALLOWED_OPERATORS[clause.field]:
            raise _unparsable(
                self.query,
                f"the operator {clause.operator!r} is not supported by the field "
                f"{clause.written!r}",
            )
        if clause.field in ("created", "lastmodified"):
            return self.compile_date(clause)
        if clause.operator in ("~", "!~"):
            predicate = self.compile_terms(clause)
            return _negate(predicate) if clause.operator == "!~" else predicate
        predicate = self.compile_equality(clause)
        return _negate(predicate) if clause.operator in ("!=", "not in") else predicate

    def plain_values(self, clause: _Clause) -> list[str]:
        texts: list[str] = []
        for value in clause.values:
            if value.function:
                if value.text.lower() == "currentuser" and clause.field in (
                    "creator",
                    "contributor",
                ):
                    # Without a calling user, currentUser() names no account, so nothing matches.
                    texts.append(self.current_user or "")
                    continue
                raise _unparsable(
                    self.query, f"{value.text}() is not a value usable with {clause.written}"
                )
            texts.append(value.text)
        return texts

    def compile_equality(self, clause: _Clause) -> Predicate:
        texts = self.plain_values(clause)
        field_name = clause.field
        if field_name == "type":
            return self.compile_type(texts)

        # Space keys, titles and labels compare case-insensitively.
        folded = frozenset(t.casefold() for t in texts)
        if field_name == "space":
            return _any_of(folded, lambda item: item.space_key.casefold())
        if field_name == "title":
            if any(not t.strip() for t in texts):
                raise _unparsable(self.query, "title cannot be compared with an empty value")
            return _any_of(folded, lambda item: item.title.casefold())
        if field_name == "label":
            return _contains_any(folded, lambda item: (n.casefold() for n in item.label_names))

        # Ids and account ids compare exactly.
        values = frozenset(texts)
        if field_name == "id":
            return _any_of(values, lambda item: item.id)
        if field_name == "ancestor":
            return _contains_any(values, lambda item: item.ancestor_ids)
        if field_name == "parent":
            return _any_of(values, lambda item: item.parent_id)
        if field_name == "container":
            return _any_of(values, lambda item: getattr(item, "container_id", None))
        if field_name == "creator":
            return _any_of(values, lambda item: getattr(item, "created_by", None))
        return _contains_any(values, _read_contributors)

    def compile_type(self, texts: list[str]) -> Predicate:
        lowered = [t.lower() for t in texts]
        for original, value in zip(texts, lowered, strict=True):
            if value not in TYPE_VALUES:
                expected = ", ".join(TYPE_VALUES)
                raise CqlError(
                    f"Unsupported value for type, got : {original}, expected one of : [{expected}]"
                )
        return _any_of(frozenset(lowered), lambda item: str(item.type))

    def compile_terms(self, clause: _Clause) -> Predicate:
        (text,) = self.plain_values(clause)
        terms = _parse_terms(text)
        if not terms:
            raise _unparsable(self.query, f"{clause.written} ~ needs at least one word")
        if clause.field == "title":
            return lambda item: _all_found(terms, (item.title.lower(),))
        # `text` covers the title as well as the body, as Confluence's master text field does.
        return lambda item: _all_found(terms, (item.title.lower(), item.text.lower()))

    def compile_date(self, clause: _Clause) -> Predicate:
        (value,) = clause.values
        start, end = self.dates.interval(value, clause.written)
        read = _read_created if clause.field == "created" else _read_last_modified
        operator = clause.operator
        if operator == "=":
            return lambda item: start <= _epoch_minute(read(item)) < end
        if operator == "!=":
            return lambda item: not start <= _epoch_minute(read(item)) < end
        if operator == "<":
            return lambda item: _epoch_minute(read(item)) < start
        if operator == "<=":
            return lambda item: _epoch_minute(read(item)) < end
        if operator == ">":
            return lambda item: _epoch_minute(read(item)) >= end
        return lambda item: _epoch_minute(read(item)) >= start


def _read_created(item: ContentLike) -> datetime:
    return item.created


def _read_last_modified(item: ContentLike) -> datetime:
    return item.last_modified


# Scan narrowing -----------------------------------------------------------------------------


def _candidates(node: _Node, field_name: str, normalize: Callable[[str], str]) -> dict[str, str]:
    """Collect the values a node restricts `field_name` to, keyed by their normalized form.

    Raises LookupError when the node does not restrict the field.
    """
    if isinstance(node, _Clause):
        if node.field != field_name or node.operator not in ("=", "in"):
            raise LookupError(field_name)
        if any(value.function for value in node.values):
            raise LookupError(field_name)
        return {normalize(v.text): v.text for v in node.values}
    if isinstance(node, _And):
        restricted: dict[str, str] | None = None
        for child in node.children:
            try:
                found = _candidates(child, field_name, normalize)
            except LookupError:
                continue
            if restricted is None:
                restricted = found
            else:
                restricted = {k: v for k, v in restricted.items() if k in found}
        if restricted is None:
            raise LookupError(field_name)
        return restricted
    if isinstance(node, _Or):
        union: dict[str, str] = {}
        for child in node.children:
            for key, written in _candidates(child, field_name, normalize).items():
                union.setdefault(key, written)
        return union
    raise LookupError(field_name)


# Sorting ------------------------------------------------------------------------------------


@functools.total_ordering
class _Descending:
    """A sort key component that orders in reverse."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and bool(self.value == other.value)

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)


def _id_key(content_id: str) -> tuple[int, str]:
    # Content ids are decimal strings, so ordering by length first gives numeric order.
    return len(content_id), content_id


_SORT_READERS: Final[dict[str, Callable[[ContentLike], Any]]] = {
    "created": lambda item: item.created.timestamp(),
    "lastmodified": lambda item: item.last_modified.timestamp(),
    "title": lambda item: (item.title.casefold(), item.title),
    "id": lambda item: _id_key(item.id),
    "type": lambda item: str(item.type),
    "space": lambda item: item.space_key.casefold(),
}


# Query --------------------------------------------------------------------------------------


@dataclass
class Query:
    """A parsed CQL query: a compiled predicate plus its `order by` clause.

    `order_by` lists (canonical field, descending) pairs in the query's order, with each
    field's default direction filled in. It is empty when the query has no `order by`.
    """

    cql: str
    time_zone: str
    order_by: list[tuple[str, bool]]
    _root: _Node = field(repr=False)
    _predicate: Predicate = field(repr=False)

    def matches(self, item: ContentLike, space_status: Callable[[str], str] | None = None) -> bool:
        """Tell whether the search returns `item`.

        Only current content is visible to CQL. `space_status` returns the status of a space
        by key. When it is given, content in an archived space is hidden, as Confluence hides
        it unless the search request sets `includeArchivedSpaces=true`. For that request, pass
        None.
        """
        if str(item.status) != "current":
            return False
        if space_status is not None and space_status(item.space_key) == "archived":
            return False
        return self._predicate(item)

    @property
    def effective_order(self) -> list[tuple[str, bool]]:
        """The ordering `sort` applies: `order_by`, or the default when it is empty."""
        return self.order_by or list(_DEFAULT_ORDER)

    def sort_key(self, item: ContentLike) -> tuple[Any, ...]:
        """Build the key `sort` orders by; ties on every ordered field fall back to the id."""
        parts: list[Any] = []
        fields_used: list[str] = []
        for field_name, descending in self.effective_order:
            value = _SORT_READERS[field_name](item)
            parts.append(_Descending(value) if descending else value)
            fields_used.append(field_name)
        if "id" not in fields_used:
            parts.append(_id_key(item.id))
        return tuple(parts)

    def sort(self, items: Iterable[_Item]) -> list[_Item]:
        """Return the items in the query's order."""
        return sorted(items, key=self.sort_key)

    def candidate_space_keys(self) -> set[str] | None:
        """Return the space keys the query restricts results to, or None when unrestricted.

        The keys are spelt as in the query and compare case-insensitively with real keys.
        An empty set means no item can match.
        """
        try:
            return set(_candidates(self._root, "space", str.casefold).values())
        except LookupError:
            return None

    def candidate_types(self) -> set[str] | None:
        """Return the lower-cased content types the query restricts to, or None."""
        try:
            return set(_candidates(self._root, "type", str.lower))
        except LookupError:
            return None

    def candidate_ids(self) -> set[str] | None:
        """Return the content ids the query restricts to (`id = 1`, `id in (...)`), or None."""
        try:
            return set(_candidates(self._root, "id", str))
        except LookupError:
            return None


def parse(
    query: str,
    *,
    time_zone: str = "UTC",
    now: datetime | None = None,
    current_user: str | None = None,
) -> Query:
    """Parse and compile a CQL query.

    `time_zone` is the IANA zone that date literals are read in. `now` is the instant that
    `now()` and the `startOf*`/`endOf*` functions start from, the current time when None.
    `current_user` is the account id that `currentUser()` names. Raises CqlError for a query
    Confluence rejects, and ValueError for an unknown time zone or a naive `now`.
    """
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {time_zone!r} for CQL date literals; "
            "use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from error
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now={now.isoformat()} has no time zone; pass an aware datetime")
    if not query.strip():
        if query:
            raise _unparsable(query, "the query is only whitespace")
        raise CqlError.required()
    root, order_by = _Parser(query).parse()
    compiler = _Compiler(query, _DateContext(query, zone, now), current_user)
    predicate = compiler.compile(root)
    return Query(query, time_zone, order_by, root, predicate)
