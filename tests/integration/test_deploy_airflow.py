"""``mloop pipeline compile --target airflow``: Airflow's own DagBag loads the generated DAG files in a
virtualenv without mloop, finds the five steps in order, builds the pods the tasks would start, and
runs the ``local`` runner's first tasks for real (the ``mloop`` of this checkout as ``MLOOP_BIN``).

Airflow lives in ``.venv-airflow`` (``make .venv-airflow/.installed``: apache-airflow and the
cncf.kubernetes provider, pinned in the Makefile), or the Python in ``MLOOP_AIRFLOW_PYTHON``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_projects import HOSTILE, MLOOP_BIN, SPICY, clean_env, orchestrator_python, small_project
from typer.testing import CliRunner

from mloop.cli.main import app
from mloop.deploy.steps import STEPS

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
RUN_DIR = "manual__2026-01-01T00_00_00_00_00"

# Loads each folder in its own DagBag; builds every KubernetesPodOperator's pod for RUN_ID; runs the
# tasks named in the spec through the operator's own execute() (context values by name, as Airflow does).
LOADER = """
import json, sys
from types import SimpleNamespace
try:
    from airflow.dag_processing.dagbag import DagBag
    def bag_of(folder):
        return DagBag(dag_folder=folder)
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag
    def bag_of(folder):
        return DagBag(dag_folder=folder, include_examples=False)

spec = json.load(open(sys.argv[1]))
report = {}
for folder, run_tasks in spec.items():
    bag = bag_of(folder)
    out = report[folder] = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        tasks = out["dags"][dag_id] = {"description": dag.description}
        for task in dag.tasks:
            tasks[task.task_id] = {"type": type(task).__name__, "upstream": sorted(task.upstream_task_ids)}
            ti = SimpleNamespace(dag_id=dag_id, task_id=task.task_id, map_index=-1, try_number=1)
            context = {"run_id": sys.argv[3], "dag": dag, "ti": ti}
            if type(task).__name__ == "KubernetesPodOperator":
                task.render_template_fields(context)
                tasks[task.task_id]["pod"] = task.build_pod_request_obj(context).to_dict()
        for name in run_tasks:
            dag.get_task(name).execute({"run_id": sys.argv[3]})
