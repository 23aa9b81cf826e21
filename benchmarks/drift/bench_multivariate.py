"""Multivariate drift benchmark: false alarms, detection of broken dependencies, cost.

    .venv/bin/python benchmarks/drift/bench_multivariate.py [--reps 100] [--skip-nannyml] [--skip-cost]
        [--skip-detection]

Data (seeded): six columns whose marginals never change — x1, x2 ~ N(0, 1) with correlation 0.9,
x3 ~ N(0, 1), ``sign`` = "pos" when x3 > 0, ``noise`` ~ Exp(1), ``tag`` uniform over five letters.
Scenarios, each on fresh windows of 100, 1,000, 10,000 and 100,000 rows:

- ``no drift``: windows from the reference process (false-alarm rate; target <= 5 % at every size);
- ``correlation``: x2 independent of x1 (same N(0, 1) marginal);
- ``categorical``: ``sign`` independent of x3 (same 50/50 marginal).
Detection target: >= 90 % at 1,000 rows and above.

Three detectors on the same windows:
- mloop's domain classifier (``mloop.monitoring.multivariate``, alpha 0.01);
- a PCA reconstruction error computed here (NannyML's method: standardise, one-hot, PCA keeping 65 %
  of the variance, alarm when a window's mean error leaves mean +- 3 std of reference chunks) — the
  alternative the choice was made against;
- NannyML's own ``DataReconstructionDriftCalculator`` in its own virtualenv (``.benchvenv-nannyml/``,
  created on first use), fed the same windows from Parquet files.
Per-column tests (``detect_drift(..., multivariate=False)``) are shown too: they cannot see either change.

Cost: ``detect_drift`` on 1,000,000 x 25 (20 numeric, 5 categorical) with and without the multivariate
check, in the same process, wall time and the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
NANNY_VENV = ROOT / ".benchvenv-nannyml"
SIZES = (100, 1000, 10_000, 100_000)
SCENARIOS = ("no drift", "correlation", "categorical")
COLUMNS = ["x1", "x2", "x3", "sign", "noise", "tag"]
NUMERIC = ["x1", "x2", "x3", "noise"]


def rows(n: int, rng: np.random.Generator, scenario: str = "no drift") -> pd.DataFrame:
    z = rng.standard_normal((n, 3))
    x2 = z[:, 1] if scenario == "correlation" else 0.9 * z[:, 0] + math.sqrt(1 - 0.81) * z[:, 1]
    sign = rng.choice(["pos", "neg"], n) if scenario == "categorical" else np.where(z[:, 2] > 0, "pos", "neg")
    return pd.DataFrame(
        {
            "x1": z[:, 0],
            "x2": x2,
            "x3": z[:, 2],
            "sign": sign,
            "noise": rng.exponential(size=n),
            "tag": rng.choice(list("abcde"), n),
        }
    )


class PcaDetector:
    """NannyML's data-reconstruction method, in numpy (standardise + one-hot, PCA at 65 % variance)."""

    def __init__(self, reference: pd.DataFrame, chunk: int, seed: int = 0) -> None:
        enc = self._raw(reference)
        self.mean, self.std = enc.mean(0), enc.std(0) + 1e-12
        x = (enc - self.mean) / self.std
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        self.components = vt[: int(np.searchsorted(share, 0.65) + 1)]
        rng = np.random.default_rng(seed)
        chunk = min(chunk, len(reference) // 4)
        errors = [
            self.error(reference.iloc[rng.choice(len(reference), chunk, replace=False)]) for _ in range(30)
        ]
        self.lo, self.hi = (
            float(np.mean(errors) - 3 * np.std(errors)),
            float(np.mean(errors) + 3 * np.std(errors)),
        )

    @staticmethod
    def _raw(df: pd.DataFrame) -> np.ndarray:
        parts = [df[NUMERIC].to_numpy(float)]
        for col, levels in (("sign", ["pos", "neg"]), ("tag", list("abcde"))):
            parts.append((df[col].to_numpy()[:, None] == np.array(levels)[None, :]).astype(float))
        return np.hstack(parts)

    def error(self, df: pd.DataFrame) -> float:
        x = (self._raw(df) - self.mean) / self.std
        back = x @ self.components.T @ self.components
        return float(np.mean(np.linalg.norm(x - back, axis=1)))

    def drifted(self, df: pd.DataFrame) -> bool:
        e = self.error(df)
        return not self.lo <= e <= self.hi


def wilson(k: int, n: int) -> str:
    """Rate with its 95 % Wilson interval."""
    if n == 0:
        return "-"
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:5.1f}% [{100 * max(0, centre - half):4.1f}, {100 * min(1, centre + half):5.1f}]"


