"""Serving metrics read right in Prometheus: the latency histogram splits answers by status class,
and the batch-size histogram's median of single-row batches is 1 (evaluated by ``promtool``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mloop.serving.metrics import ServingMetrics, status_class


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 204, 400, 404, 422, 499, 500, 503)] == [
        "2xx",
        "2xx",
        "4xx",
        "4xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
    ]


def test_request_latency_has_a_status_class_label() -> None:
    m = ServingMetrics()
    m.observe_request("fraud", "1", "invocations", 200, 0.001)
    m.observe_request("fraud", "1", "invocations", 422, 2.0)
    m.observe_request("fraud", "1", "invocations", 503, 0.0)
    count = "mloop_request_latency_seconds_count"
    base = {"model": "fraud", "endpoint": "invocations"}
    assert m.sample(count, {**base, "status": "2xx"}) == 1.0
    assert m.sample(count, {**base, "status": "4xx"}) == 1.0
    assert m.sample(count, {**base, "status": "5xx"}) == 1.0
    # The slow refusal stays out of the 2xx latency.
    assert m.sample("mloop_request_latency_seconds_sum", {**base, "status": "2xx"}) == 0.001
    # The request counter keeps the exact status.
    assert m.sample("mloop_requests_total", {**base, "version": "1", "status": "422"}) == 1.0


def _bucket_series(m: ServingMetrics, name: str) -> list[dict[str, str]]:
    """Input series for ``promtool test rules``: each bucket grows by its current count per minute."""
    series = []
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                series.append({"series": f"{name}_bucket{{{labels}}}", "values": f"0+{s.value:g}x20"})
    return series


@pytest.mark.parametrize(("sizes", "median"), [([1] * 50, 1.0), ([2] * 50, 2.0)])
def test_batch_size_median_in_prometheus(tmp_path: Path, sizes: list[int], median: float) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    m = ServingMetrics()
    for n in sizes:
        m.batch_child("fraud").observe(n)
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _bucket_series(m, "mloop_batch_size"),
                "promql_expr_test": [
                    {
                        "expr": "histogram_quantile(0.5, sum by (le) (rate(mloop_batch_size_bucket[5m])))",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": median}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "t.yml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
