"""The stream interface every backend implements, and the URL form that names a stream.

A backend is a :class:`StreamSource` (read events in a consumer group, acknowledge them) and a
:class:`StreamSink` (append result and dead-letter entries, keyed by the source message id). When a
source can write its results and acknowledge them in one atomic step (Redis, same server),
it says so with :meth:`StreamSource.commit_with`, and a replay can never duplicate a result.

URLs::

    redis://host:port/db?stream=NAME&group=G&consumer=C&start=0
    kafka://host:port/topic?group=G

``group`` defaults to ``mloop``, ``consumer`` to the host name (stable across restarts, so a restarted
consumer takes back its own unacknowledged events first), ``start`` (where a new group begins) to
``0``: the whole stream (Kafka: ``earliest``); ``$``/``latest`` starts with new events only.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from mloop.errors import ConfigError

__all__ = ["Entry", "Message", "StreamAddress", "StreamSink", "StreamSource", "parse_stream_url"]

SCHEMES = ("redis", "rediss", "kafka")


@dataclass(frozen=True)
class Message:
    """One event read from a source: its id in the source and its fields."""

    id: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Entry:
    """One entry to append to a sink: the source message id it answers, and its fields."""

    key: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class StreamAddress:
    """A parsed stream URL."""

    scheme: str
    host: str
    port: int
    stream: str
    group: str = "mloop"
    consumer: str = field(default_factory=socket.gethostname)
    db: int = 0
    start: str = "0"
    password: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def server(self) -> tuple[str, str, int, int]:
        """What identifies the server (and database) behind the URL."""
        return (self.scheme, self.host, self.port, self.db)

    def with_stream(self, stream: str) -> StreamAddress:
        from dataclasses import replace

        return replace(self, stream=stream)

    def __str__(self) -> str:
        where = f"{self.host}:{self.port}"
        if self.scheme == "kafka":
            return f"kafka://{where}/{self.stream} (group {self.group})"
        return f"{self.scheme}://{where}/{self.db} stream {self.stream!r} (group {self.group})"


def parse_stream_url(url: str) -> StreamAddress:
    """Parse ``redis://…?stream=…`` or ``kafka://…/topic``; errors name the expected form."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"Unsupported stream URL {url!r}: expected redis://host:port/db?stream=NAME&group=G "
            "or kafka://host:port/topic?group=G."
        )
    query = dict(parse_qsl(parts.query))
    known = {"stream", "group", "consumer", "start"}
    options = {k: v for k, v in query.items() if k not in known}
    path = parts.path.strip("/")
    if parts.scheme == "kafka":
        stream, db = query.get("stream") or path, 0
        default_port = 9092
    else:
        if path and not path.isdigit():
            raise ConfigError(f"In {url!r} the path must be the Redis database number, e.g. /0.")
        stream, db = query.get("stream", ""), int(path or 0)
        default_port = 6379
    if not stream:
        raise ConfigError(
            f"The stream URL {url!r} names no stream: add ?stream=NAME (Redis) or /topic (Kafka)."
        )
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"The stream URL {url!r} has an invalid port: {exc}.") from exc
    return StreamAddress(
        scheme=parts.scheme,
        host=parts.hostname or "127.0.0.1",
        port=port,
        stream=stream,
        group=query.get("group", "mloop"),
        consumer=query.get("consumer") or socket.gethostname(),
        db=db,
        start=query.get("start", "0"),
        password=parts.password,
        options=options,
    )


class StreamSink(ABC):
    """Appends entries to a stream; ``key`` (the source message id) keeps replays from duplicating."""

    address: StreamAddress

    @abstractmethod
    def write(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` durably, skipping keys this sink has already written."""

    def close(self) -> None:  # noqa: B027 - optional hook: not every sink holds resources
        """Flush and release connections."""


class StreamSource(ABC):
    """Reads events as one consumer of a consumer group."""

    address: StreamAddress

    @abstractmethod
    def read(self, max_count: int, block_ms: int) -> list[Message]:
        """Up to ``max_count`` events: this consumer's unacknowledged ones first, then new ones."""

    @abstractmethod
    def ack(self, ids: Sequence[str]) -> None:
        """Mark events done: they will not be delivered again."""

    def commit_with(self, sink: StreamSink) -> bool:
        """True when :meth:`commit` can write to ``sink`` and acknowledge in one atomic step."""
        return False

    def commit(self, writes: Mapping[StreamSink, Sequence[Entry]], ids: Sequence[str]) -> None:
        """Write the entries and acknowledge ``ids`` (atomically when ``commit_with`` says so)."""
        for sink, entries in writes.items():
            if entries:
                sink.write(entries)
        self.ack(ids)

    def close(self) -> None:  # noqa: B027 - optional hook: not every source holds resources
        """Release connections (unacknowledged events stay pending for redelivery)."""
