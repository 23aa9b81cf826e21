"""The CLI as a CI log sees it: progress lines, exit codes that mean something, tables that fit.

One small project (800 rows, logistic regression) trained in-process through ``mloop.cli.main.main``
(the console script's entry point), so the exit codes are the ones a shell sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mloop.cli.exitcodes import CONFIG, GATE_REJECTED
from mloop.cli.main import main
from mloop.config import load_settings
from mloop.tracking import Registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``mloop ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def project(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run(capsys, "init", "proj", "--rows", "800")
    assert code == 0, err
    root = project_dir / "proj"
    config = yaml.safe_load((root / "mloop.yaml").read_text())
    config["model"]["estimator"] = "logistic"
    config["gates"] = {"thresholds": {"roc_auc": 0.5}, "min_improvement": 0.0}
    (root / "mloop.yaml").write_text(yaml.safe_dump(config))
    return root


def test_train_progress_rejection_exit_code_and_unchanged_retrain(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code, out, err = run(capsys, "train")
    assert code == 0, out + err
    # Not a terminal: one plain line per step, with the elapsed time.
    assert re.search(r"^\[train \d+:\d\d:\d\d\] loading data$", out, re.M), out
    assert re.search(r"^\[train \d+:\d\d:\d\d\] fitting logistic$", out, re.M), out
    assert "v1 is now champion" in out

    # Same data, same seed: the same model. Registered, said so, and no alias moves.
    code, out, err = run(capsys, "train", "--json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["unchanged"] is True and result["aliases"] == []
    assert "[train " in err  # with --json the progress goes to stderr, stdout stays JSON

    # Different data, a threshold it cannot meet: exit code 4, registered and tagged rejected.
    frame = pd.read_csv(project / "data" / "transactions.csv").iloc[:600]
    frame.to_csv(project / "part.csv", index=False)
    monkeypatch.setenv("MLOOP_GATES__THRESHOLDS", "{roc_auc: 0.99999}")
    code, out, err = run(capsys, "train", "--data", "part.csv")
    assert code == GATE_REJECTED, out + err
    assert "rejected by the gates" in out and "exit code 4" in out

    registry = Registry(load_settings(project / "mloop.yaml"))
    tags = {v.version: v.tags.get("mloop.gate") for v in registry.versions()}
    assert tags == {1: "passed", 2: "unchanged", 3: "rejected"}
    assert registry.by_alias("challenger") is None
    assert registry.by_alias("champion").version == 1
    monkeypatch.delenv("MLOOP_GATES__THRESHOLDS")

    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert "roc_auc *" in out and "rejected" in out and "unchanged" in out
    assert max(len(line) for line in out.splitlines()) <= 100, out


def test_bad_data_option_and_bad_env_variable_are_named(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code, _, err = run(capsys, "train", "--data", "nope.csv")
    assert code == CONFIG
    assert "--data 'nope.csv'" in err and "source.uri" in err  # names the option, says what is used otherwise

    monkeypatch.setenv("MLOOP_SERVING__PORT", "eighty")
    code, _, err = run(capsys, "models", "list")
    assert code == CONFIG
    assert "MLOOP_SERVING__PORT" in err and "mloop.yaml" not in err


def test_bare_init_refuses_without_a_terminal(
    project_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, _, err = run(capsys, "init")
    assert code == CONFIG
    assert "mloop init myproject" in err
    assert not (project_dir / "mloop.yaml").exists() and list(project_dir.iterdir()) == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mloop import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith(f"mloop {__version__} ")
