"""Inference statistics of one loaded version, in the form of Triton's statistics extension.

``GET /v2/models/{name}/stats`` (and ``/v2/models/stats``) answers what Triton answers, so its
clients (``get_inference_statistics``) and dashboards read mloop too. Counted on every protocol's
requests, in process (with several workers, each worker reports its own), at a few additions per
request:

* ``success`` / ``fail``: requests answered or refused, with their whole time in the service;
* ``compute_input``: decoding and contract validation; ``queue``: waiting for the micro-batch (the
  request's time in the batcher less the model call); ``compute_infer``: the model call of the batch
  the request rode in; ``compute_output``: encoding the answer;
* ``inference_count``: rows predicted; ``execution_count`` and ``batch_stats``: model calls, by rows
  per call.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["InferenceStats"]


class InferenceStats:
    """Counters of one version (see the module docstring); times in nanoseconds as Triton reports."""

    __slots__ = (
        "batches",
        "compute_infer",
        "compute_input",
        "compute_output",
        "execution_count",
        "fail",
        "inference_count",
        "last_inference_ms",
        "queue",
        "success",
    )

    def __init__(self) -> None:
        self.success = [0, 0]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute_input = [0, 0]
        self.compute_infer = [0, 0]
        self.compute_output = [0, 0]
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}
        """Rows per model call -> [calls, nanoseconds in the model]."""

    def request(self, ok: bool, total_s: float, input_s: float, wait_s: float, model_s: float) -> None:
        """One request: answered (``ok``) or refused, with the time spent in each stage."""
        counter = self.success if ok else self.fail
        counter[0] += 1
        counter[1] += int(total_s * 1e9)
        self.compute_input[0] += 1
        self.compute_input[1] += int(input_s * 1e9)
        if ok:
            self.queue[0] += 1
            self.queue[1] += int(max(wait_s - model_s, 0.0) * 1e9)
            self.compute_infer[0] += 1
            self.compute_infer[1] += int(model_s * 1e9)
            self.last_inference_ms = int(time.time() * 1000)

    def output(self, seconds: float) -> None:
        """One answer encoded in ``seconds``."""
        self.compute_output[0] += 1
        self.compute_output[1] += int(seconds * 1e9)

    def batch(self, rows: int, seconds: float) -> None:
        """One model call of ``rows`` rows."""
        self.inference_count += rows
        self.execution_count += 1
        entry = self.batches.get(rows)
        if entry is None:
            entry = self.batches[rows] = [0, 0]
        entry[0] += 1
        entry[1] += int(seconds * 1e9)

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """One ``model_stats`` entry of Triton's statistics response."""

        def d(pair: list[int]) -> dict[str, int]:
            return {"count": pair[0], "ns": pair[1]}

        zero = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": d(self.success),
                "fail": d(self.fail),
                "queue": d(self.queue),
                "compute_input": d(self.compute_input),
                "compute_infer": d(self.compute_infer),
                "compute_output": d(self.compute_output),
                # No response cache: every request is computed.
                "cache_hit": zero,
                "cache_miss": zero,
            },
            # A batch's inputs and outputs are built inside its model call: counted in compute_infer.
            "batch_stats": [
                {
                    "batch_size": rows,
                    "compute_input": zero,
                    "compute_infer": {"count": calls, "ns": ns},
                    "compute_output": zero,
                }
                for rows, (calls, ns) in sorted(self.batches.items())
            ],
        }
