"""`mloop rollout status`: the text and --json agree on the step; A/B and shadow numbers are rounded."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from mloop.cli.rollout import _show
from mloop.store.records import Arm, Rollout

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rollout(strategy: str, step: int, analysis: dict[str, Any]) -> Rollout:
    return Rollout(
        id=7,
        model_name="fraud",
        strategy=strategy,
        state="running",
        baseline_version="1",
        candidate_version="2",
        step=step,
        step_started_at=NOW,
        created_at=NOW,
        updated_at=NOW,
        ended_at=None,
        actor="cli",
        reason="test",
        revision=1,
        config={"steps": [5.0, 25.0, 50.0, 100.0]} if strategy == "canary" else {},
        analysis=analysis,
        arms=(Arm("champion", "1", 0.75), Arm("canary", "2", 0.25)),
    )


def test_text_and_json_agree_on_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    r = rollout("canary", 1, {})
    _show(r, as_json=True)
    data = json.loads(capsys.readouterr().out)
    _show(r, as_json=False)
    text = capsys.readouterr().out
    assert data["step"] == 1 and data["step_number"] == 2 and data["steps_total"] == 4
    assert f"step {data['step_number']} of {data['steps_total']}" in text


def test_ab_and_shadow_numbers_print_rounded_and_none_as_dash(capsys: pytest.CaptureFixture[str]) -> None:
    analysis = {
        "verdict": "no winner yet",
        "comparisons": [
            {
                "arm": "b",
                "metric": "conversion",
                "n_challenger": 1234,
                "n_champion": 1200,
                "min_sample_size": None,
                "effect": 0.012345678901234567,
                "ci": [-0.0034567890123456, 0.028765432109876543],
                "p_value": 0.1234567890123456,
            }
        ],
        "agreement_rate": 0.987654321987654,
        "compared": 500,
        "latency_ratio": None,
    }
    _show(rollout("ab", 0, analysis), as_json=False)
    out = capsys.readouterr().out
    assert "None" not in out
    assert not re.search(r"\d\.\d{6,}", out), out
    assert "effect 0.01235" in out and "CI [-0.00346, 0.0288]" in out and "p=0.123" in out
    assert "(min -)" in out and "agreement 98.8%" in out and "latency ratio -" in out
