"""Serving MLflow models mloop did not train: custom python_function models and ONNX, from a real registry.

A custom ``PythonModel`` is cloudpickled, so it is refused until ``model.trust_code_of`` lists the
version; once listed it serves, its requests are checked against its MLflow signature (422 on a
wrong type or a missing column), its predictions are logged, and a canary rollout between two such
versions splits traffic and promotes. An ONNX model loads without the opt-in.
"""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import uvicorn

from mloop.config import Settings, load_settings
from mloop.errors import ModelRefused
from mloop.server import create_app
from mloop.store import open_store
from mloop.tracking import Registry

TOKEN = "pyfunc-token"
FRAME = pd.DataFrame(
    {
        "amount": [10.0, 250.0, 990.0, 35.5],
        "country": ["FR", "DE", "FR", "US"],
        "items": np.array([1, 3, 7, 2], dtype="int64"),
    }
)


class Risk(mlflow.pyfunc.PythonModel):
    """A hand-written scorer: one probability column per class (``0``, ``1``)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    # No type hints: MLflow 3 would infer the signature from them instead of the example frame.
    def predict(self, context, model_input, params=None):
        z = self.weight * (model_input["amount"] / 100.0 + model_input["items"]) - 3.0
        z = z + (model_input["country"] == "FR") * 0.5
        p = 1.0 / (1.0 + np.exp(-z.to_numpy(dtype="float64")))
        return pd.DataFrame({"0": 1.0 - p, "1": p})


def _log_risk(settings: Settings, weight: float) -> int:
    """Log and register a Risk model; return its version number."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    model = Risk(weight)
    signature = mlflow.models.infer_signature(FRAME, model.predict(None, FRAME))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=signature,
            input_example=FRAME.head(2),
            registered_model_name=settings.model.name,
        )
    assert info.registered_model_version is not None
    return int(info.registered_model_version)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(root: Path, name: str, **model: Any) -> Settings:
    return load_settings(
        root / "mloop.yaml",
        overrides={
            "model": {"name": name, **model},
            "serving": {"admin_token": TOKEN, "poll_interval_s": 0.2},
            "prediction_log": {"flush_interval_s": 0.1},
            "rollout": {"steps": [50.0, 100.0], "refresh_s": 0.2, "auto_advance": False},
        },
    )


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow store for the module (creating one costs seconds); each test has its own project
    (store, prediction log) and registers the versions it uses. MLflow puts a SQLite store's
    artifacts in ./mlruns of the working directory when it creates the store: that is this folder,
    not the checkout's."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path: Path, tracking_uri: str) -> Path:
    (tmp_path / "mloop.yaml").write_text(
        f"project: pyfunc-test\nmodel:\n  name: risk\ntracking:\n  uri: {tracking_uri}\n", encoding="utf-8"
    )
    return tmp_path


@contextmanager
def _serve(settings: Settings) -> Iterator[httpx.Client]:
    """The serving app on a real port in a thread, once its first load attempt is over."""
    port = _port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                if client.get("/ready").json().get("state") in ("ready", "failed"):
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the server never finished its first load")
        yield client
    finally:
        client.close()
        srv.should_exit = True
        thread.join(timeout=30)


def _records(n: int = 4) -> list[dict[str, Any]]:
    return [
        {"amount": float(r.amount), "country": str(r.country), "items": int(r.items)}
        for r in FRAME.head(n).itertuples()
    ]


def test_a_custom_pyfunc_is_refused_until_its_version_is_trusted(project: Path) -> None:
    settings = _settings(project, "risk")
    version = _log_risk(settings, 1.0)
    Registry(settings).set_alias("champion", version, reason="test")
    with _serve(settings) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert f"model.trust_code_of: [risk/{version}]" in error
        assert "cloudpickle" in error
        assert c.post("/predict", json={"features": _records(1)}).status_code != 200

    trusted = _settings(project, "risk", trust_code_of=[f"risk/{version}"])
    store = open_store(trusted.store_url)
    try:
        loaded = Registry(trusted, events=store).load(version)
        assert loaded.extra["contract_source"] == "signature"
        assert loaded.extra["code_trusted"] is True
        events = store.events(kind="model.code_trusted", subject=f"model:risk/v{version}")
        assert [e.subject for e in events] == [f"model:risk/v{version}"]
        assert "model.trust_code_of" in events[0].reason
    finally:
        store.close()
    tags = Registry(trusted).get(version).tags
    assert tags["mloop.code_trusted"] == f"risk/{version}"


