"""Where the routing key of a request comes from."""

from __future__ import annotations

from mloop.rollout import routing_key


def test_header_wins_then_configured_header_then_request_field() -> None:
    body = {"features": {"customer_id": 42, "amount": 1.0}}
    assert routing_key("customer_id", {"x-routing-key": "abc"}, body) == "abc"
    assert routing_key("header:X-Customer", {"x-customer": "c7"}, body) == "c7"
    assert routing_key("customer_id", {}, {"customer_id": 42}) == "42"
    assert routing_key("customer_id", {}, [{"customer_id": 7}, {"customer_id": 8}]) == "7"
    split = {"dataframe_split": {"columns": ["amount", "customer_id"], "data": [[1.0, 99]]}}
    assert routing_key("customer_id", {}, split) == "99"
    assert routing_key(None, {}, body) is None
    assert routing_key("missing", {}, {"a": 1}) is None


def test_native_features_wrapper_is_searched() -> None:
    assert routing_key("customer_id", {}, {"features": {"customer_id": "k1"}}) == "k1"
    assert routing_key("customer_id", {}, {"features": [{"customer_id": "k2"}]}) == "k2"