def run_nannyml(
    reference: pd.DataFrame, windows: dict[tuple[str, int], list[pd.DataFrame]]
) -> dict[str, float]:
    """NannyML's DataReconstructionDriftCalculator on the same windows, in its own virtualenv."""
    python = NANNY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(NANNY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "nannyml", "statsmodels", "pandas<3", "pyarrow"],
            check=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reference.to_parquet(work / "ref.parquet")
        index = []
        for (scenario, size), frames in windows.items():
            for i, frame in enumerate(frames):
                path = work / f"{scenario.replace(' ', '_')}-{size}-{i}.parquet"
                frame.to_parquet(path)
                index.append([scenario, size, str(path)])
        (work / "index.json").write_text(json.dumps(index))
        code = r"""
import json, sys, time, warnings
import pandas as pd, nannyml as nml
warnings.filterwarnings("ignore")
work = sys.argv[1]
ref = pd.read_parquet(f"{work}/ref.parquet")
out = {}
t0 = time.perf_counter()
fitted = {}
for scenario, size, path in json.load(open(f"{work}/index.json")):
    chunk = min(size, len(ref) // 4)
    if chunk not in fitted:
        calc = nml.DataReconstructionDriftCalculator(column_names=list(ref.columns), chunk_size=chunk)
        calc.fit(ref)
        fitted[chunk] = calc
    cur = pd.read_parquet(path)
    part = cur.iloc[:chunk] if len(cur) > chunk else cur
    res = fitted[chunk].calculate(part).filter(period="analysis").to_df()
    alert = bool(res[("reconstruction_error", "alert")].any())
    key = f"{scenario}|{size}"
    hits, n = out.get(key, (0, 0))
    out[key] = (hits + alert, n + 1)
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""
        proc = subprocess.run(
            [str(python), "-c", code, str(work)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"NannyML failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def detection_table(reps: int, skip_nannyml: bool) -> None:
    from mloop.monitoring import detect_drift
    from mloop.monitoring.multivariate import detect_multivariate
    from mloop.monitoring.profile import build_profile

    rng = np.random.default_rng(2026)
    reference = rows(50_000, rng)
    profile = build_profile(reference)
    pca = {size: PcaDetector(reference, size) for size in SIZES}
    windows: dict[tuple[str, int], list[pd.DataFrame]] = {}
    counts: dict[tuple[str, int, str], int] = {}
    seconds = {"mloop": 0.0, "pca": 0.0, "per-column": 0.0}
    for size in SIZES:
        for scenario in SCENARIOS:
            frames = windows.setdefault((scenario, size), [])
            for rep in range(reps if size < 100_000 else max(10, reps // 4)):
                w = rows(size, rng, scenario)
                if len(frames) < min(reps, 30):
                    frames.append(w)
                t = time.perf_counter()
                hit = detect_multivariate(profile.joint, w, seed=rep).drifted
                seconds["mloop"] += time.perf_counter() - t
                t = time.perf_counter()
                pca_hit = pca[size].drifted(w)
                seconds["pca"] += time.perf_counter() - t
                for name, h in (("mloop", hit), ("pca", pca_hit)):
                    counts[(scenario, size, name)] = counts.get((scenario, size, name), 0) + h
                counts[(scenario, size, "n")] = counts.get((scenario, size, "n"), 0) + 1
                if rep < 10:
                    t = time.perf_counter()
                    col = detect_drift(profile, w, multivariate=False, fdr=0.01).dataset_drifted
                    seconds["per-column"] += time.perf_counter() - t
                    counts[(scenario, size, "cols")] = counts.get((scenario, size, "cols"), 0) + col
                    counts[(scenario, size, "ncols")] = counts.get((scenario, size, "ncols"), 0) + 1
            print(f"  done: {scenario} at {size:,} rows", file=sys.stderr, flush=True)
    nanny: dict[str, float] = {}
    if not skip_nannyml:
        try:
            nanny = run_nannyml(reference, windows)
        except Exception as exc:  # the benchmark reports the other sides anyway
            print(f"NannyML side skipped: {exc}", file=sys.stderr)
    print("\nalarm rate [95% CI] per window (no drift: false alarms; others: detection)")
    print(
        f"{'scenario':<12} {'rows':>7}  {'mloop domain classifier':<26} {'PCA reconstruction':<26} "
        f"{'NannyML reconstruction':<26} per-column (FDR 0.01)"
    )
    for scenario in SCENARIOS:
        for size in SIZES:
            n = counts[(scenario, size, "n")]
            key = f"{scenario}|{size}"
            nm = wilson(int(nanny[key][0]), int(nanny[key][1])) if key in nanny else "-"
            print(
                f"{scenario:<12} {size:>7,}  {wilson(counts[(scenario, size, 'mloop')], n):<26} "
                f"{wilson(counts[(scenario, size, 'pca')], n):<26} {nm:<26} "
                f"{counts[(scenario, size, 'cols')]}/{counts[(scenario, size, 'ncols')]}"
            )
    total = sum(counts[(s, z, "n")] for s in SCENARIOS for z in SIZES)
    nanny_windows = sum(int(v[1]) for k, v in nanny.items() if k != "seconds")
    print(
        f"\nmean time per window: mloop {1000 * seconds['mloop'] / total:.0f} ms, "
        f"PCA {1000 * seconds['pca'] / total:.1f} ms"
        + (
            f", NannyML {1000 * nanny['seconds'] / max(1, nanny_windows):.0f} ms"
            if "seconds" in nanny
            else ""
        )
    )


def cost(rows_n: int) -> None:
    from mloop.monitoring import detect_drift
    from mloop.monitoring.profile import build_profile

    rng = np.random.default_rng(7)

    def frame(shift: bool) -> pd.DataFrame:
        data = {
            f"n{i}": rng.standard_normal(rows_n) * (1 + i / 10) + (0.4 if shift and i >= 15 else 0)
            for i in range(20)
        }
        for i in range(5):
            data[f"c{i}"] = rng.choice([f"l{j}" for j in range(3 + 40 * i)], rows_n)
        return pd.DataFrame(data)

    ref, cur = frame(False), frame(True)
    profile = build_profile(ref)
    del ref
    for flag in (False, True):  # warm both paths once (imports, thread pools)
        detect_drift(profile, cur.iloc[:5000], multivariate=flag)
    timings = {}
    for flag in (False, True, False, True):
        t = time.perf_counter()
        report = detect_drift(profile, cur, multivariate=flag)
        timings.setdefault(flag, []).append(time.perf_counter() - t)
    base, full = min(timings[False]), min(timings[True])
    print(
        f"\ncost on {rows_n:,} x 25 (best of 2): per-column only {base:.2f} s, with multivariate "
        f"{full:.2f} s (+{full - base:.2f} s, x{full / base:.2f})\nmultivariate: "
        f"{report.multivariate.describe() if report.multivariate else '-'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reps", type=int, default=100, help="windows per scenario and size (100k: a quarter)"
    )
    parser.add_argument("--skip-nannyml", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-detection", action="store_true", help="only the 1M x 25 cost")
    parser.add_argument("--cost-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if not args.skip_detection:
        detection_table(args.reps, args.skip_nannyml)
    if not args.skip_cost:
        cost(args.cost_rows)


if __name__ == "__main__":
    main()
