"""ONNX Runtime against the other ways mloop can answer a batch, at batch sizes 1, 64 and 1000.

Rows (milliseconds per call, median of repeated calls, one thread everywhere):

* **MLP** — a scikit-learn ``MLPClassifier`` (64, 32) inside mloop's preprocessing, trained on the
  fraud template's data: the pipeline's ``predict_proba`` versus its verified ONNX copy in ONNX Runtime
  (both from the same DataFrame).
* **Random forest** — the serving benchmark's model (``bench_serving.py``: the fraud template, 3,000
  rows, ``random_forest`` with 100 trees, trained and registered by ``mloop.training.train``), loaded
  from the registry and called the way the server calls it (``ModelRuntime.predict_columns`` on
  validated column lists) through each path: scikit-learn (frame + ``predict_proba``), the compiled
  tree path (:mod:`mloop.serving.fastpath`) and ONNX Runtime (``serving.onnx``).
* **PyTorch MLP** — mloop's built-in ``torch_mlp`` (two hidden layers of 64) behind the usual
  preprocessing, trained by ``train`` on the fraud template (3,000 rows) with its ONNX copy exported
  and verified (:mod:`mloop.training.onnx_torch`), then called as the server calls it: the pipeline
  (scikit-learn preprocessing + torch forward) versus ONNX Runtime (``serving.onnx: require``).
  Skipped, with the reason, when torch is not installed.

Each row also checks that both sides give the same answers (max |Δ| printed). Ratios are
"other / ONNX": above 1 means ONNX Runtime is faster.

    .venv/bin/python benchmarks/serving/bench_onnx.py                  # trains in a tmp dir
    .venv/bin/python benchmarks/serving/bench_onnx.py --project DIR    # reuse a trained project
    .venv/bin/python benchmarks/serving/bench_onnx.py --only torch     # the PyTorch rows only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
BATCHES = (1, 64, 1000)
DROP = ["is_fraud", "transaction_id", "customer_id", "timestamp"]


def per_call_ms(fn: Callable[[], Any], rows: int, budget_s: float) -> float:
    """Median milliseconds of one call, over as many calls as fit in ``budget_s`` (at least 5)."""
    fn()
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 5000):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def frame_of(project: Path, n: int) -> pd.DataFrame:
    data = pd.read_csv(project / "data" / "transactions.csv").drop(columns=DROP)
    reps = -(-n // len(data))
    return pd.concat([data] * reps, ignore_index=True).head(n)


def bench_mlp(project: Path, budget: float) -> None:
    from sklearn.neural_network import MLPClassifier

    from mloop.serving.fastpath.onnx import OnnxModel
    from mloop.training.onnx_export import export_onnx, session
    from mloop.training.preprocess import build_pipeline

    data = pd.read_csv(project / "data" / "transactions.csv")
    x, y = data.drop(columns=DROP), data["is_fraud"]
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    model = build_pipeline(numeric, categorical, MLPClassifier((64, 32), max_iter=300, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    result = export_onnx(model, x.tail(600))
    print(f"\nMLP export: {result.tag} ({result.report.get('seconds')})")
    if result.model is None:
        return
    onnx = OnnxModel(session(result.model), result.report["inputs"], list(model.classes_))
    rows = []
    for n in BATCHES:
        frame = frame_of(project, n)
        diff = float(np.abs(onnx.predict_proba(frame) - model.predict_proba(frame)).max())
        sk = per_call_ms(lambda f=frame: model.predict_proba(f), n, budget)
        ox = per_call_ms(lambda f=frame: onnx.predict_proba(f), n, budget)
        rows.append([str(n), f"{sk:.3f}", f"{ox:.3f}", f"{sk / ox:.1f}x", f"{diff:.1e}"])
    table(
        "MLPClassifier(64, 32) + preprocessing, ms per call",
        ["rows", "sklearn predict_proba", "ONNX Runtime", "sklearn/ONNX", "max |dp|"],
        rows,
    )


def bench_forest(project: Path, budget: float) -> None:
    from mloop.config import load_settings
    from mloop.serving.runtime import ModelRuntime
    from mloop.tracking import Registry

    settings = load_settings(project / "mloop.yaml")
    loaded = Registry(settings).load("@champion")
    print(f"\nforest version tag mloop.onnx: {loaded.info.tags.get('mloop.onnx')}")
    runtime = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "require"}))
    compiled = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "off"})).compiled
    paths: dict[str, Any] = {"sklearn": None, "compiled": compiled, "onnx": runtime.onnx}
    rows = []
    for n in BATCHES:
        records = frame_of(project, n).astype(object)
        columns = runtime.validator.from_records(records.where(records.notna(), None).to_dict("records"))
        ms: dict[str, float] = {}
        answers: dict[str, np.ndarray] = {}
        for name, path in paths.items():
            runtime.compiled = path
            answers[name] = np.asarray(runtime.predict_columns([columns])[1])
            ms[name] = per_call_ms(lambda c=columns: runtime.predict_columns([c]), n, budget)
        diff = float(np.abs(answers["onnx"] - answers["sklearn"]).max())
        exact = bool(np.array_equal(answers["compiled"], answers["sklearn"]))
        rows.append(
            [
                str(n),
                f"{ms['sklearn']:.3f}",
                f"{ms['compiled']:.3f}",
                f"{ms['onnx']:.3f}",
                f"{ms['sklearn'] / ms['onnx']:.1f}x",
                f"{ms['compiled'] / ms['onnx']:.2f}x",
                f"{diff:.1e}",
                "yes" if exact else "no",
            ]
        )
    table(
        "RandomForestClassifier(100 trees) as served (ModelRuntime.predict_columns), ms per call",
        [
            "rows",
            "sklearn",
            "compiled",
            "ONNX",
            "sklearn/ONNX",
            "compiled/ONNX",
            "max |dp| ONNX",
            "compiled exact",
        ],
        rows,
    )


def train_torch_project(root: Path) -> Path:
    """The fraud template (3,000 rows) with mloop's built-in PyTorch network, trained by ``train``."""
    from mloop.config import load_settings
    from mloop.project import init_project
    from mloop.training import train

    init_project(root, template="fraud", rows=3000)
    yaml_path = root / "mloop.yaml"
    text = yaml_path.read_text().replace("estimator: train:build_model", "estimator: torch_mlp")
    params = "model:\n  params: {hidden: 64, layers: 2, max_epochs: 10, lr: 0.003}\n"
    yaml_path.write_text(text.replace("model:\n", params, 1))
    train(load_settings(yaml_path))
    return root


