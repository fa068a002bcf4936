"""Exceptions of the consumers, grouped by what the consume loop does next.

    ConsumerError
    +-- TransientError       back off, then retry the same batch (offsets are not stored)
    +-- PoisonRecordError    send one record to the dead-letter topic, retry the others
    +-- FatalConsumerError   stop the consumer with exit status 1
        +-- DeadLetterError  a dead-letter record could not be delivered

A handler raises ``TransientError`` for an outage of the store it writes to (for example
MongoDB being unreachable), and ``PoisonRecordError`` for one record it can never write.
``is_transient`` also classifies pymongo's own exceptions, so a handler may let them
propagate unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

if TYPE_CHECKING:
    from consumer.runtime import ConsumedRecord

# Server error codes that mean "try again later": the codes pymongo 4.20 retries writes on
# (pymongo.helpers_shared._RETRYABLE_ERROR_CODES) plus WriteConflict.
RETRYABLE_SERVER_CODES = frozenset(
    {
        134,  # ReadConcernMajorityNotAvailableYet
        10058,  # LegacyNotPrimary
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        189,  # PrimarySteppedDown
        # A cursor that a server restart dropped; the retried batch opens a new one.
        43,  # CursorNotFound
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


class ConsumerError(Exception):
    """Root of the consumer errors."""


class TransientError(ConsumerError):
    """A temporary failure: the runtime backs off and retries the same batch."""


class PoisonRecordError(ConsumerError):
    """One record that the handler can never process; it goes to the dead-letter topic."""

    def __init__(self, record: ConsumedRecord, reason: str) -> None:
        super().__init__(
            f"record {record.topic}[{record.partition}]@{record.offset} cannot be processed: "
            f"{reason}"
        )
        self.record = record
        self.reason = reason


class FatalConsumerError(ConsumerError):
    """A failure that retrying cannot fix; the consumer stops with exit status 1."""


class DeadLetterError(FatalConsumerError):
    """A poison record could not be written to its dead-letter topic."""


def is_transient(error: BaseException) -> bool:
    """Return True when ``error`` is a temporary failure worth retrying the batch for.

    Covered: ``TransientError``; pymongo's connection failures (``AutoReconnect``,
    ``NetworkTimeout``, ``ServerSelectionTimeoutError``, ``NotPrimaryError`` and
    ``ConnectionFailure`` itself); write concern errors, also inside a ``BulkWriteError``
    without other write errors; errors labelled ``RetryableWriteError``; and server
    errors whose code is in ``RETRYABLE_SERVER_CODES``.
    """
    if isinstance(error, TransientError):
        return True
    if isinstance(error, ConnectionFailure | WriteConcernError):
        return True
    if isinstance(error, BulkWriteError):
        details = error.details or {}
        write_errors = details.get("writeErrors") or []
        if not write_errors:
            return bool(details.get("writeConcernErrors"))
        return all(item.get("code") in RETRYABLE_SERVER_CODES for item in write_errors)
    if isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"):
        return True
    return isinstance(error, OperationFailure) and error.code in RETRYABLE_SERVER_CODES
