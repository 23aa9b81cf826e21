"""Which of mloop's optional extras a project's image installs, and why.

The image of ``mloop deploy docker`` (and of ``mloop deploy lambda``; ``mloop deploy cloudrun`` runs the
former) installs mloop with the extras the project's configuration needs, decided by one function,
:func:`image_extras`:

=================  ===========================================================================
extra              chosen when
=================  ===========================================================================
``postgres``       always: a deployment's store and prediction log are Postgres, and their URLs
                   come from the environment at run time, not from ``mloop.yaml``
``torch``          ``model.estimator: torch_mlp``, or a ``module:function`` estimator whose module
                   (or a project module it imports) imports ``torch``, ``skorch`` or
                   ``mloop.training.torch_net``; torch itself comes from PyTorch's CPU index
``xgboost``        ``model.estimator: xgboost``, or an estimator module importing ``xgboost``
``onnx``           ``serving.onnx: auto`` or ``require``
``redis``          a ``redis://`` stream (``stream.source``, ``sink`` or ``dead_letter``)
``kafka``          a ``kafka://`` stream
``kubernetes``     ``--training-jobs`` (the loop creates training Jobs through the Kubernetes API)
``lambda``         the Lambda image (Mangum)
``feast``          ``serving.features``: Feast gets a virtualenv of its own in the image (it pins
                   ``pandas<3``, below mloop's lock) at ``/app/.venv-feast``, behind mloop's
                   bridge, with the feature repo copied in (docs/features.md)
=================  ===========================================================================

``--extra NAME`` (:attr:`~mloop.deploy.options.DeployOptions.extras`, repeatable) adds any other; an
unknown name is refused with the list of known ones. An S3 prediction log needs no extra: pyarrow,
a core dependency, has its own S3 filesystem.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mloop.config import Settings
from mloop.deploy.options import DeployOptions
from mloop.deploy.wheel import IMAGE_EXTRAS
from mloop.errors import DeployError, did_you_mean

__all__ = [
    "APP_DIR",
    "BASE_EXTRAS",
    "FEAST_REQUIREMENT",
    "FEAST_VENV",
    "IMAGE_EXTRA_NAMES",
    "TORCH_INDEX_URL",
    "TORCH_REQUIREMENT",
    "ExtraChoice",
    "ImageExtras",
    "feature_repo_in_image",
    "image_extras",
    "image_extras_context",
]

BASE_EXTRAS = IMAGE_EXTRAS
"""Extras every image installs: Postgres drivers for the store and the prediction log."""
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
"""PyTorch's index of CPU builds: PyPI's default Linux wheel of torch carries CUDA (several GB)."""
TORCH_REQUIREMENT = "torch>=2.13,<2.15"
"""The torch the image installs from :data:`TORCH_INDEX_URL`: the range of the ``torch`` extra in
pyproject.toml (a test keeps them equal); the lock pins the version within it."""
FEAST_REQUIREMENT = "feast[redis]==0.67.0"
"""Feast in the image's own Feast virtualenv: the Makefile's ``.venv-feast`` pin (a test keeps them equal)."""
APP_DIR = "/app"
"""The image's project directory (its working directory, where the project's code is copied)."""
FEAST_VENV = f"{APP_DIR}/.venv-feast"
"""Feast's virtualenv in the image: where ``serving.feast_python`` looks by default."""

IMAGE_EXTRA_NAMES: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg",),
    "xgboost": ("xgboost",),
    "redis": ("redis",),
    "kafka": ("confluent_kafka",),
    "spark": ("pyspark",),
    "kubernetes": ("kubernetes",),
    "alerts": ("aiosmtpd",),
    "feast": (),
    "onnx": ("onnx", "onnxruntime", "skl2onnx", "onnxmltools"),
    "torch": ("torch", "skorch"),
    "lambda": ("mangum",),
}
"""Extras an image can install, each with the modules the image's build imports to check it (Feast
is checked by its bridge at start). pyproject.toml's other extras are not for an image: ``kfp``
compiles pipelines on your machine and pins protobuf below the lock, ``dev`` is the test toolchain."""
_NOT_FOR_IMAGES = {
    "kfp": "the Kubeflow Pipelines SDK compiles pipelines where you run `mloop pipeline compile`, and "
    "pins protobuf<7, below the lock's",
    "dev": "it is mloop's own test toolchain",
}
# Imports in the estimator's code that mean the model needs an extra to load and to retrain.
_MODEL_IMPORTS = {
    "torch": "torch",
    "skorch": "torch",
    "mloop.training.torch_net": "torch",
    "mloop.training.torch_modules": "torch",
    "xgboost": "xgboost",
}
_BUILTIN_ESTIMATORS = {"torch_mlp": "torch", "xgboost": "xgboost"}
_STREAM_SCHEMES = {"redis": "redis", "rediss": "redis", "kafka": "kafka"}
_SAFE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


