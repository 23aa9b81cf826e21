"""Commands that write deployment files: ``deploy <target>``, ``pipeline compile``, ``pipeline step``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mloop.cli.project import ConfigOpt, settings_from_cli

pipeline_app = typer.Typer(
    help="The training pipeline for orchestrators: compile it, or run one step.", no_args_is_help=True
)

IMAGE_TARGETS = ("docker", "lambda", "cloudrun")
"""Targets whose image installs mloop's extras (cloudrun runs the image of docker): they say which."""

OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output directory (default depends on the target).")
]


def deploy_cmd(
    target: Annotated[
        str, typer.Argument(help="docker | k8s | helm | grafana | prometheus | cloudrun | lambda")
    ],
    out: OutOpt = None,
    image: Annotated[str | None, typer.Option(help="Image reference, e.g. ghcr.io/acme/fraud:1.2.")] = None,
    model_source: Annotated[
        str | None,
        typer.Option("--model-source", help="mlflow (pull at start) | baked (copy into the image)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Ingress host name.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Minimum serving replicas.")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", help="Autoscaler maximum.")] = None,
    target_rps: Annotated[
        float | None,
        typer.Option("--target-rps", help="Also autoscale on requests/s per pod (prometheus-adapter)."),
    ] = None,
    ingress: Annotated[
        bool, typer.Option("--ingress/--no-ingress", help="Generate the Ingress (k8s, helm).")
    ] = True,
    public: Annotated[
        bool,
        typer.Option(
            "--public",
            help="Expose the Ingress even to pods running without keys (anyone may predict and send "
            "labels). Without it, pods behind the Ingress start only with the predict, feedback and "
            "read keys in the Secret. lambda: the function runs without the role keys.",
        ),
    ] = False,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace of every object (k8s; Helm uses --namespace of helm).")
    ] = None,
    image_pull_secret: Annotated[
        list[str] | None,
        typer.Option("--image-pull-secret", help="Secret to pull a private image with (repeatable)."),
    ] = None,
    training_jobs: Annotated[
        bool,
        typer.Option(
            "--training-jobs",
            help="The loop retrains in Kubernetes Jobs it creates (k8s, helm), not in its own pod.",
        ),
    ] = False,
    mloop_package: Annotated[
        str | None,
        typer.Option(
            "--mloop-package",
            help="pip requirement that installs mloop in the image (docker); by default this mloop's "
            "release, or a wheel of this checkout when it is a development one.",
        ),
    ] = None,
    extra: Annotated[
        list[str] | None,
        typer.Option(
            "--extra",
            help="An mloop extra the image installs besides those mloop.yaml calls for (docker, lambda; "
            "repeatable), e.g. --extra redis.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write deployment files generated from mloop.yaml and the registered model."""
    from pydantic import ValidationError

    from mloop.cli.main import console
    from mloop.deploy import DeployOptions, generate
    from mloop.errors import DeployError

    chosen = {
        "image": image,
        "model_source": model_source,
        "host": host,
        "replicas": replicas,
        "max_replicas": max_replicas,
        "target_rps": target_rps,
        "namespace": namespace,
        "image_pull_secrets": image_pull_secret,
        "mloop_package": mloop_package,
        "extras": extra,
    }
    try:
        options = DeployOptions.model_validate(
            {
                **{k: v for k, v in chosen.items() if v is not None},
                "ingress": ingress,
                "public": public,
                "training_jobs": training_jobs,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise DeployError(f"Invalid deploy option: {problems}.") from exc
    if extra and target not in IMAGE_TARGETS:
        raise DeployError(
            f"--extra chooses what an image installs, and `mloop deploy {target}` builds no image: "
            f"pass it to `mloop deploy docker` (or {', '.join(t for t in IMAGE_TARGETS if t != 'docker')}) "
            "and point this target at that image."
        )
    settings = settings_from_cli(config)
    said: list[str] = []
    if target in IMAGE_TARGETS:  # before generating: an unknown --extra fails first
        from mloop.deploy.extras import image_extras

        said = image_extras(settings, options, target="lambda" if target == "lambda" else "docker").describe()
    written = generate(target, settings, out, options)
    for line in said:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"[green]Wrote[/] {len(written)} {target} file(s):")
    for path in written:
        console.print(f"  {path}")


@pipeline_app.command("compile")
def compile_cmd(
    target: Annotated[
        str,
        typer.Option(
            "--target", help="kfp (Kubeflow Pipelines v2 YAML) | airflow (DAG file) | prefect (flow file)."
        ),
    ] = "kfp",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File to write (default pipeline.yaml, airflow_dag.py or prefect_flow.py)."
        ),
    ] = None,
    image: Annotated[str | None, typer.Option(help="Image the steps run in (kfp, airflow).")] = None,
    runner: Annotated[
        str,
        typer.Option(help="airflow: kubernetes (a pod of the image per step) | local (mloop on the worker)."),
    ] = "kubernetes",
    namespace: Annotated[
        str | None, typer.Option(help="airflow --runner kubernetes: namespace of the pods.")
    ] = None,
    workspace_claim: Annotated[
        str | None,
        typer.Option(
            help="airflow --runner kubernetes: PersistentVolumeClaim the steps pass files on "
            "(default <name>-pipeline)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Compile the training pipeline (load → validate → train → evaluate → register)."""
    from pydantic import ValidationError

    from mloop.cli.main import console
    from mloop.deploy.options import DeployOptions
    from mloop.errors import DeployError, did_you_mean

    targets = ["kfp", "airflow", "prefect"]
    if target not in targets:
        raise DeployError(
            f"Unknown pipeline target {target!r}.{did_you_mean(target, targets)} Known: {', '.join(targets)}."
        )
    given = {"image": image, "namespace": namespace}
    try:
        options = DeployOptions.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise DeployError(f"Invalid pipeline option: {problems}.") from exc
    settings = settings_from_cli(config)
    config_file = None if config is None else (config / "mloop.yaml" if config.is_dir() else config)
    if target == "kfp":
        from mloop.deploy.kubeflow import compile_pipeline

        path = compile_pipeline(settings, out or Path("pipeline.yaml"), options)
        console.print(f"[green]Compiled[/] the Kubeflow pipeline to {path}")
    elif target == "airflow":
        from mloop.deploy.airflow import write_dag

        path = write_dag(
            settings,
            out or Path("airflow_dag.py"),
            options,
            runner=runner,
            config_path=config_file,
            workspace_claim=workspace_claim,
        )
        console.print(f"[green]Wrote[/] the Airflow DAG ({runner} runner) to {path}")
    else:
        from mloop.deploy.prefect import write_flow

        path = write_flow(settings, out or Path("prefect_flow.py"), config_path=config_file)
        console.print(f"[green]Wrote[/] the Prefect flow to {path}")


@pipeline_app.command("step")
def step_cmd(
    name: Annotated[str, typer.Argument(help="load | validate | train | evaluate | register")],
    data: Annotated[
        Path | None, typer.Option(help="Parquet rows from the previous step (default: the source).")
    ] = None,
    result: Annotated[Path | None, typer.Option(help="JSON result of the train step.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where this step writes its output.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run one step of the training pipeline (used by Kubeflow tasks and CI)."""
    from mloop.cli.main import console
    from mloop.deploy import steps
    from mloop.errors import DeployError, did_you_mean

    settings = settings_from_cli(config)
    if name == "load":
        if out is None:
            raise DeployError("`mloop pipeline step load` needs --out FILE.parquet for the rows it reads.")
        console.print(f"loaded {steps.load_step(settings, out)} rows into {out}")
        return
    if name in {"evaluate", "register"} and result is None:
        raise DeployError(f"`mloop pipeline step {name}` needs --result, the JSON written by the train step.")
    if name == "validate":
        report = steps.validate_step(settings, data, out)
    elif name == "train":
        report = steps.train_step(settings, data, out)
    elif name == "evaluate" and result is not None:
        report = steps.evaluate_step(settings, result, out)
    elif name == "register" and result is not None:
        report = steps.register_step(settings, result, out)
    else:
        raise DeployError(
            f"Unknown step {name!r}.{did_you_mean(name, steps.STEPS)} Steps: {', '.join(steps.STEPS)}."
        )
    console.print_json(json.dumps(report, default=str))


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_cmd)
    app.add_typer(pipeline_app, name="pipeline")
