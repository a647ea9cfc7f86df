"""Headwater's exceptions: one root, a few branches.

    HeadwaterError
    ├── ConfigError            configuration file missing, unparsable or invalid
    ├── StorageError           PostgreSQL could not be started, reached or migrated
    ├── LogError               the log refused an operation
    │   ├── TopicNotFound
    │   ├── TopicMismatch      a topic exists with a different definition
    │   └── FencedError        another worker owns the partitions this batch read
    ├── ProcessingError        a record could not be processed (goes to the DLQ)
    ├── RetryableError         a transient failure: the batch is retried with backoff
    ├── SourceError            a source cannot capture (setup refused, slot lost, bad data)
    ├── MissingDependency      an optional extra is not installed
    └── DemoError              ``headwater demo``: the stack or its walk-through failed

Messages never contain secrets: DSNs are shown with their password masked.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Root of every error Headwater raises on purpose."""


class ConfigError(HeadwaterError):
    """The configuration is missing or invalid. The message names file, key and fix."""


class StorageError(HeadwaterError):
    """PostgreSQL could not be started, reached or migrated."""


class LogError(HeadwaterError):
    """An operation on the log failed."""


class TopicNotFound(LogError):
    """The topic does not exist."""


class TopicMismatch(LogError):
    """A topic of this name exists with another definition (e.g. partition count)."""


class FencedError(LogError):
    """The committed offsets moved under this worker: another worker owns the partition.

    The batch's transaction must be rolled back; nothing it wrote becomes visible.
    """


class ProcessingError(HeadwaterError):
    """A record could not be processed; the worker sends it to the dead-letter topic."""


class RetryableError(HeadwaterError):
    """A transient failure (a service briefly away); the worker retries the batch."""


class SourceError(HeadwaterError):
    """A source cannot capture changes: the database refused the setup (``wal_level``,
    privileges), its position is gone (a dropped or invalidated slot), or a change could
    not be decoded. The message says what to change; nothing is skipped silently."""


class MissingDependency(HeadwaterError):
    """An optional dependency is missing; the message holds the exact install line."""


def require(module: str, extra: str) -> object:
    """Import an optional module or raise MissingDependency with the pip line to fix it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed; install it with: pip install 'headwater[{extra}]'"
        ) from exc


class DemoError(HeadwaterError):
    """``headwater demo``: the stack did not become ready in time, or a step of the
    walk-through got a wrong answer. The message says which step and why."""