json.dump(report, open(sys.argv[2], "w"), default=str)
"""

# Stands in for `mloop` where the DAG's config path is hostile: records the exact argv it was given.
FAKE_MLOOP = """#!{python}
import json, sys
with open({record!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def compile_dag(out: Path, *args: str) -> None:
    result = CliRunner().invoke(app, ["pipeline", "compile", "--target", "airflow", "--out", str(out), *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three DAG folders (kubernetes runner; local runner on a real project; local runner whose config
    path is hostile), loaded once by Airflow (importing Airflow takes a while)."""
    python = orchestrator_python(
        "airflow",
        "MLOOP_AIRFLOW_PYTHON",
        "import airflow.providers.cncf.kubernetes",
        ".venv-airflow/.installed",
    )
    base = tmp_path_factory.mktemp("airflow")
    (base / "k8s-project").mkdir()
    (base / "k8s-project" / "mloop.yaml").write_text("project: Fraud\nmodel: {name: fraud}\n")
    compile_dag(
        base / "k8s" / "fraud_dag.py",
        "--config",
        str(base / "k8s-project" / "mloop.yaml"),
        "--image",
        "reg/fraud:7",
        "--namespace",
        "ml",
    )
    project = small_project(base / SPICY)
    compile_dag(base / "local" / "fraud_dag.py", "--runner", "local", "--config", str(project))
    (base / HOSTILE).mkdir()
    hostile_config = base / HOSTILE / "mloop.yaml"
    hostile_config.write_text("project: hostile\nmodel: {name: hostile}\n")
    compile_dag(base / "hostile" / "dag.py", "--runner", "local", "--config", str(hostile_config))
    record = base / "argv.jsonl"
    fake = base / "fake-mloop"
    fake.write_text(FAKE_MLOOP.format(python=sys.executable, record=str(record)))
    fake.chmod(0o755)

    (base / "kubeconfig").write_text(  # the provider reads one to label pods; nothing connects to it
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    (base / "loader.py").write_text(LOADER)
    (base / "spec.json").write_text(json.dumps({"k8s": [], "local": ["load", "validate"]}))
    (base / "spec-hostile.json").write_text(json.dumps({"hostile": ["load"]}))
    env = clean_env(AIRFLOW_HOME=str(base / "airflow-home"), KUBECONFIG=str(base / "kubeconfig"))
    runs = []
    for spec, mloop, report in (
        ("spec.json", MLOOP_BIN, "report.json"),
        ("spec-hostile.json", str(fake), "r2.json"),
    ):
        done = subprocess.run(
            [python, "loader.py", spec, report, RUN_ID],
            cwd=base,
            env={**env, "MLOOP_BIN": mloop},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs.append(json.loads((base / report).read_text()))
    yield {
        **runs[0],
        **runs[1],
        "base": base,
        "project": project,
        "python": python,
        "record": record,
        "hostile_config": hostile_config,
    }


def test_dags_load_without_import_errors(airflow: dict[str, Any]) -> None:
    for folder in ("k8s", "local", "hostile"):
        assert airflow[folder]["errors"] == {}, folder
    assert set(airflow["k8s"]["dags"]) == set(airflow["local"]["dags"]) == {"fraud-training"}


def test_airflow_env_has_no_mloop(airflow: dict[str, Any]) -> None:
    done = subprocess.run(
        [airflow["python"], "-c", "import mloop"], env=clean_env(), capture_output=True, check=False
    )
    assert done.returncode != 0, "the DAG files must load where mloop is not installed"


@pytest.mark.parametrize(
    ("folder", "operator"), [("k8s", "KubernetesPodOperator"), ("local", "PythonOperator")]
)
def test_the_steps_run_in_order(airflow: dict[str, Any], folder: str, operator: str) -> None:
    dag = airflow[folder]["dags"]["fraud-training"]
    assert dag.pop("description").startswith("mloop training pipeline of")
    assert list(dag) == list(STEPS)
    for i, name in enumerate(STEPS):
        assert dag[name]["type"] == operator
        assert dag[name]["upstream"] == ([STEPS[i - 1]] if i else [])


def test_pods_run_the_step_in_cluster_mode_with_the_secret_and_the_run_volume(
    airflow: dict[str, Any],
) -> None:
    tasks = airflow["k8s"]["dags"]["fraud-training"]
    files = {
        "load": ["--out", "rows.parquet"],
        "validate": ["--data", "rows.parquet", "--out", "valid.parquet"],
        "train": ["--data", "valid.parquet", "--out", "result.json"],
        "evaluate": ["--result", "result.json", "--out", "metrics.json"],
        "register": ["--result", "result.json", "--out", "model.json"],
    }
    for name in STEPS:
        pod = tasks[name]["pod"]
        assert pod["metadata"]["namespace"] == "ml"
        (container,) = pod["spec"]["containers"]
        assert container["image"] == "reg/fraud:7"
        assert container["command"] == ["mloop", "pipeline", "step"]
        # Every file of a run is in that run's own folder of the shared volume.
        expected = [arg if arg.startswith("--") else f"/pipeline/{RUN_DIR}/{arg}" for arg in files[name]]
        assert container["args"] == [name, *expected]
        env = {e["name"]: e for e in container["env"]}
        assert env["MLOOP_CLUSTER"]["value"] == "1"
        refs = {
            e["name"]: (e["value_from"]["secret_key_ref"]["name"], e["value_from"]["secret_key_ref"]["key"])
            for e in container["env"]
            if e.get("value_from")
        }
        assert refs == {
            "MLOOP_STORE__URL": ("fraud-secrets", "store-url"),
            "MLOOP_TRACKING__URI": ("fraud-secrets", "tracking-uri"),
            "MLOOP_PREDICTION_LOG__URL": ("fraud-secrets", "prediction-log-url"),
        }
        assert env["MLOOP_PREDICTION_LOG__URL"]["value_from"]["secret_key_ref"]["optional"] is True
        assert env["MLOOP_STORE__URL"]["value_from"]["secret_key_ref"]["optional"] is False
        (mount,) = container["volume_mounts"]
        (volume,) = pod["spec"]["volumes"]
        assert mount["mount_path"] == "/pipeline" and mount["name"] == volume["name"]
        assert volume["persistent_volume_claim"]["claim_name"] == "fraud-pipeline"


def test_local_runner_runs_the_steps_with_mloop_on_the_worker(airflow: dict[str, Any]) -> None:
    # `load` and `validate` ran through the DAG's own tasks, in a project whose path holds quotes,
    # braces and shell syntax: the files are where the next step looks for them.
    run_dir = Path(airflow["project"]).parent / ".mloop" / "pipelines" / RUN_DIR
    assert (run_dir / "rows.parquet").is_file() and (run_dir / "valid.parquet").is_file()
    assert not list(Path(airflow["base"]).rglob("PWNED"))


def test_hostile_config_path_reaches_mloop_as_one_argument(airflow: dict[str, Any]) -> None:
    assert airflow["hostile"]["errors"] == {}
    assert list(airflow["hostile"]["dags"]) == ["hostile-training"]
    (argv,) = [json.loads(line) for line in Path(airflow["record"]).read_text().splitlines()]
    run_dir = f"{Path(airflow['hostile_config']).parent}/.mloop/pipelines/{RUN_DIR}"
    assert argv == [
        "pipeline",
        "step",
        "load",
        "--out",
        f"{run_dir}/rows.parquet",
        "--config",
        str(airflow["hostile_config"]),
    ]
    assert not list(Path(airflow["base"]).rglob("PWNED"))
