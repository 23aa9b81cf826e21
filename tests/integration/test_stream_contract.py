"""One contract for every stream backend: Redis Streams (the server at 127.0.0.1:6379) and Kafka.

Kafka needs a broker: set KAFKA_BOOTSTRAP_SERVERS=host:port. None runs on this machine, so the Kafka
run skips with that reason (also under MLOOP_REQUIRE_SERVICES=1, which only covers the provided
services).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mloop.batch import load_scorer
from mloop.data import generate_fraud
from mloop.streaming import StreamScorer, open_sink, open_source


@dataclass
class Backend:
    name: str
    server: str
    client: Any

    def url(self, stream: str, **query: str) -> str:
        if self.name == "redis":
            extra = "".join(f"&{k}={v}" for k, v in query.items())
            return f"{self.server}?stream={stream}{extra}"
        extra = "&".join(f"{k}={v}" for k, v in query.items())
        return f"kafka://{self.server}/{stream}" + (f"?{extra}" if extra else "")

    def produce(self, stream: str, payloads: list[str]) -> None:
        if self.name == "redis":
            pipe = self.client.pipeline()
            for p in payloads:
                pipe.xadd(stream, {"data": p})
            pipe.execute()
        else:
            for p in payloads:
                self.client.produce(stream, value=p.encode())
            self.client.flush(30)

    def entries(self, stream: str) -> list[dict[str, str]]:
        if self.name == "redis":
            return [fields for _, fields in self.client.xrange(stream)]
        from confluent_kafka import Consumer

        consumer = Consumer(
            {"bootstrap.servers": self.server, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([stream])
        out, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                out.append(json.loads(msg.value()))
        consumer.close()
        return out


@pytest.fixture(params=["redis", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url, decode_responses=True)
        yield Backend("redis", url, client)
        return
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    reason = "no Kafka broker runs on this machine: set KAFKA_BOOTSTRAP_SERVERS=host:port to run it"
    if not servers:
        pytest.skip(f"{reason} (it is unset)")
    host, _, port = servers.split(",")[0].partition(":")
    try:
        socket.create_connection((host, int(port or 9092)), timeout=2).close()
    except OSError:
        pytest.skip(f"{reason} (nothing answers at {servers})")
    from confluent_kafka import Producer

    yield Backend("kafka", servers, Producer({"bootstrap.servers": servers}))


@pytest.fixture
def names(backend: Backend) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    streams = {"source": f"ev-{tag}", "sink": f"sc-{tag}", "dead": f"ev-{tag}.dead"}
    yield streams
    if backend.name == "redis":
        backend.client.delete(*streams.values())
        for key in backend.client.scan_iter(f"mloop:seen:sc-{tag}:*"):
            backend.client.delete(key)


@pytest.fixture(scope="module")
def scorer(trained_project):
    from mloop.config import load_settings

    return load_scorer(load_settings(trained_project / "mloop.yaml"), "@champion")


def _payloads(n: int) -> list[str]:
    frame = generate_fraud(n, seed=8).drop(columns=["is_fraud"])
    return [json.dumps(r) for r in json.loads(frame.to_json(orient="records", date_format="iso"))]


def _consumer(backend: Backend, names: dict[str, str], scorer, **kw) -> StreamScorer:
    source = open_source(backend.url(names["source"], group="g", consumer="c1"), claim_idle_ms=60_000)
    return StreamScorer(
        scorer, source, open_sink(backend.url(names["sink"])), open_sink(backend.url(names["dead"])), **kw
    )


def test_results_and_dead_letters_are_keyed_by_source_id(backend, names, scorer) -> None:
    payloads = _payloads(40)
    payloads[7] = payloads[7].replace('"hour":', '"hour":"late","x":')
    payloads.append("oops")
    backend.produce(names["source"], payloads)
    consumer = _consumer(backend, names, scorer, batch_size=16, block_ms=200)
    stats = consumer.run(max_events=41, idle_exit_s=5)
    consumer.close()
    results, dead = backend.entries(names["sink"]), backend.entries(names["dead"])
    assert (stats.read, len(results), len(dead)) == (41, 39, 2)
    keys = [r["key"] for r in results] + [d["key"] for d in dead]
    assert len(set(keys)) == 41
    assert sorted(d["reason"].split(" ")[0] for d in dead) == ["hour:", "malformed:"]


def test_unacknowledged_events_are_delivered_again(backend, names, scorer) -> None:
    backend.produce(names["source"], _payloads(10))
    crashed = _consumer(backend, names, scorer, block_ms=200)
    first = []
    deadline = time.monotonic() + 10
    while not first and time.monotonic() < deadline:
        first = crashed.source.read(10, 200)  # read, never committed: a crash before the write
    assert len(first) == 10
    crashed.source.close()
    consumer = _consumer(backend, names, scorer, block_ms=200)
    stats = consumer.run(max_events=10, idle_exit_s=5)
    consumer.close()
    assert stats.read == 10
    assert sorted(r["key"] for r in backend.entries(names["sink"])) == sorted(m.id for m in first)


def test_a_replayed_commit_writes_no_second_result(backend, names, scorer) -> None:
    if backend.name == "kafka":
        pytest.skip("the Kafka sink is at-least-once: a replay repeats the result under the same key")
    backend.produce(names["source"], _payloads(6))
    consumer = _consumer(backend, names, scorer, block_ms=200)
    messages = consumer.source.read(6, 200)
    results, dead = consumer.score_messages(messages)
    ids = [m.id for m in messages]
    consumer.source.commit({consumer.sink: results, consumer.dead: dead}, ids)
    consumer.source.commit({consumer.sink: results, consumer.dead: dead}, ids)  # the replay
    consumer.close()
    assert sorted(r["key"] for r in backend.entries(names["sink"])) == sorted(ids)


def test_a_sink_on_another_server_skips_keys_it_wrote(backend, names, scorer) -> None:
    if backend.name == "kafka":
        pytest.skip("the Kafka sink is at-least-once: a replay repeats the result under the same key")
    from mloop.streaming import Entry

    sink = open_sink(backend.url(names["sink"]))
    entries = [Entry(f"{i}-0", {"key": f"{i}-0", "prediction": "0"}) for i in range(5)]
    sink.write(entries)
    sink.write([*entries[2:], Entry("9-0", {"key": "9-0", "prediction": "1"})])
    assert [r["key"] for r in backend.entries(names["sink"])] == [*(f"{i}-0" for i in range(5)), "9-0"]