def bench_torch(tmp: Path, budget: float) -> None:
    try:
        import torch
    except ImportError:
        print("\nPyTorch MLP: skipped (torch is not installed in this environment)")
        return
    from mloop.config import load_settings
    from mloop.serving.runtime import ModelRuntime, build_frame
    from mloop.tracking import Registry
    from mloop.tracking.onnx_io import ONNX_REPORT_FILE, onnx_artifact

    print(f"\ntraining torch_mlp (64-64, 10 epochs) on the fraud template in {tmp / 'torch'} ...")
    project = train_torch_project(tmp / "torch")
    settings = load_settings(project / "mloop.yaml")
    loaded = Registry(settings).load("1")
    report = json.loads(onnx_artifact(loaded.path, ONNX_REPORT_FILE).read_text())
    print(
        f"torch version tag mloop.onnx: {loaded.info.tags.get('mloop.onnx')} "
        f"(export {report.get('seconds')}, fit {report.get('fit_seconds')})"
    )
    if report.get("status") != "verified":
        return
    runtime = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "require"}))
    paths: dict[str, Any] = {"torch": None, "onnx": runtime.onnx}
    # The torch path's two parts, timed alone: scikit-learn's preprocessing, the network's forward.
    preprocessing, network = loaded.model[:-1], loaded.model.steps[-1][1]
    rows = []
    for n in BATCHES:
        records = frame_of(project, n).astype(object)
        columns = runtime.validator.from_records(records.where(records.notna(), None).to_dict("records"))
        ms: dict[str, float] = {}
        answers: dict[str, np.ndarray] = {}
        for name, path in paths.items():
            runtime.compiled = path  # None: the pipeline (preprocessing + torch forward), as without ONNX
            answers[name] = np.asarray(runtime.predict_columns([columns])[1])
            ms[name] = per_call_ms(lambda c=columns: runtime.predict_columns([c]), n, budget)
        frame = build_frame(runtime.specs, [columns])
        ms["prep"] = per_call_ms(lambda f=frame: preprocessing.transform(f), n, budget)
        matrix = preprocessing.transform(frame)
        ms["net"] = per_call_ms(lambda m=matrix: network.predict_proba(m), n, budget)
        diff = float(np.abs(answers["onnx"] - answers["torch"]).max())
        rows.append(
            [
                str(n),
                f"{ms['torch']:.3f}",
                f"{ms['prep']:.3f}",
                f"{ms['net']:.3f}",
                f"{ms['onnx']:.3f}",
                f"{ms['torch'] / ms['onnx']:.1f}x",
                f"{diff:.1e}",
            ]
        )
    table(
        f"torch_mlp 64-64 + preprocessing (torch {torch.__version__}) as served "
        "(ModelRuntime.predict_columns), ms per call",
        [
            "rows",
            "torch (pipeline)",
            "of it: preprocessing",
            "network",
            "ONNX Runtime",
            "torch/ONNX",
            "max |dp|",
        ],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="A trained mloop project (default: train one in a tmp dir).")
    ap.add_argument("--budget", type=float, default=1.0, help="Seconds of calls per measurement.")
    ap.add_argument(
        "--only",
        choices=("mlp", "forest", "torch"),
        action="append",
        help="Run only these benchmarks (repeatable; default: all).",
    )
    args = ap.parse_args()
    only = set(args.only or ("mlp", "forest", "torch"))
    import onnxruntime
    import sklearn
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # BLAS (the MLP's matrix products) on one thread too, as ONNX Runtime is
    print(f"onnxruntime {onnxruntime.__version__}, scikit-learn {sklearn.__version__}, one thread each")
    tmp = Path(tempfile.mkdtemp(prefix="mloop-bench-onnx-"))
    if only & {"mlp", "forest"}:
        if args.project is None:
            from bench_serving import train_project

            print(f"training the serving benchmark's forest in {tmp} ...")
            project = train_project(tmp / "project")
        else:
            project = args.project
        if "mlp" in only:
            bench_mlp(project, args.budget)
        if "forest" in only:
            bench_forest(project, args.budget)
    if "torch" in only:
        bench_torch(tmp, args.budget)


if __name__ == "__main__":
    main()
