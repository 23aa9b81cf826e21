# mypy: ignore-errors
# (kfp is not installed beside MLflow, and its DSL annotations are runtime objects mypy cannot read.)
"""``mloop pipeline compile --target kfp``: the training pipeline as a Kubeflow Pipelines v2 YAML.

Five container components — load → validate → train → evaluate → register — each run the project's
image with ``mloop pipeline step NAME`` (see :mod:`mloop.deploy.steps`), passing rows and results
as KFP artifacts. The YAML is produced by KFP's own compiler (``kfp`` extra: ``pip install
'mloop[kfp]'``, which brings kfp-kubernetes). Every task runs in cluster mode (``MLOOP_CLUSTER=1``)
and gets the tracking server, the store and the prediction log from the deployment's Secret
(``store-url``, ``tracking-uri``, ``prediction-log-url`` as ``MLOOP_*`` variables, kfp-kubernetes'
``use_secret_as_env``), so the steps share one MLflow and one store and nothing local. ``load`` reads
the configured source, which changes without the task's inputs changing, so it is never cached.
"""

# No `from __future__ import annotations`: KFP reads the component signatures at definition time.
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.steps import STEPS
from mloop.errors import DeployError

__all__ = ["STEPS", "STEP_SECRET_KEYS", "build_pipeline", "compile_pipeline"]


def _kfp() -> Any:
    try:
        import kfp
        from kfp import dsl
    except ImportError as exc:
        raise DeployError(
            "Compiling a Kubeflow pipeline needs the kfp package (mloop's `kfp` extra): "
            "pip install 'kfp>=2.7,<3' "
            "(kfp pins protobuf<7, so use a separate environment if MLflow's protobuf conflicts)."
        ) from exc
    return kfp, dsl


# Secret key -> environment variable of what the steps share (the same keys as the manifests' Secret).
STEP_SECRET_KEYS = {
    "store-url": "MLOOP_STORE__URL",
    "tracking-uri": "MLOOP_TRACKING__URI",
    "prediction-log-url": "MLOOP_PREDICTION_LOG__URL",
}


def _configure(task: Any, secret_name: str) -> Any:
    """Cluster mode and the shared services' URLs from the Secret, on one task."""
    try:
        from kfp import kubernetes
    except ImportError as exc:
        raise DeployError(
            "Compiling the Kubeflow pipeline needs kfp-kubernetes (in mloop's `kfp` extra) to pass the "
            "Secret's URLs to the steps: pip install 'kfp-kubernetes>=1.4,<3'."
        ) from exc
    task.set_env_variable("MLOOP_CLUSTER", "1")
    required = {k: v for k, v in STEP_SECRET_KEYS.items() if k != "prediction-log-url"}
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=required)
    kubernetes.use_secret_as_env(
        task,
        secret_name=secret_name,
        secret_key_to_env={"prediction-log-url": STEP_SECRET_KEYS["prediction-log-url"]},
        optional=True,
    )
    return task


def build_pipeline(settings: Settings, options: DeployOptions | None = None) -> Any:
    """The ``@dsl.pipeline`` function of the project (compile it with :func:`compile_pipeline`)."""
    _, dsl = _kfp()
    options = options or DeployOptions()
    image = options.image
    secret = options.secret_name or f"{dns_name(settings.project)}-secrets"
    step = ["mloop", "pipeline", "step"]

    @dsl.container_component
    def load(rows: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(image=image, command=step, args=["load", "--out", rows.path])

    @dsl.container_component
    def validate(rows: dsl.Input[dsl.Dataset], valid: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=image, command=step, args=["validate", "--data", rows.path, "--out", valid.path]
        )

    @dsl.container_component
    def train(valid: dsl.Input[dsl.Dataset], result: dsl.Output[dsl.Artifact]):
        return dsl.ContainerSpec(
            image=image, command=step, args=["train", "--data", valid.path, "--out", result.path]
        )

    @dsl.container_component
    def evaluate(result: dsl.Input[dsl.Artifact], metrics: dsl.Output[dsl.Metrics]):
        return dsl.ContainerSpec(
            image=image, command=step, args=["evaluate", "--result", result.path, "--out", metrics.path]
        )

    @dsl.container_component
    def register(
        result: dsl.Input[dsl.Artifact],
        metrics: dsl.Input[dsl.Metrics],
        model: dsl.Output[dsl.Artifact],
    ):
        # `metrics` is only an input so that registering waits for (and depends on) a passing evaluation.
        return dsl.ContainerSpec(
            image=image, command=step, args=["register", "--result", result.path, "--out", model.path]
        )

    name = f"{dns_name(settings.project)}-training"

    @dsl.pipeline(
        name=name, description=f"mloop training pipeline of {settings.project} ({' -> '.join(STEPS)})"
    )
    def pipeline() -> None:
        # `load` has no inputs, so a cached result would be the data of the first run forever.
        loaded = _configure(load().set_display_name("load").set_caching_options(False), secret)
        validated = _configure(validate(rows=loaded.outputs["rows"]).set_display_name("validate"), secret)
        trained = _configure(train(valid=validated.outputs["valid"]).set_display_name("train"), secret)
        evaluated = _configure(
            evaluate(result=trained.outputs["result"]).set_display_name("evaluate"), secret
        )
        _configure(
            register(result=trained.outputs["result"], metrics=evaluated.outputs["metrics"]).set_display_name(
                "register"
            ),
            secret,
        )

    return pipeline


def compile_pipeline(settings: Settings, out: Path, options: DeployOptions | None = None) -> Path:
    """Compile the pipeline to a KFP v2 YAML file at ``out``."""
    kfp, _ = _kfp()
    from kfp import compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        compiler.Compiler().compile(pipeline_func=build_pipeline(settings, options), package_path=str(out))
    except Exception as exc:  # kfp raises plain ValueError/TypeError for bad specs
        raise DeployError(f"kfp {kfp.__version__} could not compile the pipeline: {exc}") from exc
    return out
