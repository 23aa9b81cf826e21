"""``mloop deploy lambda``: a container image for AWS Lambda and the AWS SAM template that deploys it.

Files, written to the project directory (the image's build context, as for ``mloop deploy docker``):

* ``Dockerfile.lambda`` (and ``Dockerfile.lambda.dockerignore``): the slim image of ``mloop deploy
  docker`` with ``mloop[lambda]`` (Mangum), the other extras the project needs
  (:mod:`mloop.deploy.extras`) and the Lambda runtime interface client (``awslambdaric``, pinned),
  whose entry point calls :func:`mloop.server.lambda_handler.handler`;
* ``mloop.lambda.yaml``: the image's ``mloop.yaml`` — no URLs or tokens, state under ``/tmp`` (the
  only writable path), the prediction log synchronous and flushed before each event returns, the
  background monitor off (a frozen process cannot run it: run ``mloop run --no-serve`` or
  ``mloop monitor`` elsewhere);
* ``template.yaml``: an ``AWS::Serverless::Function`` (``PackageType: Image``, memory, timeout,
  environment) behind an HTTP API (``HttpApi`` event, payload format 2.0). The store, MLflow and
  prediction log URLs, and the keys of each role unless ``--public``, are dynamic references to AWS
  Secrets Manager (``{{resolve:secretsmanager:<name>/<key>}}``), resolved at deploy time.

Generation refuses a project whose state is local (:func:`~mloop.deploy.serverless.require_shared_state`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mloop.config import Settings
from mloop.deploy.docker import pip_version, project_code, server_only_distributions
from mloop.deploy.extras import image_extras, image_extras_context
from mloop.deploy.lock import LOCK_FILE, lock_text
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.render import render_template
from mloop.deploy.serverless import SERVERLESS_ENV, SERVERLESS_SECRETS, require_shared_state
from mloop.deploy.values import GUARDING_KEYS, KEY_SECRETS, ModelRef, cluster_config
from mloop.deploy.wheel import IMAGE_EXTRAS, WHEEL_DIR, image_requirement
from mloop.errors import DeployError

__all__ = [
    "AWSLAMBDARIC_VERSION",
    "LAMBDA_CONFIG",
    "LAMBDA_DOCKERFILE",
    "LAMBDA_FILES",
    "SAM_TEMPLATE",
    "render_lambda",
    "sam_template",
]

LAMBDA_DOCKERFILE = "Dockerfile.lambda"
LAMBDA_CONFIG = "mloop.lambda.yaml"
SAM_TEMPLATE = "template.yaml"
LAMBDA_FILES = (
    LAMBDA_DOCKERFILE,
    f"{LAMBDA_DOCKERFILE}.dockerignore",
    LAMBDA_CONFIG,
    LOCK_FILE,
    SAM_TEMPLATE,
)
AWSLAMBDARIC_VERSION = "4.2.2"
"""The Lambda runtime interface client the image installs (a build argument)."""
LAMBDA_EXTRAS = (*IMAGE_EXTRAS, "lambda")
LAMBDA_HOME = "/tmp/mloop"
"""Where state goes in the function: Lambda's only writable directory is /tmp."""
TIMEOUT_S = 30
"""Function timeout: API Gateway's HTTP API gives up on an integration after 30 s."""
_MIB = {
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "K": 1000 / 1024**2,
    "M": 1000**2 / 1024**2,
    "G": 1000**3 / 1024**2,
}


def memory_mb(quantity: str) -> int:
    """A Kubernetes memory quantity (``2Gi``, ``512Mi``) as Lambda's ``MemorySize`` (MB, 128-10240)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", quantity.strip())
    if match is None:
        raise DeployError(f"Memory limit {quantity!r} is not a quantity such as '2Gi' or '512Mi'.")
    value = float(match.group(1)) * _MIB.get(match.group(2) or "", 1 / 1024**2)
    return max(128, min(10240, round(value)))


def lambda_config(settings: Settings) -> dict[str, Any]:
    """The image's ``mloop.yaml``."""
    config = cluster_config(settings)
    config["home"] = LAMBDA_HOME
    config["cluster"] = True
    config.setdefault("prediction_log", {})["durability"] = "sync"
    config.setdefault("monitoring", {})["interval_s"] = 0
    return config


def _secret(name: str, key: str) -> str:
    return f"{{{{resolve:secretsmanager:{name}/{key}}}}}"


