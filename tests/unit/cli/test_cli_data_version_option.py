"""`mloop train --data-version` is refused beside `--data` before anything loads or trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.cli.main import main


def test_data_and_data_version_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mloop.yaml"
    config.write_text("project: p\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["train", "-c", str(config), "--data", "other.csv", "--data-version", "abc123"])
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--data and --data-version both name the data to train on" in err
    assert not (tmp_path / ".mloop").exists()
