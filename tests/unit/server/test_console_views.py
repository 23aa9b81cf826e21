"""The console's read models that need no HTTP: the window against the reference, monitoring series."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mloop.config import Settings
from mloop.monitoring.history import record_window
from mloop.server.console.charts import compare_to_reference
from mloop.server.console.views import ConsoleData
from mloop.store import open_store

PROFILE = {
    "columns": [
        {"name": "amount", "hist_edges": [0.0, 10.0, 20.0], "hist_counts": [30, 10]},
        {"name": "country", "levels": ["DE", "FR"], "level_counts": [50, 50]},
        {"name": "absent", "hist_edges": [0.0, 1.0], "hist_counts": [5]},
        {"name": "txn_count", "levels": [0.0, 1.0, 2.0], "level_counts": [1, 1, 2]},
    ]
}


def test_the_window_is_binned_on_the_reference_bins_as_shares() -> None:
    frame = pd.DataFrame(
        {"amount": [1.0, 15.0, 19.0, 500.0], "country": ["FR", "FR", "FR", "US"], "txn_count": [2, 2, 0, 7]}
    )
    amount, country, counts = compare_to_reference(PROFILE, frame)
    assert amount["name"] == "amount" and amount["rows"] == 4
    assert [b["reference"] for b in amount["bars"]] == [0.75, 0.25]
    assert [b["current"] for b in amount["bars"]] == [0.25, 0.75]  # 500 is clipped into the last bin
    assert max(b["cur_h"] for b in amount["bars"]) == 1.0
    assert [b["label"] for b in country["bars"]] == ["DE", "FR"]
    assert [b["current"] for b in country["bars"]] == [0.0, 0.75]  # US is outside the reference levels
    assert [b["label"] for b in counts["bars"]] == ["0", "1", "2"]
    assert [b["current"] for b in counts["bars"]] == [0.25, 0.0, 0.5]  # ints match float levels
    assert compare_to_reference(None, frame) == []


def test_monitoring_series_keep_columns_aligned_across_windows(tmp_path: Path) -> None:
    settings = Settings.model_validate({"model": {"name": "fraud"}}).model_copy(update={"root": tmp_path})
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as store:
        for n, scores in enumerate([{"amount": 0.1}, {"amount": 0.2, "hour": 0.4}]):
            summary = {
                "model": "fraud",
                "version": "3",
                "ts": f"2026-01-01T00:0{n}:00+00:00",
                "rows": 100 + n,
                "drift": {"scores": scores, "thresholds": {k: 0.3 for k in scores}},
                "quality": {"metrics": {"roc_auc": 0.8 + n / 10}, "labelled_rows": 10 * n},
            }
            record_window(store, summary)
        view = ConsoleData(settings, store).monitoring("3")
    assert view["windows"] == 2 and view["rows"] == [100, 101] and view["labelled"] == [0, 10]
    assert view["columns"]["amount"] == {"score": [0.1, 0.2], "threshold": [0.3, 0.3]}
    assert view["columns"]["hour"] == {"score": [None, 0.4], "threshold": [None, 0.3]}
    assert view["quality"]["roc_auc"] == [0.8, pytest.approx(0.9)]
    assert view["ts"][1] - view["ts"][0] == 60


def test_no_page_loads_anything_from_another_host() -> None:
    import re

    import mloop.server.console as console

    root = Path(console.__file__).parent
    templates = list((root / "templates").iterdir())
    assert templates
    for template in templates:
        text = template.read_text(encoding="utf-8")
        assert not re.search(r'(?:src|href)="(?:https?:)?//', text), template.name
    scripts = {p.name for p in (root / "static").iterdir()}
    for name in re.findall(r'static/([\w.-]+)"', "".join(t.read_text(encoding="utf-8") for t in templates)):
        assert name in scripts, f"{name} is referenced but not shipped"


def test_prediction_distribution_series_leave_older_windows_empty(tmp_path: Path) -> None:
    settings = Settings.model_validate({"model": {"name": "fraud"}}).model_copy(update={"root": tmp_path})
    windows = [
        None,  # stored before windows kept the prediction summary
        {"kind": "classes", "rows": 10, "shares": {"0": 0.9, "1": 0.1}},
        {"kind": "classes", "rows": 10, "shares": {"0": 0.6, "1": 0.3, "2": 0.1}},
    ]
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as store:
        for n, predictions in enumerate(windows):
            summary = {"model": "fraud", "version": "3", "ts": f"2026-01-01T00:0{n}:00+00:00", "rows": 10}
            if predictions is not None:
                summary["predictions"] = predictions
            record_window(store, summary)
        view = ConsoleData(settings, store).monitoring("3")
    assert view["predictions"] == {
        "kind": "classes",
        "windows": 2,
        "series": {"0": [None, 0.9, 0.6], "1": [None, 0.1, 0.3], "2": [None, None, 0.1]},
    }
