"""Quality estimated without labels: mloop against NannyML's CBPE on the same windows, known truth.

    .venv/bin/python benchmarks/estimation/bench_estimation.py [--windows 25] [--rows 2000] [--skip-nannyml]
        [--baseline-src OTHER/src]   # also time another mloop (e.g. a worktree of an older commit)

Synthetic binary data whose true P(y=1 | x) is known (six Gaussian features, a logit with an
interaction and a sine term, ~17 % positives). A gradient-boosted classifier trained with balanced
class weights (so its probabilities overstate the positives and calibration matters) is evaluated on
a 10,000-row holdout, the reference both estimators calibrate on. Then ``--windows`` windows of
``--rows`` predictions per scenario, labels drawn from the truth:

- ``no drift``: the training distribution;
- ``covariate shift 0.5/1/2``: x0 and x1 move by 0.5, 1 and 2 (half that for x1) standard
  deviations, P(y | x) unchanged — what confidence-based estimation is built for;
- ``prior shift``: P(y) from ~17 % to ~40 %, P(x | y) unchanged (so P(y | x) changes too);
- ``concept drift``: P(y | x) changes (x1's effect reversed), P(x) unchanged — invisible to any
  estimate from the model's own confidence; realized quality from labels is what catches it.

Per window: each side's estimate of accuracy, precision, recall, F1 and ROC AUC, with its interval
(mloop: 95 % interval of the realized value; NannyML: its confidence band, estimate ± 3 sampling
errors), against the realized value from the window's labels. Reported per scenario: mean absolute
error, interval coverage, and time (compute: calibration on the reference + estimating every window,
measured inside each child process; wall: the child process with its imports), and the estimate's
cost per window (compute less the calibration's fit, over the windows). Like is compared with like:
mloop's one call per window against NannyML's one call per window (``nannyml-window``, what a
monitoring cycle makes); against NannyML's one call for every window (``nannyml-batch``) mloop still
makes one call per window, as it has no call for many windows at once. NannyML runs in its
own virtualenv, ``.benchvenv-nannyml/`` at the repository root (created on first use with nannyml
0.13, statsmodels and pandas<3), because it pins pandas and numpy versions mloop does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
NANNY_VENV = ROOT / ".benchvenv-nannyml"
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
SCENARIOS = (
    "no drift",
    "covariate shift 0.5",
    "covariate shift 1",
    "covariate shift 2",
    "prior shift",
    "concept drift",
)
D = 6


def true_logit(x: np.ndarray, *, concept: bool = False) -> np.ndarray:
    """The truth: log-odds of y=1 given x (``concept``: x1's effect reversed)."""
    b1 = -0.8 if concept else 0.8
    return (
        -2.2
        + 1.2 * x[:, 0]
        + b1 * x[:, 1]
        - 0.6 * x[:, 2]
        + 0.7 * x[:, 3] * x[:, 4]
        + 0.5 * np.sin(2 * x[:, 5])
    )


def draw(
    n: int, rng: np.random.Generator, *, shift: float = 0.0, concept: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, D))
    x[:, 0] += shift
    x[:, 1] += shift / 2
    p = 1 / (1 + np.exp(-true_logit(x, concept=concept)))
    return x, (rng.random(n) < p).astype(int)


