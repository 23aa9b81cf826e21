"""Redis Streams: a consumer-group source and an appending sink.

The source reads with ``XREADGROUP``: first this consumer's own pending entries (delivered before a
crash, never acknowledged), then entries of other consumers idle longer than ``claim_idle_ms``
(``XAUTOCLAIM``: a dead consumer's work), then new ones. When the sink lives on the same Redis server
and database, results are written and the source entries acknowledged by one Lua script: for each
entry, ``XACK`` and, only if that acknowledged it (it was still pending), ``XADD`` of its result, so a
replayed or concurrently claimed entry never produces a second result. A sink on another server
remembers the keys it wrote (``SET NX`` with a TTL) and skips repeats.

Events are entries with a ``data`` field holding a JSON object, or plain field/value entries (values
are text; the contract's types are read from it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mloop.errors import SourceError
from mloop.streaming.base import Entry, Message, StreamAddress, StreamSink, StreamSource

__all__ = ["RedisStreamSink", "RedisStreamSource", "redis_client"]

# Each entry travels as one JSON array of field/value pairs: packing many small arguments is most of
# redis-py's cost per event (pure Python), and cjson decodes them server-side.
_COMMIT = """
local group = ARGV[1]
local written = 0
for i = 2, #ARGV, 3 do
  local id, target, fields = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if redis.call('XACK', KEYS[1], group, id) == 1 and target > 0 then
    redis.call('XADD', KEYS[1 + target], '*', unpack(cjson.decode(fields)))
    written = written + 1
  end
end
return written
"""

_DEDUPE_WRITE = """
local ttl = ARGV[1]
local written = 0
for i = 2, #ARGV, 2 do
  if redis.call('SET', 'mloop:seen:' .. KEYS[1] .. ':' .. ARGV[i], 1, 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(ARGV[i + 1])))
    written = written + 1
  end
end
return written
"""


def _pairs(fields: Mapping[str, str]) -> str:
    return json.dumps([v for kv in fields.items() for v in kv])


def redis_client(address: StreamAddress) -> Any:
    """A client for ``address`` (fails with a clear message when the server cannot be reached)."""
    try:
        import redis
    except ImportError as exc:
        raise SourceError("Redis streams need the redis package: pip install 'mloop[redis]'.") from exc
    client = redis.Redis(
        host=address.host,
        port=address.port,
        db=address.db,
        password=address.password,
        ssl=address.scheme == "rediss",
        decode_responses=True,
        socket_connect_timeout=5,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SourceError(f"Cannot reach Redis for {address}: {exc}. Is the server running?") from exc
    return client


class RedisStreamSink(StreamSink):
    """Appends entries to a Redis stream, skipping keys written within ``dedupe_ttl_s``."""

    def __init__(self, address: StreamAddress, *, dedupe_ttl_s: int = 86_400, client: Any = None) -> None:
        self.address = address
        self.client = client or redis_client(address)
        self.dedupe_ttl_s = dedupe_ttl_s
        self._script = self.client.register_script(_DEDUPE_WRITE)

    def write(self, entries: Sequence[Entry]) -> None:
        if entries:
            args = [str(self.dedupe_ttl_s)]
            for entry in entries:
                args.extend((entry.key, _pairs(entry.fields)))
            self._script(keys=[self.address.stream], args=args)


class RedisStreamSource(StreamSource):
    """One consumer of a Redis consumer group."""

    def __init__(self, address: StreamAddress, *, claim_idle_ms: int = 60_000, client: Any = None) -> None:
        import redis

        self.address = address
        self.client = client or redis_client(address)
        self.claim_idle_ms = claim_idle_ms
        self._own_pending = True  # read our own unacknowledged entries before new ones
        self._claim_from = "0-0"
        try:
            self.client.xgroup_create(address.stream, address.group, id=address.start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise SourceError(f"Cannot create consumer group on {address}: {exc}.") from exc
        self._commit = self.client.register_script(_COMMIT)

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        a = self.address
        if self._own_pending:
            got = self.client.xreadgroup(a.group, a.consumer, {a.stream: "0"}, count=max_count)
            entries = got[0][1] if got else []
            if entries:
                return [Message(i, f or {}) for i, f in entries]
            self._own_pending = False
        claimed = self._claim(max_count)
        if claimed:
            return claimed
        got = self.client.xreadgroup(a.group, a.consumer, {a.stream: ">"}, count=max_count, block=block_ms)
        return [Message(i, f or {}) for i, f in (got[0][1] if got else [])]

    def _claim(self, max_count: int) -> list[Message]:
        a = self.address
        reply = self.client.xautoclaim(
            a.stream, a.group, a.consumer, self.claim_idle_ms, start_id=self._claim_from, count=max_count
        )
        self._claim_from = reply[0] if reply and reply[0] else "0-0"
        # Entries deleted from the stream while pending come back as None: nothing to score.
        return [Message(i, f) for i, f in (reply[1] if reply else []) if f is not None]

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.address.stream, self.address.group, *ids)

    def commit_with(self, sink: StreamSink) -> bool:
        return isinstance(sink, RedisStreamSink) and sink.address.server == self.address.server

    def commit(self, writes: Mapping[StreamSink, Sequence[Entry]], ids: Sequence[str]) -> None:
        atomic = [s for s in writes if self.commit_with(s)]
        for sink, entries in writes.items():
            if sink not in atomic and entries:
                sink.write(entries)
        targets = [s.address.stream for s in atomic]
        by_key: dict[str, tuple[int, Entry]] = {}
        for t, sink in enumerate(atomic):
            for entry in writes[sink]:
                by_key[entry.key] = (t + 1, entry)
        args: list[str] = [self.address.group]
        for id_ in ids:
            found = by_key.get(id_)
            # An id with no entry is only acknowledged (target 0).
            args.extend((id_, str(found[0]), _pairs(found[1].fields)) if found else (id_, "0", "[]"))
        self._commit(keys=[self.address.stream, *targets], args=args)
