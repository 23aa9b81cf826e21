"""Open stream sources and sinks from URLs: the one place that maps schemes to backends."""

from __future__ import annotations

from mloop.errors import ConfigError
from mloop.streaming.base import SCHEMES, StreamAddress, StreamSink, StreamSource, parse_stream_url

__all__ = ["open_sink", "open_source"]


def open_source(url: str | StreamAddress, *, claim_idle_ms: int = 60_000) -> StreamSource:
    """The consumer-group source for ``url`` (``redis://…?stream=…`` or ``kafka://…/topic``)."""
    address = url if isinstance(url, StreamAddress) else parse_stream_url(url)
    if address.scheme in ("redis", "rediss"):
        from mloop.streaming.redis_stream import RedisStreamSource

        return RedisStreamSource(address, claim_idle_ms=claim_idle_ms)
    if address.scheme == "kafka":
        from mloop.streaming.kafka_stream import KafkaSource

        return KafkaSource(address)
    raise ConfigError(f"No stream backend for {address.scheme!r}; known: {', '.join(SCHEMES)}.")


def open_sink(url: str | StreamAddress, *, dedupe_ttl_s: int = 86_400) -> StreamSink:
    """The appending sink for ``url``."""
    address = url if isinstance(url, StreamAddress) else parse_stream_url(url)
    if address.scheme in ("redis", "rediss"):
        from mloop.streaming.redis_stream import RedisStreamSink

        return RedisStreamSink(address, dedupe_ttl_s=dedupe_ttl_s)
    if address.scheme == "kafka":
        from mloop.streaming.kafka_stream import KafkaSink

        return KafkaSink(address)
    raise ConfigError(f"No stream backend for {address.scheme!r}; known: {', '.join(SCHEMES)}.")
