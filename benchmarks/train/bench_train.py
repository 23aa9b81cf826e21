"""mloop train vs the same estimator fitted and logged with plain MLflow calls, on the same data.

Both sides run in fresh child processes with their own tracking store, on the same CSV of N fraud
rows (default 100k), with the same estimator (scikit-learn HistGradientBoosting inside the same
preprocessing). Timing starts after imports on both sides. Printed: each side's total and fit time,
the overhead (total - fit) and the ratios.

    .venv/bin/python benchmarks/train/bench_train.py [--rows 100000]

The plain-MLflow side is what a user writes by hand: read CSV, split, fit, compute metrics, log
params/metrics and the model (skops with trusted types, explicit pip requirements, signature and
input example), register it. mloop additionally validates the contract, profiles the data, scores the
champion, draws four plots, writes contract/profile/evaluation artifacts, gates and records events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PLAIN = textwrap.dedent(
    """
    import json, sys, time
    import mlflow, pandas as pd
    from mlflow.models import infer_signature
    from sklearn.model_selection import train_test_split
    from sklearn import metrics as skm
    from mloop.training.preprocess import build_pipeline
    from mloop.training.estimators import build_estimator
    from mloop.tracking.model_io import trusted_types_for
    csv, tracking = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    mlflow.set_tracking_uri(tracking)
    df = pd.read_csv(csv)
    y = df.pop("is_fraud")
    x = df.drop(columns=["transaction_id", "customer_id", "timestamp"])
    num = ["amount", "hour", "customer_age", "txn_count_24h", "avg_amount_30d", "account_age_days"]
    cat = ["merchant_category", "country", "device"]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    model = build_pipeline(num, cat, build_estimator("hist_gradient_boosting", "classification", {}, 42))
    with mlflow.start_run():
        f0 = time.perf_counter(); model.fit(xtr, ytr); fit = time.perf_counter() - f0
        proba = model.predict_proba(xte)
        mlflow.log_params({"estimator": "hist_gradient_boosting"})
        mlflow.log_metrics({"roc_auc": skm.roc_auc_score(yte, proba[:, 1]),
                            "accuracy": skm.accuracy_score(yte, proba.argmax(1))})
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="skops",
            skops_trusted_types=trusted_types_for(model), signature=infer_signature(xte.head(5), proba[:5]),
            input_example=xte.head(5), pip_requirements=["scikit-learn", "skops"])
        mlflow.register_model(info.model_uri, "bench-plain")
    print(json.dumps({"total": time.perf_counter() - t0, "fit": fit}))
    """
)

MLOOP = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from mloop.config import load_settings
    from mloop.training import train
    # Same footing as the plain side, which imports MLflow before its clock starts.
    import mlflow, mlflow.sklearn, mloop.data, mloop.monitoring.profile, mloop.store, mloop.tracking  # noqa
    project = Path(sys.argv[1])
    overrides = {"model": {"estimator": "hist_gradient_boosting"}}
    t0 = time.perf_counter()
    settings = load_settings(project / "mloop.yaml", overrides=overrides)
    result = train(settings)
    total = time.perf_counter() - t0
    print(json.dumps({"total": total, "fit": result.timings["fit"], "timings": result.timings}))
    """
)


def run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from mloop.project import init_project

    with tempfile.TemporaryDirectory(prefix="mloop-bench-train-") as tmp:
        root = Path(tmp)
        init_project(root / "p", template="fraud", rows=args.rows)
        csv = root / "p" / "data" / "transactions.csv"
        results: dict[str, list[dict[str, float]]] = {"plain": [], "mloop": []}
        for i in range(args.repeats):  # interleaved, so machine noise hits both sides alike
            results["plain"].append(run(PLAIN, str(csv), f"sqlite:///{root / f'plain{i}.db'}"))
            (root / "p" / ".mloop").exists() and subprocess.run(
                ["rm", "-rf", str(root / "p" / ".mloop")], check=True
            )
            results["mloop"].append(run(MLOOP, str(root / "p")))
    best = {side: min(runs, key=lambda r: r["total"]) for side, runs in results.items()}
    p, m = best["plain"], best["mloop"]
    p_over, m_over = p["total"] - p["fit"], m["total"] - m["fit"]
    print(f"rows: {args.rows}, best of {args.repeats} interleaved runs each")
    print(f"plain MLflow : total {p['total']:.2f} s, fit {p['fit']:.2f} s, overhead {p_over:.2f} s")
    print(f"mloop train  : total {m['total']:.2f} s, fit {m['fit']:.2f} s, overhead {m_over:.2f} s")
    print("mloop steps  : " + ", ".join(f"{k} {v:.2f}s" for k, v in m.get("timings", {}).items()))  # type: ignore[union-attr]
    print(
        f"overhead ratio (mloop/plain): {m_over / p_over:.2f}x; "
        f"overhead share of mloop total: {m_over / m['total']:.0%}"
    )
    print(f"total ratio (mloop/plain): {m['total'] / p['total']:.2f}x")


if __name__ == "__main__":
    main()
