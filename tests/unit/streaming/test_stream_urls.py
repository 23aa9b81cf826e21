"""Stream URLs: the documented forms parse, anything else fails with the expected form."""

from __future__ import annotations

import pytest

from mloop.errors import ConfigError
from mloop.streaming import parse_stream_url


def test_redis_url_with_every_option() -> None:
    a = parse_stream_url("redis://:secret@cache:6380/2?stream=tx&group=scorers&consumer=c1&start=$")
    assert (a.scheme, a.host, a.port, a.db, a.stream, a.group, a.consumer, a.start, a.password) == (
        "redis",
        "cache",
        6380,
        2,
        "tx",
        "scorers",
        "c1",
        "$",
        "secret",
    )


def test_redis_defaults() -> None:
    a = parse_stream_url("redis://127.0.0.1?stream=tx")
    assert (a.port, a.db, a.group, a.start) == (6379, 0, "mloop", "0") and a.consumer


def test_kafka_topic_from_the_path_and_extra_options_pass_through() -> None:
    a = parse_stream_url("kafka://broker:9093/transactions?group=g&security.protocol=SSL")
    assert (a.host, a.port, a.stream, a.group) == ("broker", 9093, "transactions", "g")
    assert a.options == {"security.protocol": "SSL"}
    assert parse_stream_url("kafka://broker/t").port == 9092


def test_same_server_is_recognised() -> None:
    a = parse_stream_url("redis://h:1/0?stream=a")
    assert a.server == parse_stream_url("redis://h:1/0?stream=b").server
    assert a.server != parse_stream_url("redis://h:1/1?stream=a").server
    assert a.with_stream("a.dead").stream == "a.dead"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://x/y", "expected redis://"),
        ("redis://h:1/0", r"add \?stream=NAME"),
        ("redis://h:1/abc?stream=s", "database number"),
        ("kafka://h:1", "names no stream"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_stream_url(url)
