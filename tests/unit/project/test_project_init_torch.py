"""`mloop init --template tabular-torch` writes a valid project without PyTorch installed."""

from __future__ import annotations

from pathlib import Path

from mloop.config import load_settings
from mloop.project import init_project
from mloop.project.init import TEMPLATES


def test_the_torch_template_trusts_its_network_class_and_brings_the_fraud_data(tmp_path: Path) -> None:
    assert "tabular-torch" in TEMPLATES
    written = init_project(tmp_path / "fraudnet", template="tabular-torch", rows=500)
    names = {p.name for p in written}
    assert {"mloop.yaml", "train.py", "transactions.csv"} <= names
    settings = load_settings(tmp_path / "fraudnet" / "mloop.yaml")
    assert settings.model.estimator == "train:build_model"
    assert settings.model.trusted_types == ["train.MLP"]
    assert settings.model.target == "is_fraud" and settings.model.task == "classification"
    train_py = (tmp_path / "fraudnet" / "train.py").read_text(encoding="utf-8")
    assert "class MLP(nn.Module)" in train_py and "TorchClassifier(MLP" in train_py
    compile(train_py, "train.py", "exec")  # valid Python, checked without importing torch