def test_a_trusted_pyfunc_serves_validates_logs_and_rolls_out(project: Path) -> None:
    base = _settings(project, "risk")
    v1 = _log_risk(base, 1.0)
    v2 = _log_risk(base, 0.5)
    Registry(base).set_alias("champion", v1, reason="test")
    settings = _settings(project, "risk", trust_code_of=[f"risk/{v1}", f"models:/risk/{v2}"])
    expected = Risk(1.0).predict(None, FRAME)["1"].to_numpy()
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with _serve(settings) as c:
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        r = c.post("/predict", json={"features": _records()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == str(v1)
        got = [p["probabilities"]["1"] for p in body["predictions"]]
        assert got == pytest.approx(expected)
        assert [p["prediction"] for p in body["predictions"]] == [int(x > 0.5) for x in expected]

        # The other wire protocols read the same signature-derived contract.
        split = {"dataframe_split": {"columns": list(FRAME.columns), "data": FRAME.to_numpy().tolist()}}
        mlflow_answer = c.post("/invocations", json=split)
        assert mlflow_answer.status_code == 200, mlflow_answer.text
        infer = {
            "inputs": [
                {"name": "amount", "shape": [1], "datatype": "FP64", "data": [10.0]},
                {"name": "country", "shape": [1], "datatype": "BYTES", "data": ["FR"]},
                {"name": "items", "shape": [1], "datatype": "INT64", "data": [1]},
            ]
        }
        v2_answer = c.post("/v2/models/risk/infer", json=infer)
        assert v2_answer.status_code == 200, v2_answer.text
        proba = next(o for o in v2_answer.json()["outputs"] if o["name"] == "predict_proba")
        assert proba["data"][1] == pytest.approx(expected[0])

        # The MLflow signature is the contract: wrong type, missing column, unknown field.
        bad = c.post("/predict", json={"features": {"amount": "lots", "country": "FR", "items": 1}})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"].endswith("amount")
        missing = c.post("/predict", json={"features": {"amount": 1.0, "country": "FR"}})
        assert missing.status_code == 422
        assert "items" in missing.text

        # A canary between the two pyfunc versions: half the traffic, then promoted.
        started = c.post("/admin/rollout/start", headers=admin, json={"version": v2, "strategy": "canary"})
        assert started.status_code == 200, started.text
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while seen != {str(v1), str(v2)} and time.monotonic() < deadline:
            seen.add(c.post("/predict", json={"features": _records(1)}).json()["version"])
        assert seen == {str(v1), str(v2)}
        promoted = c.post("/admin/rollout/promote", headers=admin, json={})
        assert promoted.status_code == 200, promoted.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            one = {"features": _records(1)}
            versions = {c.post("/predict", json=one).json()["version"] for _ in range(10)}
            if versions == {str(v2)}:
                break
            time.sleep(0.2)
        assert versions == {str(v2)}
        assert Registry(settings).get("@champion").version == v2
        time.sleep(0.5)  # the prediction log flushes every 0.1 s

    from mloop.predlog import open_prediction_log

    logged = open_prediction_log(settings.prediction_log_url).read(model_name="risk")
    assert {str(v) for v in logged["model_version"]} == {str(v1), str(v2)}
    assert len(logged) >= 5


def test_an_onnx_model_serves_without_opt_in(project: Path) -> None:
    pytest.importorskip("onnxruntime", reason="install the onnx extra: pip install 'mloop[onnx]'")
    pytest.importorskip("skl2onnx", reason="install the onnx extra: pip install 'mloop[onnx]'")
    import mlflow.onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    settings = _settings(project, "price")
    x = pd.DataFrame({"size": [50.0, 80.0, 120.0, 30.0], "rooms": [2.0, 3.0, 5.0, 1.0]})
    y = 1000.0 * x["size"] + 5000.0 * x["rooms"]
    reg = LinearRegression().fit(x.to_numpy(dtype="float32"), y)
    onx = to_onnx(reg, x.to_numpy(dtype="float32")[:1])
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onx,
            name="model",
            signature=mlflow.models.infer_signature(x, y),
            input_example=x.head(2),
            registered_model_name="price",
        )
    Registry(settings).set_alias("champion", int(info.registered_model_version or 0), reason="test")
    with _serve(settings) as c:
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        r = c.post("/predict", json={"features": [{"size": 100.0, "rooms": 4.0}]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["prediction"] == pytest.approx(120_000.0, rel=1e-4)
        assert c.post("/predict", json={"features": [{"size": 100.0}]}).status_code == 422


def test_a_version_without_a_signature_is_refused_with_how_to_fix(project: Path) -> None:
    settings = _settings(project, "risk")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Risk(1.0), registered_model_name="risk")
    version = int(info.registered_model_version or 0)
    trusted = _settings(project, "risk", trust_code_of=[f"risk/{version}"])
    with pytest.raises(ModelRefused, match="input signature"):
        Registry(trusted).load(version)


def test_batch_scores_a_trusted_pyfunc_and_ships_it_to_workers(project: Path) -> None:
    from mloop.batch import load_scorer

    base = _settings(project, "risk")
    version = _log_risk(base, 1.0)
    settings = _settings(project, "risk", trust_code_of=[f"risk/{version}"])
    scorer = load_scorer(settings, f"risk/{version}")
    # Process pools and Spark get the scorer pickled: the model is loaded again from its directory.
    for s in (scorer, pickle.loads(pickle.dumps(scorer))):
        chunk = s.score(FRAME)
        assert len(chunk.scored) == len(FRAME) and chunk.rejected.empty
        assert chunk.scored["proba_1"].to_numpy() == pytest.approx(Risk(1.0).predict(None, FRAME)["1"])
    bad = scorer.score(FRAME.assign(items=["x", 1, 2, 3]))
    assert len(bad.rejected) == 1


def test_a_supplied_profile_makes_drift_available(project: Path, tmp_path: Path) -> None:
    """A custom model logs ``profile.json`` (built with mloop's build_profile) as a pyfunc artifact."""
    from mloop.monitoring import build_profile
    from mloop.monitoring.monitor import run_monitor
    from mloop.monitoring.reference import fetch_reference

    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "amount": rng.uniform(0, 1000, 2000),
            "country": rng.choice(["FR", "DE", "US"], 2000),
            "items": rng.integers(1, 8, 2000),
        }
    )
    profile = build_profile(reference).save(tmp_path / "profile.json")
    settings = _settings(project, "risk")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    model = Risk(1.0)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            artifacts={"profile": str(profile)},
            signature=mlflow.models.infer_signature(FRAME, model.predict(None, FRAME)),
            input_example=FRAME.head(2),
            registered_model_name="risk",
        )
    version = int(info.registered_model_version or 0)
    Registry(settings).set_alias("champion", version, reason="test")
    trusted = _settings(project, "risk", trust_code_of=[f"risk/{version}"])
    assert Registry(trusted).load(version).profile is not None
    # Traffic far from the reference: every amount above 5,000.
    shifted = [{"amount": 5000.0 + i, "country": "FR", "items": 1} for i in range(300)]
    with _serve(trusted) as c:
        assert c.post("/predict", json={"features": shifted}).status_code == 200
        time.sleep(0.5)
    result = run_monitor(
        trusted,
        reference=fetch_reference(trusted, "risk", version),
        reports=False,
        notify=False,
        lease_wait_s=0.0,
    )
    assert result.status == "ok", result.message
    assert result.drift is not None and "amount" in result.drift.drifted_columns


