"""The controller's state machine with real training subprocesses and the real MLflow registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from loop_support import ScriptedRollouts, make_project, wait_terminal

from mloop.config import load_settings
from mloop.control import Controller, Trigger, approve
from mloop.control.retrain import CYCLE_TAG
from mloop.errors import ControlError
from mloop.store import open_store


def controller_for(settings, **kw):
    store = open_store(settings.store_url)
    return Controller(settings, store=store, rollouts=ScriptedRollouts(settings, store, **kw))


def versions_of_cycle(ctrl: Controller, cycle_id: int) -> list[int]:
    return [v.version for v in ctrl.registry.versions() if v.tags.get(CYCLE_TAG) == str(cycle_id)]


def test_full_cycle_is_recorded_and_promotes(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p")
    ctrl = controller_for(settings)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:1", "test trigger"))
    assert cycle is not None and cycle.state == "triggered"
    assert ctrl.start_cycle(Trigger("manual", "manual:1", "same trigger again")) is None
    done = wait_terminal(ctrl, cycle.id)
    assert done.state == "promoted", done.reason
    assert versions_of_cycle(ctrl, cycle.id) == [2]
    assert ctrl.registry.by_alias("champion").version == 2
    kinds = [e.kind for e in reversed(ctrl.store.events(kind="loop.", limit=50))]
    assert kinds == ["loop.triggered", "loop.training", "loop.trained", "loop.rolling_out", "loop.promoted"]
    training = ctrl.store.events(kind="loop.training", limit=1)[0]
    assert "retraining on the configured source" in training.reason


def test_restart_mid_training_finds_the_running_training(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p")
    first = controller_for(settings)
    cycle = first.start_cycle(Trigger("manual", "manual:restart", "test"))
    assert first.tick().state == "training"
    # A new controller (as after a restart) has no handle on the child: it must find it by pid/tag.
    second = controller_for(settings)
    done = wait_terminal(second, cycle.id)
    assert done.state == "promoted"
    assert versions_of_cycle(second, cycle.id) == [2]  # trained once, not twice


def test_gate_failure_rejects_and_champion_stays(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p", gates={"min_improvement": 0.5})
    ctrl = controller_for(settings)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:gate", "test"))
    done = wait_terminal(ctrl, cycle.id)
    assert done.state == "rejected"
    assert ctrl.registry.by_alias("champion").version == 1


def test_failed_training_backs_off(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p", control={"backoff_s": 3600})
    (settings.root / "data" / "transactions.csv").unlink()  # the retraining source is gone
    ctrl = controller_for(settings)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:fail", "test"))
    done = wait_terminal(ctrl, cycle.id)
    assert done.state == "failed"
    assert "transactions.csv" in done.reason
    assert ctrl.start_cycle(Trigger("manual", "manual:next", "test")) is None
    throttled = ctrl.store.events(kind="loop.throttled", limit=1)[0]
    assert "backing off" in throttled.reason


def test_retrain_budget(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p", control={"max_retrains": 1, "dry_run": True})
    # dry-run cycles do not count against the budget; a real one does
    ctrl = controller_for(settings)
    c1 = ctrl.start_cycle(Trigger("manual", "manual:a", "test"))
    assert wait_terminal(ctrl, c1.id).state == "dry_run"
    assert len(ctrl.registry.versions()) == 1  # nothing trained in dry run
    real = load_settings(settings.root / "mloop.yaml", overrides={"control": {"dry_run": False}})
    ctrl2 = controller_for(real)
    c2 = ctrl2.start_cycle(Trigger("manual", "manual:b", "test"))
    assert c2 is not None
    ctrl2.repo.transition(c2, "failed", reason="stopped by the test")
    assert ctrl2.start_cycle(Trigger("manual", "manual:c", "test")) is None
    assert "control.max_retrains=1" in ctrl2.store.events(kind="loop.throttled", limit=1)[0].reason


def test_manual_approval(tmp_path: Path) -> None:
    settings = make_project(tmp_path / "p", control={"approval": "manual"})
    ctrl = controller_for(settings)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:approve", "test"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        current = ctrl.tick() or ctrl.repo.get(cycle.id)
        if current.state == "awaiting_approval":
            break
        time.sleep(0.1)
    assert current.state == "awaiting_approval"
    with pytest.raises(ControlError, match="not waiting for approval"):
        approve(ctrl.store, settings.model.name, "7")
    approve(ctrl.store, settings.model.name, current.version)
    assert wait_terminal(ctrl, cycle.id).state == "promoted"


def test_schedule_and_new_data_triggers(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    settings = make_project(tmp_path / "p", control={"watch_source": True, "schedule": "*/5 * * * *"})
    now = [datetime(2026, 1, 1, 12, 1, tzinfo=UTC)]
    ctrl = Controller(settings, clock=lambda: now[0])
    assert ctrl.check_triggers() is None  # first look: baseline fingerprint, schedule starts now
    now[0] += timedelta(minutes=12)
    trig = ctrl.check_triggers()
    assert trig is not None and trig.kind == "schedule" and trig.key == "schedule:2026-01-01T12:10:00+00:00"
    # Not acted on yet (as after a crash right here): the same trigger comes back, nothing is lost.
    assert ctrl.check_triggers() == trig
    cycle = ctrl.start_cycle(trig)
    assert cycle is not None and cycle.trigger_key == trig.key
    assert ctrl.start_cycle(trig) is None  # one cycle per trigger key
    assert ctrl.check_triggers() is None
    source = settings.root / "data" / "transactions.csv"
    first_row = source.read_text().splitlines(keepends=True)[1]
    with open(source, "a") as fh:
        fh.write(first_row)
    trig = ctrl.check_triggers()
    assert trig is not None and trig.kind == "new_data"
    assert ctrl.check_triggers() == trig  # kept until a cycle is made for it
    ctrl.start_cycle(trig)
    assert ctrl.check_triggers() is None


def _serve_labelled(settings, store, frame, ts) -> None:
    """Log ``frame``'s rows as predictions served at ``ts`` and send their labels to feedback."""
    from mloop.predlog import PredictionRecord, new_prediction_id, open_prediction_log

    target = settings.model.target
    records = [
        PredictionRecord(new_prediction_id(), settings.model.name, "1", dict(row), 0, ts=ts)
        for row in frame.drop(columns=[target]).to_dict(orient="records")
    ]
    log = open_prediction_log(settings.prediction_log_url)
    try:
        log.write_batch(records)
    finally:
        log.close()
    store.add_feedback(
        [(r.prediction_id, int(y)) for r, y in zip(records, frame[target], strict=True)],
        model_name=settings.model.name,
    )