def draw_prior_shift(
    n: int, rng: np.random.Generator, positives: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """P(x | y) as in training, P(y) = ``positives``: rows drawn by class from a large pool."""
    x, y = draw(20 * n, rng)
    k = rng.binomial(n, positives)
    pos = rng.choice(np.flatnonzero(y == 1), k, replace=False)
    neg = rng.choice(np.flatnonzero(y == 0), n - k, replace=False)
    idx = rng.permutation(np.concatenate([pos, neg]))
    return x[idx], y[idx]


def make_data(work: Path, windows: int, rows: int) -> None:
    """Train the model; write the reference (holdout) and the analysis windows; keep their labels."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(2026)
    x_train, y_train = draw(20_000, rng)
    model = HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=0)
    model.fit(x_train, y_train)
    x_ref, y_ref = draw(10_000, rng)
    p_ref = model.predict_proba(x_ref)[:, 1]
    pd.DataFrame({"y_pred_proba": p_ref, "y_pred": (p_ref >= 0.5).astype(int), "y_true": y_ref}).to_parquet(
        work / "reference.parquet"
    )
    frames, labels = [], []
    for s, scenario in enumerate(SCENARIOS):
        for w in range(windows):
            if scenario.startswith("covariate"):
                x, y = draw(rows, rng, shift=float(scenario.split()[-1]))
            elif scenario == "prior shift":
                x, y = draw_prior_shift(rows, rng)
            else:
                x, y = draw(rows, rng, concept=scenario == "concept drift")
            p = model.predict_proba(x)[:, 1]
            frames.append(
                pd.DataFrame({"y_pred_proba": p, "y_pred": (p >= 0.5).astype(int), "window": s * windows + w})
            )
            labels.append(y)
    pd.concat(frames, ignore_index=True).to_parquet(work / "analysis.parquet")
    np.save(work / "labels.npy", np.concatenate(labels))


def child_mloop(work: Path, side: str) -> None:
    from mloop.monitoring.estimation import estimate_quality
    from mloop.training.probability_calibration import fit_quality_estimator

    ref = pd.read_parquet(work / "reference.parquet")
    ana = pd.read_parquet(work / "analysis.parquet")
    # The windows as the prediction log holds them (NannyML reads its columns as they are).
    q = ana["y_pred_proba"].to_numpy()
    log = pd.DataFrame({"prediction": ana["y_pred"].to_numpy(), "proba_0": 1 - q, "proba_1": q})
    t0, c0 = time.perf_counter(), time.process_time()
    p = ref["y_pred_proba"].to_numpy()
    estimator = fit_quality_estimator(
        "classification",
        predictions=ref["y_pred"].to_numpy(),
        proba=np.column_stack([1 - p, p]),
        classes=[0, 1],
        y_true=ref["y_true"].to_numpy(),
    )
    fit_s = time.perf_counter() - t0
    out = []
    for idx in ana.groupby("window", sort=True).indices.values():
        est = estimate_quality(log.iloc[idx], estimator)  # a window's rows, as NannyML's are sliced
        out.append({m: [est.metrics[m], est.lower[m], est.upper[m]] for m in METRICS})
    compute, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"compute_s": compute, "compute_cpu_s": cpu, "fit_s": fit_s, "windows": out}
    (work / f"{side}.json").write_text(json.dumps(result))


NANNY_CODE = r"""
import json, sys, time, warnings
import pandas as pd, nannyml as nml
warnings.filterwarnings("ignore")
work, rows, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metrics = ["accuracy", "precision", "recall", "f1", "roc_auc"]
ref = pd.read_parquet(f"{work}/reference.parquet")
ana = pd.read_parquet(f"{work}/analysis.parquet")
t0, c0 = time.perf_counter(), time.process_time()
cbpe = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
                problem_type="classification_binary", metrics=metrics, chunk_size=rows)
cbpe.fit(ref)
fit = time.perf_counter() - t0
if mode == "batch":  # every window in one call, one chunk each: NannyML's most favourable use
    parts = [cbpe.estimate(ana[["y_pred_proba", "y_pred"]]).filter(period="analysis").to_df()]
else:  # one call per window, as a monitoring cycle would make it
    cols = ana[["y_pred_proba", "y_pred"]]
    parts = [cbpe.estimate(cols.iloc[idx]).filter(period="analysis").to_df()
             for idx in ana.groupby("window", sort=True).indices.values()]
compute, cpu = time.perf_counter() - t0, time.process_time() - c0
out = []
for res in parts:
    for _, r in res.iterrows():
        out.append({m: [float(r[(m, "value")]), float(r[(m, "lower_confidence_boundary")]),
                        float(r[(m, "upper_confidence_boundary")])] for m in metrics})
json.dump({"compute_s": compute, "compute_cpu_s": cpu, "fit_s": fit, "windows": out,
           "version": nml.__version__}, open(f"{work}/nannyml-{mode}.json", "w"))
