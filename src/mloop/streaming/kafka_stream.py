"""Kafka (confluent-kafka): a consumer-group source and a keyed producer sink.

The source commits offsets only through :meth:`ack`, after results are written (auto-commit is off),
so a crash replays uncommitted events (at-least-once). Results are produced with the source message id
(``topic:partition:offset``) as the Kafka key by an idempotent producer and flushed before the offsets
are committed. A replay after a crash between the two can therefore produce a result a second time,
with the same key: read the result topic as a compacted topic, or drop repeated keys downstream.

Events are messages whose value is a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mloop.errors import SourceError
from mloop.streaming.base import Entry, Message, StreamAddress, StreamSink, StreamSource

__all__ = ["KafkaSink", "KafkaSource"]


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise SourceError("Kafka streams need confluent-kafka: pip install 'mloop[kafka]'.") from exc
    return confluent_kafka


class KafkaSink(StreamSink):
    """Produces entries as JSON values keyed by the source message id."""

    def __init__(self, address: StreamAddress) -> None:
        ck = _kafka()
        self.address = address
        self.producer = ck.Producer(
            {
                "bootstrap.servers": f"{address.host}:{address.port}",
                "enable.idempotence": True,
                "acks": "all",
                **address.options,
            }
        )
        self._errors: list[str] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def write(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self.producer.produce(
                self.address.stream,
                key=entry.key.encode(),
                value=json.dumps(dict(entry.fields)).encode(),
                on_delivery=self._delivered,
            )
            self.producer.poll(0)
        left = self.producer.flush(30)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise SourceError(
                f"Kafka did not confirm {left or len(errors)} result(s) on {self.address}: "
                f"{'; '.join(errors[:3]) or 'timed out'}. Nothing was acknowledged; they will be retried."
            )

    def close(self) -> None:
        self.producer.flush(30)


class KafkaSource(StreamSource):
    """One member of a Kafka consumer group; offsets are committed only by :meth:`ack`."""

    def __init__(self, address: StreamAddress) -> None:
        ck = _kafka()
        self.address = address
        self._ck = ck
        start = {"0": "earliest", "$": "latest"}.get(address.start, address.start)
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": f"{address.host}:{address.port}",
                "group.id": address.group,
                "client.id": address.consumer,
                "enable.auto.commit": False,
                "auto.offset.reset": start,
                **address.options,
            }
        )
        self.consumer.subscribe([address.stream])
        self._positions: dict[str, Any] = {}

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        out: list[Message] = []
        for msg in self.consumer.consume(num_messages=max_count, timeout=block_ms / 1000):
            if msg.error():
                if msg.error().code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                raise SourceError(f"Kafka read failed on {self.address}: {msg.error()}.")
            id_ = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            value = msg.value()
            text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
            self._positions[id_] = self._ck.TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)
            out.append(Message(id_, {"data": text}))
        return out

    def ack(self, ids: Sequence[str]) -> None:
        latest: dict[tuple[str, int], Any] = {}
        for id_ in ids:
            tp = self._positions.pop(id_, None)
            if tp is not None:
                key = (tp.topic, tp.partition)
                if key not in latest or latest[key].offset < tp.offset:
                    latest[key] = tp
        if latest:
            self.consumer.commit(offsets=list(latest.values()), asynchronous=False)

    def close(self) -> None:
        self.consumer.close()
