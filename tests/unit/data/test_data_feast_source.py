"""The Feast client's set-up errors and the bridge's request handling, without Feast installed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mloop.data import feast_bridge
from mloop.data.feast_source import FeastClient, FeatureService, feast_python, join_historical
from mloop.errors import ConfigError, FeatureStoreError


def test_a_folder_without_feature_store_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"feature_store\.yaml"):
        FeastClient(tmp_path, python=sys.executable)


def test_no_feast_anywhere_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FeatureStoreError, match=r"make \.venv-feast"):
        feast_python(None, tmp_path)
    assert feast_python("/opt/feast/bin/python", tmp_path) == "/opt/feast/bin/python"
    assert feast_python(".venv-feast/bin/python", tmp_path) == str(tmp_path / ".venv-feast/bin/python")
    assert feast_python("python3.11", tmp_path) == "python3.11"  # found on PATH
    venv = tmp_path / ".venv-feast" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("", encoding="utf-8")
    assert feast_python(None, tmp_path) == str(venv / "python")


def test_a_bridge_that_cannot_open_the_repo_is_a_feature_store_error(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: x\n", encoding="utf-8")
    # This interpreter has no feast: the bridge answers its hello with the ImportError.
    client = FeastClient(tmp_path, python=sys.executable)
    with pytest.raises(FeatureStoreError, match="feast"):
        client.describe("fraud_features")
    client.close()


def test_the_bridge_turns_every_failure_into_an_answer() -> None:
    assert feast_bridge.handle(object(), {"op": "nope"}) == {
        "ok": False,
        "error": "KeyError: unknown op 'nope'; known: describe, historical, online",
    }
    answer = feast_bridge.handle(object(), {"op": "describe", "service": "s"})
    assert answer["ok"] is False and answer["error"].startswith("AttributeError")


class _Historical:
    def describe(self, service: str) -> FeatureService:
        return FeatureService(service, ("f",), ("customer_id",))

    def historical(self, service: str, entities: pd.DataFrame, timestamp_column: str) -> pd.DataFrame:
        return pd.DataFrame({"f": range(len(entities))})


def test_historical_join_names_the_missing_entity_column() -> None:
    frame = pd.DataFrame({"customer": [1], "ts": [pd.Timestamp("2026-01-01", tz="UTC")]})
    client: Any = _Historical()
    with pytest.raises(FeatureStoreError, match=r"'customer_id'.*Did you mean 'customer'"):
        join_historical(frame, client, "svc", "ts")
    frame = frame.rename(columns={"customer": "customer_id"}).assign(f=[9.0])
    joined = join_historical(frame, client, "svc", "ts")
    assert list(joined.columns) == ["customer_id", "ts", "f"] and joined["f"].tolist() == [0]


def _fake_bridge(tmp_path: Path, then: str) -> str:
    """An executable standing in for Feast's Python: says hello, then runs ``then`` (shell)."""
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\necho \'{{"ok": true, "ready": true}}\'\n{then}\n', encoding="utf-8")
    script.chmod(0o755)
    (tmp_path / "feature_store.yaml").write_text("project: x\n", encoding="utf-8")
    return str(script)


def test_a_bridge_that_does_not_answer_in_time_is_stopped(tmp_path: Path) -> None:
    client = FeastClient(tmp_path, python=_fake_bridge(tmp_path, "sleep 30"), timeout_s=0.3)
    with pytest.raises(FeatureStoreError, match=r"did not answer within 0\.3s"):
        client.online("svc", {"customer_id": [1]})
    assert client._proc is None  # the next request starts a new bridge
    client.close()


def test_a_bridge_that_dies_is_a_feature_store_error(tmp_path: Path) -> None:
    client = FeastClient(tmp_path, python=_fake_bridge(tmp_path, "exit 3"))
    with pytest.raises(FeatureStoreError, match=r"exited \(code|went away"):
        client.online("svc", {"customer_id": [1]})
    client.close()


class _Response:
    def __init__(self, values: dict[str, list[Any]]) -> None:
        self.values = values

    def to_dict(self) -> dict[str, list[Any]]:
        return self.values


class _Store:
    """What the bridge calls of Feast's FeatureStore, answering from a dict."""

    def __init__(self) -> None:
        self.rows = {1: (3, 20.5)}
        self.calls: list[list[dict[str, Any]]] = []

    def get_feature_service(self, name: str) -> str:
        return name

    def get_online_features(
        self, features: str, entity_rows: list[dict[str, Any]], full_feature_names: bool
    ) -> _Response:
        self.calls.append(entity_rows)
        found = [self.rows.get(r["customer_id"]) for r in entity_rows]
        return _Response(
            {
                "customer_id": [r["customer_id"] for r in entity_rows],
                "txn_count_24h": [f[0] if f else None for f in found],
                "avg_amount_30d": [f[1] if f else None for f in found],
            }
        )


def test_in_process_online_lookup_runs_the_bridge_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: x\n", encoding="utf-8")
    store = _Store()
    monkeypatch.setattr(feast_bridge, "open_store", lambda repo: store)
    client = FeastClient(tmp_path, python=None)  # feast "importable": no bridge process
    values, found = client.online("svc", {"customer_id": [1, 5]})
    assert values == {"txn_count_24h": [3, None], "avg_amount_30d": [20.5, None]}
    assert found == [True, False]  # every feature null: the entity is not in the online store
    assert store.calls == [[{"customer_id": 1}, {"customer_id": 5}]]
    client.close()