@dataclass(frozen=True, slots=True)
class ExtraChoice:
    """One extra of the image and why it is there."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImageExtras:
    """What an image installs beyond mloop's core, each with its reason."""

    chosen: tuple[ExtraChoice, ...]
    """mloop's extras (``mloop[a,b]``), in install order: :data:`BASE_EXTRAS` first."""
    feast: ExtraChoice | None = None
    """Feast's own virtualenv (:data:`FEAST_VENV`), when the project serves Feast features."""
    feature_repo: str | None = None
    """The Feast feature repo to copy into the image, relative to the project (``/``-separated)."""
    notes: tuple[str, ...] = ()
    """What needs nothing, or what the image cannot do by itself."""

    @property
    def extras(self) -> tuple[str, ...]:
        return tuple(choice.name for choice in self.chosen)

    @property
    def torch(self) -> bool:
        """torch is installed, from :data:`TORCH_INDEX_URL`, before mloop."""
        return "torch" in self.extras

    @property
    def index_urls(self) -> dict[str, str]:
        """Package indexes besides the default one, each with its reason."""
        if not self.torch:
            return {}
        return {
            TORCH_INDEX_URL: f"{TORCH_REQUIREMENT}, the CPU build (PyPI's Linux wheel carries CUDA, "
            "several GB), installed before mloop"
        }

    def import_check(self, base: tuple[str, ...] = BASE_EXTRAS) -> str:
        """Modules of the extras beyond ``base``, as ``, a, b`` for the image's import check."""
        modules = [m for name in self.extras if name not in base for m in IMAGE_EXTRA_NAMES[name]]
        return "".join(f", {m}" for m in modules)

    def describe(self) -> list[str]:
        """Lines saying what the image installs and why (``mloop deploy`` prints them)."""
        width = max([len(c.name) for c in self.chosen] + [6])
        lines = [f"mloop[{','.join(self.extras)}] in the image:"]
        lines += [f"  {c.name:<{width}}  {c.reason}" for c in self.chosen]
        lines += [f"  {'index':<{width}}  {url}: {why}" for url, why in self.index_urls.items()]
        if self.feast is not None:
            lines.append(f"  {'feast':<{width}}  {self.feast.reason}")
        lines += [f"  {'note':<{width}}  {note}" for note in self.notes]
        return lines


def _scheme(url: str | None) -> str:
    return urlsplit(url).scheme.split("+")[0].lower() if url and "://" in url else ""


def _module_file(root: Path, module: str) -> Path | None:
    # The rule of mloop.tracking.project_code's module lookup, kept here: mloop.deploy is imported in
    # the KFP virtualenv, which has no numpy, and importing mloop.tracking pulls it in.
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Dotted names ``path`` imports (``from a import b`` gives ``a`` and ``a.b``); relative ones are
    made absolute from ``module``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _model_extras(root: Path, module: str) -> dict[str, str]:
    """``{extra: "<file> imports <name>"}`` for the model libraries that ``module`` and the project
    modules it imports (transitively) import. Static: nothing of the project runs."""
    found: dict[str, str] = {}
    queue, seen = [module], set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(root, name)
        if path is None:
            continue
        for imported in sorted(_imports(path, name)):
            for prefix, extra in _MODEL_IMPORTS.items():
                if (imported == prefix or imported.startswith(prefix + ".")) and extra not in found:
                    found[extra] = f"{path.relative_to(root).as_posix()} imports {imported}"
            if _module_file(root, imported) is not None:
                queue.append(imported)
    return found


def _estimator_extras(settings: Settings) -> dict[str, str]:
    estimator = settings.model.estimator
    if estimator in _BUILTIN_ESTIMATORS:
        return {_BUILTIN_ESTIMATORS[estimator]: f"model.estimator is {estimator!r}"}
    module = estimator.partition(":")[0] if ":" in estimator else ""
    if not module:
        return {}
    found: dict[str, str] = {}
    for prefix, extra in _MODEL_IMPORTS.items():  # an estimator of mloop's own torch module
        if module == prefix or module.startswith(prefix + "."):
            found[extra] = f"model.estimator {estimator!r} is in {module}"
    for extra, where in _model_extras(settings.root, module).items():
        found.setdefault(extra, f"model.estimator {estimator!r}: {where}")
    return found


def feature_repo_in_image(settings: Settings) -> tuple[str | None, str | None]:
    """The feature repo to copy (relative, ``/``-separated), or a note on why it is not copied."""
    configured = settings.serving.feature_repo
    path = settings.resolve_path(configured)
    try:
        relative = path.resolve().relative_to(settings.root.resolve()).as_posix()
    except ValueError:
        relative = None
    if relative is None or not _SAFE_PATH.fullmatch(relative) or ".." in relative.split("/"):
        return None, (
            f"serving.feature_repo {configured!r} is not a plain folder of the project: it is not copied "
            f"into the image; mount it there and set serving.feature_repo to its path in the container"
        )
    if not path.is_dir():
        return None, (
            f"serving.feature_repo {configured!r} does not exist yet: create it before `mloop deploy "
            "docker`, so the image carries it"
        )
    return relative, None