class AmountRule(mlflow.pyfunc.PythonModel):
    """A hand-made fraud rule: the larger the amount, the likelier fraud."""

    def predict(self, context, model_input, params=None):
        p = (model_input["amount"].to_numpy(dtype="float64") / 2000.0).clip(0.0, 1.0)
        return pd.DataFrame({"0": 1.0 - p, "1": p})


def test_mloop_train_compares_with_a_champion_it_did_not_train(tmp_path: Path) -> None:
    from mloop.project import init_project
    from mloop.training import train

    root = tmp_path / "fraud"
    init_project(root, template="fraud", rows=1500)
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace("estimator: train:build_model", "estimator: logistic")
    config.write_text(text, encoding="utf-8")
    base = load_settings(config)
    mlflow.set_tracking_uri(base.tracking_uri)
    mlflow.set_registry_uri(base.tracking_uri)
    x = pd.DataFrame({"amount": [12.5, 1800.0], "hour": np.array([3, 14], dtype="int64")})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AmountRule(),
            signature=mlflow.models.infer_signature(x, AmountRule().predict(None, x)),
            input_example=x,
            registered_model_name=base.model.name,
        )
    rule = int(info.registered_model_version or 0)
    Registry(base).set_alias("champion", rule, reason="the rule in production before mloop")
    settings = load_settings(config, overrides={"model": {"trust_code_of": [f"{base.model.name}/{rule}"]}})
    result = train(settings)
    # The champion was scored on the same holdout as the new version, and the gate decided on that.
    assert result.champion_before == rule
    compared = [c for c in result.gate.checks if c.name == "beats_champion"]
    assert compared and f"vs champion v{rule}" in compared[0].detail, result.gate.reason


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
def test_an_onnx_classifier_serves_its_classes_and_probabilities(project: Path, zipmap: bool) -> None:
    pytest.importorskip("onnxruntime", reason="install the onnx extra: pip install 'mloop[onnx]'")
    pytest.importorskip("skl2onnx", reason="install the onnx extra: pip install 'mloop[onnx]'")
    import mlflow.onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    settings = _settings(project, "churn")
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"tenure": rng.uniform(0, 60, 300), "spend": rng.uniform(0, 200, 300)})
    y = np.where(x["tenure"] + rng.normal(0, 10, 300) < 20, "leaves", "stays")
    clf = LogisticRegression(max_iter=500).fit(x.to_numpy(dtype="float32"), y)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    onx = to_onnx(clf, x.to_numpy(dtype="float32")[:1], options=options)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onx,
            name="model",
            signature=mlflow.models.infer_signature(x),
            input_example=x.head(2),
            registered_model_name="churn",
        )
    version = int(info.registered_model_version or 0)
    loaded = Registry(settings).load(version)
    assert loaded.model.classes_.tolist() == ["leaves", "stays"]
    rows = x.head(5)
    expected = clf.predict_proba(rows.to_numpy(dtype="float32"))
    assert loaded.model.predict_proba(rows) == pytest.approx(expected, abs=1e-5)
    shipped = pickle.loads(pickle.dumps(loaded.model))  # what a batch worker gets
    assert shipped.predict_proba(rows) == pytest.approx(expected, abs=1e-5)
    Registry(settings).set_alias("champion", version, reason="test")
    with _serve(settings) as c:
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        records = [{"tenure": float(a), "spend": float(b)} for a, b in rows.itertuples(index=False)]
        r = c.post("/predict", json={"features": records})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [p["prediction"] for p in got] == clf.predict(rows.to_numpy(dtype="float32")).tolist()
        assert [p["probabilities"]["stays"] for p in got] == pytest.approx(expected[:, 1], abs=1e-5)


