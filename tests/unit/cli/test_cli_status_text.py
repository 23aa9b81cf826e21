"""`mloop status` text: no raw ``None`` and no 16-digit floats, whatever the report leaves empty."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mloop.cli.loop import print_status


def report(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "fraud",
        "serving": {
            "aliases": {"champion": "3", "challenger": None},
            "arms": [
                {"arm": "champion", "version": "3", "weight": 0.7512345678901234, "shadow": False},
                {"arm": "canary", "version": None, "weight": None, "shadow": False},
            ],
        },
        "cycles": [
            {"id": 5, "state": "rejected", "trigger": "drift", "version": None, "reason": None},
            {"id": 4, "state": "promoted", "trigger": "schedule", "version": "3", "reason": "v3 promoted"},
        ],
        "loop": {"leader": "pod-a:loop", "fence": None},
        "monitoring": {
            "rows": 12345,
            "version": None,
            "drift": {"share_drifted": 0.3333333333333333, "drifted_columns": ["amount"]},
            "quality": {
                "metrics": {"roc_auc": 0.9123456789012345, "f1": None},
                "labelled_rows": 800,
                "rows": 12345,
            },
        },
        "timeline": [
            {
                "ts": "2026-01-01T10:11:12+00:00",
                "kind": "gate.unchanged",
                "subject": "fraud/v4",
                "actor": "trainer",
                "reason": None,
            }
        ],
    }
    base.update(over)
    return base


def printed(capsys: pytest.CaptureFixture[str], data: dict[str, Any]) -> str:
    print_status(data)
    return capsys.readouterr().out


def test_status_never_prints_raw_none_or_long_floats(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(capsys, report())
    assert "None" not in out
    assert not re.search(r"\d\.\d{6,}", out), out
    assert "challenger: -  champion: v3" in out
    assert "75%" in out  # the champion arm's weight, rounded
    assert "loop leader: pod-a:loop (fence -)" in out
    assert "12,345 rows of -, drift share 33% (amount)" in out
    assert "quality roc_auc 0.9123, f1 - on 800 labelled rows" in out
    assert "v{" not in out and "{" not in out  # no JSON dumped into the line


def test_status_with_an_empty_window_and_no_leader(capsys: pytest.CaptureFixture[str]) -> None:
    data = report(
        loop={"leader": None, "fence": None},
        monitoring={"rows": None, "version": "3", "drift": None, "quality": {"metrics": {}}},
        cycles=[],
        serving={"aliases": {}, "arms": []},
    )
    out = printed(capsys, data)
    assert "None" not in out
    assert "fraud  no versions" in out
    assert "loop leader: none" in out
    assert "last monitoring window: - rows of v3, drift share - (none)" in out
    assert "quality" not in out  # nothing labelled: no quality to show
