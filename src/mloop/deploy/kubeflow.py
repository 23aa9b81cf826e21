# mypy: ignore-errors
# (kfp is not installed beside MLflow, and its DSL annotations are runtime objects mypy cannot read.)
"""``mloop pipeline compile --target kfp``: the training pipeline as a Kubeflow Pipelines v2 YAML.

Five container components — load → validate → train → evaluate → register — each run the project's
image with ``mloop pipeline step NAME`` (see :mod:`mloop.deploy.steps`), passing rows and results
as KFP artifacts. The YAML is produced by KFP's own compiler (``kfp`` extra: ``pip install
'mloop[kfp]'``). The tasks must share a tracking server and store: put them in the image's
``mloop.yaml``, or attach the deployment's Secret as ``MLOOP_*`` variables (kfp-kubernetes'
``use_secret_as_env``) before submitting.
"""

# No `from __future__ import annotations`: KFP reads the component signatures at definition time.
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.steps import STEPS
from mloop.errors import DeployError

__all__ = ["STEPS", "build_pipeline", "compile_pipeline"]


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


def build_pipeline(settings: Settings, options: DeployOptions | None = None) -> Any:
    """The ``@dsl.pipeline`` function of the project (compile it with :func:`compile_pipeline`)."""
    _, dsl = _kfp()
    image = (options or DeployOptions()).image
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
        loaded = load().set_display_name("load")
        validated = validate(rows=loaded.outputs["rows"]).set_display_name("validate")
        trained = train(valid=validated.outputs["valid"]).set_display_name("train")
        evaluated = evaluate(result=trained.outputs["result"]).set_display_name("evaluate")
        register(result=trained.outputs["result"], metrics=evaluated.outputs["metrics"]).set_display_name(
            "register"
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