def test_a_skops_model_registered_by_hand_loads_without_opt_in(project: Path) -> None:
    """scikit-learn saved with skops keeps the skops type policy; its signature is its contract."""
    from sklearn.linear_model import LogisticRegression

    settings = _settings(project, "hand")
    x = pd.DataFrame({"amount": np.linspace(0, 100, 40), "items": np.arange(40, dtype="int64") % 5})
    clf = LogisticRegression().fit(x, (x["amount"] > 50).astype(int))
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            clf,
            name="model",
            serialization_format="skops",
            signature=mlflow.models.infer_signature(x),
            registered_model_name="hand",
            pip_requirements=["scikit-learn"],
        )
    loaded = Registry(settings).load(int(info.registered_model_version or 0))
    assert loaded.extra == {"contract_source": "signature"}
    assert [(c["name"], c["dtype"]) for c in loaded.contract["columns"]] == [
        ("amount", "float"),
        ("items", "int"),
    ]
    assert loaded.model.predict_proba(x) == pytest.approx(clf.predict_proba(x))


def test_a_pytorch_model_needs_the_opt_in_then_serves_probabilities(project: Path) -> None:
    torch = pytest.importorskip("torch", reason="install torch (pip install torch==2.13.0, CPU)")
    import mlflow.pytorch

    settings = _settings(project, "net")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))
    x = pd.DataFrame({"tenure": [1.0, 30.0, 55.0], "spend": [20.0, 80.0, 150.0]})
    with torch.no_grad():
        expected = net(torch.tensor(x.to_numpy(dtype="float32"))).numpy()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            signature=mlflow.models.infer_signature(x, pd.DataFrame(expected, columns=["no", "yes"])),
            registered_model_name="net",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    version = int(info.registered_model_version or 0)
    with pytest.raises(ModelRefused, match=r"torch\.save pickle") as caught:
        Registry(settings).load(version)
    assert f"model.trust_code_of: [net/{version}]" in caught.value.message
    trusted = _settings(project, "net", trust_code_of=[f"net/{version}"])
    loaded = Registry(trusted).load(version)
    assert loaded.model.classes_.tolist() == ["no", "yes"]
    assert loaded.model.predict_proba(x) == pytest.approx(expected, abs=1e-6)