"""


def ensure_nannyml_venv() -> Path:
    python = NANNY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(NANNY_VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import nannyml; print(nannyml.__version__)"], capture_output=True, text=True
    )
    if probe.returncode != 0 or not probe.stdout.startswith("0.13"):
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "nannyml==0.13.*",
                "statsmodels",
                "pandas<3",
                "pyarrow",
            ],
            check=True,
        )
    return python


def run_side(cmd: list[str], out: Path, pythonpath: str | None = None) -> dict:
    # NannyML sends usage statistics unless told not to; the benchmark measures it offline.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NML_DISABLE_USAGE_LOGGING": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, whatever else the machine runs
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[-3:]} failed with exit status {os.waitstatus_to_exitcode(status)}")
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - start
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def realized(y: np.ndarray, pred: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=25, help="windows per scenario")
    parser.add_argument("--rows", type=int, default=2000, help="predictions per window")
    parser.add_argument("--skip-nannyml", action="store_true")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also time the mloop package under DIR (its src/, e.g. of a worktree of an older commit) as "
        "'mloop-baseline', in the same run",
    )
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, work = args.child
        if side == "generate":
            make_data(Path(work), args.windows, args.rows)
        else:
            child_mloop(Path(work), side)
        return
    with tempfile.TemporaryDirectory(prefix="mloop-estimation-bench-") as tmp:
        work = Path(tmp)
        me = [sys.executable, __file__, "--windows", str(args.windows), "--rows", str(args.rows), "--child"]
        subprocess.run([*me, "generate", str(work)], check=True)
        sides = {"mloop": run_side([*me, "mloop", str(work)], work / "mloop.json")}
        if args.baseline_src:
            baseline = str(Path(args.baseline_src).resolve())
            sides["mloop-baseline"] = run_side(
                [*me, "mloop-baseline", str(work)], work / "mloop-baseline.json", pythonpath=baseline
            )
        if not args.skip_nannyml:
            python = ensure_nannyml_venv()
            for mode in ("batch", "window"):
                sides[f"nannyml-{mode}"] = run_side(
                    [str(python), "-c", NANNY_CODE, str(work), str(args.rows), mode],
                    work / f"nannyml-{mode}.json",
                )
        ana = pd.read_parquet(work / "analysis.parquet")
        labels = np.load(work / "labels.npy")
    truth = []
    for idx in ana.groupby("window", sort=True).indices.values():
        truth.append(
            realized(labels[idx], ana["y_pred"].to_numpy()[idx], ana["y_pred_proba"].to_numpy()[idx])
        )
    report(args, sides, truth)


def report(args: argparse.Namespace, sides: dict, truth: list[dict[str, float]]) -> None:
    print(
        f"{len(SCENARIOS)} scenarios x {args.windows} windows x {args.rows} rows; "
        "reference: 10,000 holdout rows"
    )
    names = list(sides)
    print(f"{'':<39}" + " ".join(f"{n:>23}" for n in names))
    print(
        f"{'scenario':<20} {'metric':<9} {'realized':>8} "
        + " ".join(f"{'MAE cover width':>23}" for _ in names)
    )
    verdicts: dict[str, bool] = {}
    for s, scenario in enumerate(SCENARIOS):
        span = range(s * args.windows, (s + 1) * args.windows)
        for m in METRICS:
            real = np.array([truth[w][m] for w in span])
            cells, maes = [], {}
            for name, side in sides.items():
                est = np.array([side["windows"][w][m] for w in span], dtype=float)
                maes[name] = float(np.nanmean(np.abs(est[:, 0] - real)))
                cover = float(np.mean((est[:, 1] <= real) & (real <= est[:, 2])))
                width = float(np.nanmean(est[:, 2] - est[:, 1]))
                cells.append(f"{maes[name]:>9.4f} {cover:>5.0%} {width:>7.3f} ")
            print(f"{scenario:<20} {m:<9} {real.mean():>8.3f} " + " ".join(cells))
            if "nannyml-batch" in maes:
                theirs = maes["nannyml-batch"]
                ok = maes["mloop"] <= theirs + max(0.005, 0.1 * theirs)
                verdicts[scenario] = verdicts.get(scenario, True) and ok
    print()
    for name, side in sides.items():
        per_window = (side["compute_s"] - side.get("fit_s", 0.0)) / len(side["windows"]) * 1e3
        print(
            f"{name:<14} compute {side['compute_s']:7.2f} s (CPU {side.get('compute_cpu_s', 0):6.2f} s)   "
            f"process wall {side['wall_s']:7.2f} s (CPU {side['cpu_s']:6.2f} s)   "
            f"per window {per_window:6.2f} ms (fit {side.get('fit_s', 0.0) * 1e3:.0f} ms)"
        )
    ours = sides["mloop"]
    how = {
        "mloop-baseline": "the same windows with the baseline mloop",
        "nannyml-window": "one call per window on both sides",
        "nannyml-batch": "mloop one call per window, NannyML one call for every window",
    }
    for name, side in sides.items():
        if name != "mloop":
            print(
                f"speed-up against {name} ({how.get(name, name)}): "
                f"compute {side['compute_s'] / ours['compute_s']:.1f}x "
                f"(CPU {side['compute_cpu_s'] / ours['compute_cpu_s']:.1f}x), process wall "
                f"{side['wall_s'] / ours['wall_s']:.1f}x (CPU {side['cpu_s'] / ours['cpu_s']:.1f}x)"
                + (f" (nannyml {side['version']})" if side.get("version") else "")
            )
    for scenario, ok in verdicts.items():
        print(
            f"  {scenario:<20} MAE within max(0.005, 10 %) of NannyML's on every metric: "
            + ("yes" if ok else "NO")
        )


if __name__ == "__main__":
    main()
