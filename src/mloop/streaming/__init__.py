"""Stream scoring: read events from Redis Streams or Kafka, score them, write results to another stream.

:class:`StreamScorer` reads a batch of events as one consumer of a consumer group, validates and scores
them with the batch :class:`~mloop.batch.Scorer` (the serving contract rules), writes results keyed by
the source message id, sends malformed or invalid events to a dead-letter stream with the reason, and
acknowledges only after writing (at-least-once; no duplicate results on replay). Backends sit behind
:class:`StreamSource`/:class:`StreamSink`, chosen by URL (:func:`open_source`, :func:`open_sink`):

    redis://host:port/db?stream=NAME&group=G[&consumer=C&start=0]
    kafka://host:port/topic?group=G
"""

from mloop.streaming.api import build_stream_scorer
from mloop.streaming.base import Entry, Message, StreamAddress, StreamSink, StreamSource, parse_stream_url
from mloop.streaming.consumer import StreamScorer, StreamStats, install_signal_handlers
from mloop.streaming.factory import open_sink, open_source

__all__ = [
    "Entry",
    "Message",
    "StreamAddress",
    "StreamScorer",
    "StreamSink",
    "StreamSource",
    "StreamStats",
    "build_stream_scorer",
    "install_signal_handlers",
    "open_sink",
    "open_source",
    "parse_stream_url",
]
