"""Start-up time of mloop's read-only commands against a bare MLflow client call, hyperfine-style.

Each command runs ``--runs`` times (after ``--warmup`` unmeasured runs) as a fresh process, from the
project's directory, alternating between commands so a busy machine slows them all alike. The table
gives the mean, standard deviation, min and median wall time of each, and each command's median as a
ratio of the baseline's.

The baseline is what any tool reading MLflow's registry pays: a fresh Python imports ``mlflow``,
opens the project's tracking store and lists the model's versions (``MlflowClient.search_model_versions``).
The target (issue "A CLI that talks"): ``mloop status``, ``mloop models list`` and ``mloop rollout
status`` each take at most 2x the baseline.

    .venv/bin/python benchmarks/cli/bench_startup.py                 # builds a project in a tmp dir
    .venv/bin/python benchmarks/cli/bench_startup.py --project DIR   # an existing, trained project
    .venv/bin/python benchmarks/cli/bench_startup.py --runs 10 --json out.json

The project built here is the fraud template (3,000 rows) trained twice, with a canary rollout of the
second version started, so ``rollout status`` has a rollout to show.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable

BASELINE = """
import sys
from mlflow import MlflowClient
uri = sys.argv[1]
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
print(len(client.search_model_versions(f"name='{sys.argv[2]}'")))
"""

COMMANDS = {
    "status": ["status"],
    "models list": ["models", "list"],
    "rollout status": ["rollout", "status"],
}


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Seconds one process takes, start to exit; a failed command stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def build_project(root: Path) -> Path:
    """The fraud template, trained twice, with a canary rollout of v2 (a few minutes on a laptop)."""
    project = root / "bench"
    mloop = [PY, "-m", "mloop"]
    subprocess.run([*mloop, "init", str(project), "--rows", "3000"], check=True, capture_output=True)
    for _ in range(2):
        done = subprocess.run([*mloop, "train"], cwd=project, capture_output=True, text=True)
        if done.returncode not in (0, 4):
            raise SystemExit(f"mloop train failed:\n{done.stdout}\n{done.stderr}")
    subprocess.run(
        [*mloop, "rollout", "start", "--strategy", "canary", "--version", "2"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    return project


def describe(samples: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(samples),
        "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "min": min(samples),
        "median": statistics.median(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="A trained mloop project (default: build one).")
    parser.add_argument("--runs", type=int, default=7, help="Measured runs per command.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured runs per command first.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument(
        "--compare-src",
        type=Path,
        help="Also time the mloop commands with this source tree first on PYTHONPATH (e.g. an older "
        "commit's src/, from `git archive COMMIT src | tar -x -C DIR`), interleaved with the others.",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        project = args.project.resolve() if args.project else build_project(Path(tmp))
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from mloop.config import load_settings

        settings = load_settings(project / "mloop.yaml")
        cmds = {"mlflow client (baseline)": [PY, "-c", BASELINE, settings.tracking_uri, settings.model.name]}
        cmds.update({f"mloop {name}": [PY, "-m", "mloop", *argv] for name, argv in COMMANDS.items()})
        envs: dict[str, dict[str, str] | None] = dict.fromkeys(cmds)
        if args.compare_src:
            other = {**os.environ, "PYTHONPATH": str(args.compare_src.resolve())}
            for name, argv in COMMANDS.items():
                label = f"mloop {name} ({args.compare_src.name})"
                cmds[label], envs[label] = [PY, "-m", "mloop", *argv], other
        for name, cmd in cmds.items():
            for _ in range(args.warmup):
                run(cmd, project, envs[name])
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):  # interleaved: load on the machine hits every command alike
            for name, cmd in cmds.items():
                samples[name].append(run(cmd, project, envs[name]))

    stats = {name: describe(s) for name, s in samples.items()}
    base = stats["mlflow client (baseline)"]["median"]
    print(f"{args.runs} runs each (after {args.warmup} warm-up), wall seconds per process start to exit")
    width = max(28, *(len(n) + 2 for n in stats))
    print(f"{'command':<{width}}{'mean':>8}{'± sd':>8}{'min':>8}{'median':>8}{'ratio':>8}")
    for name, st in stats.items():
        print(
            f"{name:<{width}}{st['mean']:>8.2f}{st['stdev']:>8.2f}{st['min']:>8.2f}{st['median']:>8.2f}"
            f"{st['median'] / base:>7.2f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": args.runs, "stats": stats, "samples": samples}, indent=2), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