def _check_manual(names: list[str]) -> None:
    known = sorted(IMAGE_EXTRA_NAMES)
    for name in names:
        if name in _NOT_FOR_IMAGES:
            raise DeployError(
                f"--extra {name!r} is not for an image: {_NOT_FOR_IMAGES[name]}. "
                f"Extras an image can install: {', '.join(known)}."
            )
        if name not in IMAGE_EXTRA_NAMES:
            raise DeployError(
                f"Unknown extra {name!r} for --extra.{did_you_mean(name, known)} "
                f"Known extras: {', '.join(known)}."
            )


def image_extras(settings: Settings, options: DeployOptions, *, target: str = "docker") -> ImageExtras:
    """The extras the image of ``settings`` installs for ``target`` (``docker`` or ``lambda``), each
    with its reason: from the configuration (model, serving, streams), the deploy options
    (``--training-jobs``, ``--extra``) and the target."""
    _check_manual(options.extras)
    reasons: dict[str, str] = {}
    for url_key, url in (
        ("store.url", settings.store.url),
        ("prediction_log.url", settings.prediction_log.url),
    ):
        if _scheme(url) == "postgresql":
            reasons.setdefault("postgres", f"{url_key} is a Postgres URL")
    reasons.setdefault(
        "postgres",
        "always: a deployment's store and prediction log are Postgres (URLs come from the environment)",
    )
    wanted: dict[str, str] = dict(_estimator_extras(settings))
    if settings.serving.onnx != "off":
        wanted["onnx"] = f"serving.onnx is {settings.serving.onnx!r}: ONNX Runtime serves the ONNX copy"
    for key in ("source", "sink", "dead_letter"):
        url = getattr(settings.stream, key)
        extra = _STREAM_SCHEMES.get(_scheme(url))
        if extra:
            wanted.setdefault(extra, f"stream.{key} is a {_scheme(url)}:// stream (mloop stream)")
    if options.training_jobs:
        wanted["kubernetes"] = "--training-jobs: the loop creates training Jobs through the Kubernetes API"
    if target == "lambda":
        wanted["lambda"] = "the Lambda handler runs the app of `mloop serve` behind Mangum"
    feast = None
    if settings.serving.features:
        feast = f"serving.features is {settings.serving.features!r}"
    for name in options.extras:
        if name == "feast":
            feast = feast or "--extra feast"
        elif name in reasons or name in wanted:
            table = reasons if name in reasons else wanted
            table[name] += "; also --extra"
        else:
            wanted[name] = f"--extra {name}"
    reasons.update(sorted(wanted.items()))
    notes: list[str] = []
    if _scheme(settings.prediction_log.url) == "s3":
        notes.append("prediction_log.url is on S3: no extra (pyarrow's own S3 filesystem)")
    if settings.batch.engine == "spark" and "spark" not in reasons:
        notes.append(
            "batch.engine is 'spark': not installed (Spark needs Java); run Spark jobs outside the image, "
            "or --extra spark with a BASE_IMAGE that has Java"
        )
    repo = None
    feast_choice = None
    if feast is not None:
        repo, note = feature_repo_in_image(settings)
        notes += [note] if note else []
        copied = f"; the feature repo {repo}/ is copied in" if repo else ""
        feast_choice = ExtraChoice(
            "feast",
            f"{feast}: Feast ({FEAST_REQUIREMENT}) in a virtualenv of its own, {FEAST_VENV} (it pins "
            f"pandas<3, below the lock), behind mloop's bridge{copied}",
        )
    chosen = tuple(ExtraChoice(name, reason) for name, reason in reasons.items())
    if options.mloop_package and not _names_mloop(options.mloop_package):
        notes.append(
            f"--mloop-package {options.mloop_package!r} is not a requirement on mloop that the extras "
            f"can be added to: make sure it installs mloop[{','.join(reasons)}]"
        )
    return ImageExtras(chosen, feast_choice, repo, tuple(notes))


def image_extras_context(
    chosen: ImageExtras, *, code: list[str], base: tuple[str, ...] = BASE_EXTRAS
) -> dict[str, Any]:
    """What the Dockerfile templates need of ``chosen``: torch's index and range, Feast's virtualenv,
    the feature repo to copy (unless it is among the project's ``code`` already), the import check's
    modules of the extras beyond ``base``."""
    repo = chosen.feature_repo
    return {
        "torch_index": TORCH_INDEX_URL if chosen.torch else None,
        "torch_requirement": TORCH_REQUIREMENT if chosen.torch else None,
        "feast_requirement": FEAST_REQUIREMENT if chosen.feast else None,
        "feast_venv": FEAST_VENV,
        "feature_repo": None if repo is None or f"{repo}/" in code else repo,
        "extra_imports": chosen.import_check(base),
    }


def _names_mloop(requirement: str) -> bool:
    try:
        return canonicalize_name(Requirement(requirement).name) == "mloop"
    except InvalidRequirement:
        return False