def sam_template(settings: Settings, options: DeployOptions, model: ModelRef) -> dict[str, Any]:
    """The AWS SAM template (what ``template.yaml`` holds)."""
    require_shared_state(settings, "lambda")
    name = dns_name(settings.project)
    variables: dict[str, str] = dict(SERVERLESS_ENV)
    variables.update({var: _secret(name, key) for key, var in SERVERLESS_SECRETS.items()})
    if not options.public:  # the HTTP API has no authorizer: the keys of each role guard it
        variables.update({KEY_SECRETS[key]: _secret(name, key) for key in GUARDING_KEYS})
    function = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": f"mloop model server: models:/{model.name}@{model.alias}",
            "PackageType": "Image",
            "ImageUri": {"Ref": "ImageUri"},
            "Architectures": ["x86_64"],
            "MemorySize": memory_mb(options.memory_limit),
            "Timeout": TIMEOUT_S,
            "Environment": {"Variables": variables},
            "Events": {
                "Api": {
                    "Type": "HttpApi",
                    "Properties": {"Path": "/{proxy+}", "Method": "ANY", "PayloadFormatVersion": "2.0"},
                }
            },
        },
        "Metadata": {"DockerContext": ".", "Dockerfile": LAMBDA_DOCKERFILE, "DockerTag": "latest"},
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"mloop model server of project {settings.project} on AWS Lambda",
        "Parameters": {
            "ImageUri": {
                "Type": "String",
                "Default": options.image,
                "Description": "The image built from Dockerfile.lambda, in Amazon ECR",
            }
        },
        "Resources": {"ModelFunction": function},
        "Outputs": {
            "ApiUrl": {
                "Description": "Base URL of the HTTP API (POST <url>predict)",
                "Value": {
                    "Fn::Sub": "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"
                },
            }
        },
    }


def render_lambda(
    settings: Settings, options: DeployOptions, model: ModelRef, *, wheel: str | None = None
) -> dict[str, str]:
    """``{file name: text}`` of the build context files and the SAM template (a wheel of a development
    checkout, named ``wheel``, is written separately)."""
    if options.model_source != "mlflow":
        raise DeployError(
            "`mloop deploy lambda` pulls the model from MLflow at a cold start; --model-source "
            f"{options.model_source!r} is not supported for Lambda. Drop --model-source."
        )
    template = sam_template(settings, options, model)
    chosen = image_extras(settings, options, target="lambda")
    package = image_requirement(chosen.extras, wheel=wheel, override=options.mloop_package)
    code = project_code(settings.root)
    wheel = wheel if wheel and not options.mloop_package else None
    context = {
        "project": settings.project,
        "image": options.image,
        "model_name": model.name,
        "alias": model.alias,
        "python_version": options.python_version,
        "mloop_package": package,
        "wheel": wheel,
        "wheel_dir": WHEEL_DIR,
        "pip_version": pip_version(),
        "awslambdaric_version": AWSLAMBDARIC_VERSION,
        "server_only": server_only_distributions(chosen.extras),
        "code": code,
        "config_file": LAMBDA_CONFIG,
        "model_source": "mlflow",
        "model_dir": "model",
        **image_extras_context(chosen, code=code, base=LAMBDA_EXTRAS),
    }
    header = (
        f"# AWS SAM template of project {settings.project!r}, generated by `mloop deploy lambda`.\n"
        f"# Secrets (AWS Secrets Manager, plain-text values): {', '.join(_secret_names(template))}\n"
        "# Deploy:  sam build && sam deploy --guided   (builds Dockerfile.lambda, pushes it to ECR)\n"
    )
    return {
        LAMBDA_DOCKERFILE: render_template("lambda/Dockerfile.j2", **context),
        f"{LAMBDA_DOCKERFILE}.dockerignore": render_template("docker/dockerignore.j2", **context),
        LAMBDA_CONFIG: "# mloop.yaml for the Lambda image, generated by `mloop deploy lambda`.\n"
        "# URLs and tokens come from the function's environment (template.yaml).\n"
        + yaml.safe_dump(lambda_config(settings), sort_keys=False),
        LOCK_FILE: lock_text(settings.root, chosen.extras),
        SAM_TEMPLATE: header + yaml.safe_dump(template, sort_keys=False, width=120),
    }


def _secret_names(template: dict[str, Any]) -> list[str]:
    variables = template["Resources"]["ModelFunction"]["Properties"]["Environment"]["Variables"]
    found = (re.fullmatch(r"\{\{resolve:secretsmanager:(.+)\}\}", v) for v in variables.values())
    return [m.group(1) for m in found if m]
