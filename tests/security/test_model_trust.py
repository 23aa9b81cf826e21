"""Model files from the registry cannot run code: trusted types mean data, not callables.

The attack: a version registered straight through MLflow (not by ``mloop train``) whose skops file
holds ``Pipeline([FunctionTransformer(func=sorted, kw_args={"key": eval}), real_model])`` and whose
contract has a column whose *name* is Python code. Serving builds a frame with the contract's
columns; ``sorted(frame, key=eval)`` iterates the column names and evaluates each one. The code
writes a marker file: the tests assert that it never exists, and that the load fails with
:class:`~mloop.errors.ModelRefused` naming the offending types.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import operator
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mloop.config import Settings
from mloop.errors import ModelRefused, TrackingError
from mloop.tracking import Registry, configure_mlflow


def _real_model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"amount": rng.uniform(0, 100, 60)})
    return LogisticRegression().fit(x, (x["amount"] > 50).astype(int))


def _contract(column: str) -> dict[str, Any]:
    return {
        "version": 1,
        "target": "label",
        "task": "classification",
        "columns": [
            {"name": column, "dtype": "float", "nullable": False, "min": 0.0, "max": 100.0},
            {"name": "label", "dtype": "int", "nullable": False, "min": 0.0, "max": 1.0},
        ],
    }


def _register(settings: Settings, model: Any, contract: dict[str, Any], *, alias: str | None = None) -> int:
    """Register ``model`` the way an attacker with registry access would: straight through MLflow,
    trusting (in the file's own metadata) every type the file holds."""
    experiment = configure_mlflow(settings)  # the project's: its artifacts stay under the project
    out = settings.home_dir / f"extra-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    (out / "contract.json").write_text(json.dumps(contract), encoding="utf-8")
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=sio.get_untrusted_types(data=sio.dumps(model)),
            extra_files=[str(out / "contract.json")],
            pip_requirements=["scikit-learn"],  # no inference: it would load the model to find them
        )
    name = settings.model.name
    version = int(mlflow.register_model(info.model_uri, name).version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))
    return version


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module (creating one costs seconds); each test has its own model."""
    return tmp_path_factory.mktemp("trust")


def _settings(root: Path, name: str, **model: Any) -> Settings:
    return Settings.model_validate(
        {"model": {"name": name, **model}, "serving": {"poll_interval_s": 0}, "root": root}
    )


_MODELS = itertools.count(1)


@pytest.fixture
def settings(root: Path) -> Settings:
    return _settings(root, f"model-{next(_MODELS)}")


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    # Whatever a test asserted, the marker is the proof of the attack; never leave it behind.
    path.unlink(missing_ok=True)


def _evil(marker: Path) -> tuple[Pipeline, str]:
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"
    steps = [
        ("f", FunctionTransformer(func=builtins.sorted, kw_args={"key": builtins.eval})),
        ("m", _real_model()),
    ]
    return Pipeline(steps), code


def test_eval_through_a_column_name_never_runs_on_load(settings: Settings, marker: Path) -> None:
    model, code = _evil(marker)
    _register(settings, model, _contract(code), alias="champion")
    with pytest.raises(ModelRefused) as caught:
        Registry(settings).load("@champion")
    assert not marker.exists()
    err = caught.value
    assert isinstance(err, TrackingError)
    assert "builtins.eval" in err.types and "builtins.sorted" in err.types
    assert "builtins.eval" in err.message and f"models:/{settings.model.name}/1" in err.message


def test_the_server_never_runs_it_on_warm_up(settings: Settings, marker: Path) -> None:
    """``mloop serve`` loads and warms the champion: the load fails first, /ready says why."""
    from mloop.serving.service import PredictionService

    model, code = _evil(marker)
    _register(settings, model, _contract(code), alias="champion")

    async def run() -> dict[str, Any]:
        service = PredictionService(settings)
        await service.start(wait=True)
        try:
            return service.status()
        finally:
            await service.stop()

    status = asyncio.run(run())
    assert not marker.exists()
    assert status["ready"] is False and status["state"] == "failed"
    assert "builtins.eval" in status["error"] and "model.trusted_types" in status["error"]


def test_a_refusal_is_one_event_naming_the_types(settings: Settings, marker: Path, tmp_path: Path) -> None:
    """Alias polls retry the load: the refusal is recorded once per version, not per poll."""
    from mloop.store import open_store

    model, code = _evil(marker)
    version = _register(settings, model, _contract(code), alias="champion")
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as store:
        registry = Registry(settings, events=store)
        for _ in range(3):
            with pytest.raises(ModelRefused):
                registry.load("@champion")
        [event] = store.events(kind="model.refused")
    assert event.subject == f"model:{settings.model.name}/v{version}"
    assert event.data["types"] == ["builtins.eval", "builtins.sorted"]
    assert "builtins.eval" in event.reason
    assert not marker.exists()


# Callables that run code, import modules, reach attributes or open files: none may load, whatever
# harmless-looking function carries them.
DANGEROUS: list[Callable[..., Any]] = [
    builtins.eval,
    builtins.exec,
    builtins.compile,
    builtins.__import__,
    builtins.getattr,
    builtins.setattr,
    builtins.open,
    builtins.vars,
    builtins.globals,
    builtins.breakpoint,
    operator.attrgetter,
    operator.methodcaller,
]


@pytest.mark.parametrize("func", DANGEROUS, ids=lambda f: f.__name__)
def test_code_running_callables_are_refused(settings: Settings, func: Callable[..., Any]) -> None:
    model = Pipeline([("f", FunctionTransformer(func=func)), ("m", _real_model())])
    _register(settings, model, _contract("amount"), alias="champion")
    with pytest.raises(ModelRefused) as caught:
        Registry(settings).load("@champion")
    assert [t.rpartition(".")[2] for t in caught.value.types] == [func.__name__]


@pytest.mark.parametrize(
    ("func", "name"),
    [
        (builtins.eval, "builtins.eval"),
        (builtins.exec, "builtins.exec"),
        (builtins.getattr, "builtins.getattr"),
        (builtins.open, "io.open"),
    ],
    ids=["eval", "exec", "getattr", "open"],
)
def test_listing_a_code_running_callable_does_not_trust_it(
    settings: Settings, func: Callable[..., Any], name: str
) -> None:
    """Even ``model.trusted_types: [builtins.eval]`` does not make eval loadable."""
    listed = _settings(settings.root, settings.model.name, trusted_types=[name])
    model = Pipeline([("f", FunctionTransformer(func=func)), ("m", _real_model())])
    _register(listed, model, _contract("amount"), alias="champion")
    with pytest.raises(ModelRefused, match="never loads") as caught:
        Registry(listed).load("@champion")
    assert caught.value.types == (name,)
    assert "model.trusted_types: [" not in caught.value.message  # no advice to trust it


def test_a_version_trusted_by_the_old_prefix_policy_is_not_re_trusted(settings: Settings) -> None:
    """A version registered when every ``builtins.`` name was trusted (its MLmodel lists the type)
    fails to load, naming the type and how to trust it on purpose."""
    model = Pipeline([("f", FunctionTransformer(func=builtins.abs)), ("m", _real_model())])
    version = _register(settings, model, _contract("amount"))
    with pytest.raises(ModelRefused) as caught:
        Registry(settings).load(version)
    assert caught.value.types == ("builtins.abs",)
    assert "model.trusted_types: [builtins.abs]" in caught.value.message
    # Trusted deliberately by the project: it loads and answers.
    trusted = _settings(settings.root, settings.model.name, trusted_types=["builtins.abs"])
    loaded = Registry(trusted).load(version)
    assert loaded.model.predict(pd.DataFrame({"amount": [10.0, 90.0]})).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("a\nb", "printable"),
        ("x\x00", "printable"),
        ("zero\u200bwidth", "printable"),
        ("c" * 300, "at most 256"),
        ("", "non-empty"),
    ],
    ids=["newline", "nul", "zero-width", "too-long", "empty"],
)
def test_contracts_with_hostile_column_names_are_refused(
    settings: Settings, column: str, reason: str
) -> None:
    _register(settings, _real_model(), _contract(column), alias="champion")
    with pytest.raises(ModelRefused, match=reason):
        Registry(settings).load("@champion")


def test_contracts_with_unknown_dtypes_are_refused(settings: Settings) -> None:
    contract = _contract("amount")
    contract["columns"][0]["dtype"] = "object"
    _register(settings, _real_model(), contract, alias="champion")
    with pytest.raises(ModelRefused, match="dtype"):
        Registry(settings).load("@champion")


def test_a_refused_candidate_is_rolled_back_and_the_champion_keeps_serving(
    settings: Settings, marker: Path, tmp_path: Path
) -> None:
    """A canary of the malicious version: the load is refused, the rollout rolled back with the
    reason (naming the type) in its event, and version 1 answers every request."""
    from mloop.predlog import MemoryPredictionLog
    from mloop.rollout import RolloutController
    from mloop.rollout.sync import RolloutSync
    from mloop.serving.service import PredictionService
    from mloop.store import open_store

    good = _register(settings, _real_model(), _contract("amount"), alias="champion")
    model, code = _evil(marker)
    bad = _register(settings, model, _contract(code))

    async def run(store: Any) -> tuple[Any, list[str], str | None]:
        service = PredictionService(settings)
        ctl = RolloutController(
            settings,
            store=store,
            registry=Registry(settings),
            predlog=MemoryPredictionLog(),
            model_name=settings.model.name,
        )
        sync = RolloutSync(service, ctl)
        await service.start(wait=True)
        try:
            rollout = ctl.start(version=bad, strategy="canary")
            await sync.refresh()
            answered = [
                (await service.predict({"features": {"amount": 70.0}})).runtime.version for _ in range(5)
            ]
            champion = service.champion()
            return ctl.get(rollout.id), answered, champion.version if champion else None
        finally:
            await service.stop()

    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as store:
        rollout, versions, champion = asyncio.run(run(store))
        [event] = store.events(kind="rollout.rolled_back")
    assert not marker.exists()
    assert rollout.state == "rolled_back"
    assert event.data["check"] == "load" and "builtins.eval" in event.reason
    assert versions == [str(good)] * 5 and champion == str(good)