def test_after_an_alert_the_loop_waits_for_and_trains_on_post_alert_traffic(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    settings = make_project(
        tmp_path / "p", control={"retrain_data": "recent", "min_recent_rows": 200, "recent_rows": 5000}
    )
    ctrl = controller_for(settings)
    frame = pd.read_csv(settings.root / "data" / "transactions.csv")
    frame = frame.drop(columns=["transaction_id", "customer_id", "timestamp"])
    fired = datetime.now(UTC)
    _serve_labelled(settings, ctrl.store, frame.iloc[:600], fired - timedelta(minutes=5))  # before
    alert = {"rule": "feature-drift", "fired_at": fired.timestamp(), "message": "drift"}
    cycle = ctrl.start_cycle(Trigger("drift", "alert:x", "drift alert", {"alert": alert}))
    assert cycle is not None

    waiting = ctrl.tick()
    assert waiting.state == "triggered" and "0 so far" in waiting.reason
    assert ctrl.tick().state == "triggered"  # still waiting, no new event per tick
    assert len(ctrl.store.events(kind="loop.waiting")) == 1

    _serve_labelled(settings, ctrl.store, frame.iloc[600:900], fired + timedelta(seconds=1))  # after
    done = wait_terminal(ctrl, cycle.id)
    assert done.state in ("promoted", "rejected"), done.reason  # 300 rows may well lose the gate
    training = ctrl.store.events(kind="loop.training", limit=1)[0]
    assert "300 recent labelled rows served since" in training.reason
    trained_on = pd.read_parquet(settings.home_dir / "loop" / f"cycle-{cycle.id}.parquet")
    assert len(trained_on) == 300
