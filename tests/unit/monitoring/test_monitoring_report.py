"""HTML and JSON reports carry the same facts; HTML is self-contained."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from mloop.monitoring import build_profile, detect_drift
from mloop.monitoring.report import write_html, write_json


def test_html_and_json_reports(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"x": rng.normal(size=2000), "c": rng.choice(["a", "b", "<c>"], 2000), "k": rng.integers(0, 3, 2000)}
    )
    cur = pd.DataFrame({"x": rng.normal(1, size=500), "c": rng.choice(["a", "new"], 500), "extra": 1})
    profile = build_profile(ref)
    report = detect_drift(profile, cur)
    html_path = write_html(report, tmp_path / "r" / "drift.html", reference=profile, current=cur)
    json_path = write_json(report, tmp_path / "r" / "drift.json")
    text = html_path.read_text()
    # x and c plotted (k is missing from the window), plus the multivariate check's contributions
    assert text.count("<svg") == 3
    assert "<script" not in text and not re.search(r"(src|href)=['\"]https?://", text)
    assert "&lt;c&gt;" in text and "missing_in_current" in text and "extra" in text
    for col in report.columns:
        assert col.column in text and (col.test or "") in text
    assert "calibrated for the window size" in text
    data = json.loads(json_path.read_text())
    assert data["drifted_columns"] == report.drifted_columns == ["x", "c"]
    assert data["columns"][0]["threshold"] == report.columns[0].threshold
    assert data["dataset_drifted"] is True and data["extra_columns"] == ["extra"]


def test_html_accepts_a_dataframe_reference(tmp_path) -> None:
    ref = pd.DataFrame({"x": np.arange(100.0)})
    cur = pd.DataFrame({"x": np.arange(50.0)})
    report = detect_drift(ref, cur)
    path = write_html(report, tmp_path / "a.html", reference=ref, current=cur)
    assert "<svg" in path.read_text()
