"""`mloop status` names the loop's leader (the holder of the lease ``loop:<model>``) and its fence."""

from __future__ import annotations

from pathlib import Path

from mloop.cli.loop import print_status
from mloop.config import Settings
from mloop.control import status_report
from mloop.control.leader import LeaderElection
from mloop.store import open_store


def test_status_names_the_leader(tmp_path: Path, capsys: object) -> None:
    settings = Settings.model_validate(
        {"model": {"name": "fraud"}, "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    ).model_copy(update={"root": tmp_path})
    with open_store(settings.store_url) as store:
        assert status_report(settings, store=store)["loop"]["leader"] is None
        assert LeaderElection(store, "fraud", ttl_s=60, owner="pod-a:loop").step()
        report = status_report(settings, store=store)
    assert report["loop"]["leader"] == "pod-a:loop" and report["loop"]["fence"] == 1
    print_status(report)
    assert "loop leader: pod-a:loop (fence 1)" in capsys.readouterr().out
