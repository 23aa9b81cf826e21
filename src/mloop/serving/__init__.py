"""Serving: model runtime, micro-batcher, traffic router and prediction log (``.predlog``)."""

__all__: list[str] = []
