"""The stream scorer without a broker: parsing, dead letters, result fields, backpressure, stop."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from mloop.data import generate_fraud
from mloop.streaming import Entry, Message, StreamAddress, StreamScorer, StreamSink, StreamSource


class ListSink(StreamSink):
    def __init__(self) -> None:
        self.address = StreamAddress("redis", "mem", 0, "out")
        self.entries: list[Entry] = []

    def write(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)


class ListSource(StreamSource):
    def __init__(self, messages: list[Message]) -> None:
        self.address = StreamAddress("redis", "mem", 0, "in")
        self.queue = list(messages)
        self.acked: list[str] = []
        self.reads: list[int] = []

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        batch, self.queue = self.queue[:max_count], self.queue[max_count:]
        self.reads.append(len(batch))
        return batch

    def ack(self, ids: Sequence[str]) -> None:
        self.acked.extend(ids)

    def commit(self, writes: Mapping[StreamSink, Sequence[Entry]], ids: Sequence[str]) -> None:
        super().commit(writes, ids)


def _events(n: int) -> list[Message]:
    rows = json.loads(
        generate_fraud(n, seed=4).drop(columns=["is_fraud"]).to_json(orient="records", date_format="iso")
    )
    return [Message(f"{i}-0", {"data": json.dumps(r)}) for i, r in enumerate(rows)]


def _consumer(scorer, messages, **kw):
    source, sink, dead = ListSource(messages), ListSink(), ListSink()
    return StreamScorer(scorer, source, sink, dead, block_ms=1, **kw), source, sink, dead


def test_every_event_gets_one_result_or_dead_letter(fraud_scorer) -> None:
    messages = _events(30)
    broken = json.loads(messages[3].fields["data"]) | {"amount": "lots"}
    messages[3] = Message("3-0", {"data": json.dumps(broken)})
    messages.append(Message("30-0", {"data": "{not json"}))
    messages.append(Message("31-0", {"data": "[1, 2]"}))
    messages.append(Message("32-0", {"amount": "12.5", "hour": "3"}))  # plain fields, others missing
    consumer, source, sink, dead = _consumer(fraud_scorer, messages, batch_size=8)
    stats = consumer.run(idle_exit_s=0)
    assert (stats.read, stats.scored, stats.dead) == (33, 29, 4)
    assert sorted(e.key for e in sink.entries + dead.entries) == sorted(m.id for m in messages)
    assert source.acked == [m.id for m in messages]
    reasons = {e.key: e.fields["reason"] for e in dead.entries}
    assert reasons["3-0"].startswith("amount: type (got 'lots'")
    assert reasons["30-0"].startswith("malformed: the data field is not JSON")
    assert "must be a JSON object; got list" in reasons["31-0"]
    assert "merchant_category: missing" in reasons["32-0"]
    result = sink.entries[0].fields
    assert result["key"] == "0-0" and result["prediction"] in {"0", "1"}
    assert abs(float(result["proba_0"]) + float(result["proba_1"]) - 1) < 1e-9
    assert json.loads(result["event"])["transaction_id"] == "T4-0000000000"


def test_in_flight_events_are_bounded(fraud_scorer) -> None:
    consumer, source, *_ = _consumer(fraud_scorer, _events(23), batch_size=100, max_in_flight=10)
    consumer.run(idle_exit_s=0)
    assert source.reads[:3] == [10, 10, 3]


def test_stop_finishes_the_current_batch(fraud_scorer) -> None:
    consumer, source, sink, _ = _consumer(fraud_scorer, _events(20), batch_size=5)
    consumer.on_batch = lambda stats: consumer.stop()
    stats = consumer.run()
    assert stats.read == 5 and source.acked == [f"{i}-0" for i in range(5)] and len(sink.entries) == 5
    assert consumer.stopping
