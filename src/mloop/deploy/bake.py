"""Baking a registered model version into an image.

At generation time :func:`export_model` downloads the version behind the alias (a self-contained
model directory: model, contract, profile, evaluation) into the build context. During
``docker build``, ``python -m mloop.deploy.bake DIR`` registers that directory in a fresh MLflow
store inside the image (``MLOOP_HOME``) and points the serving alias at it, so ``mloop serve``
resolves ``models:/<name>@<alias>`` with no tracking server.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mloop.config import Settings, load_settings
from mloop.deploy.values import ModelRef
from mloop.errors import DeployError, MloopError

__all__ = ["BAKED_INFO", "export_model", "register_baked_model", "resolve_model"]

BAKED_INFO = "mloop-baked.json"


def resolve_model(settings: Settings, *, required: bool) -> ModelRef:
    """The version behind ``serving.alias``.

    Without one: a ref with no version, or a :class:`DeployError` if ``required``.
    """
    from mloop.tracking.registry import Registry

    alias = settings.serving.alias
    info = Registry(settings).by_alias(alias) if _has_store(settings) else None
    if info is None:
        if required:
            raise DeployError(
                f"Model {settings.model.name!r} has no version with alias {alias!r} "
                f"in {settings.tracking_uri}, "
                "so there is nothing to bake into the image. Train one with `mloop train`, or use "
                "--model-source mlflow to pull the model when the container starts."
            )
        return ModelRef(settings.model.name, alias)
    return ModelRef(info.name, alias, info.version)


def _has_store(settings: Settings) -> bool:
    # Do not create an empty embedded MLflow database just to find out that nothing is registered.
    return settings.tracking.uri is not None or (settings.home_dir / "mlflow.db").is_file()


def export_model(settings: Settings, dst: Path) -> ModelRef:
    """Download the version behind ``serving.alias`` into ``dst`` (replaced if it exists)."""
    from mloop.tracking.registry import Registry

    ref = resolve_model(settings, required=True)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    _, local = Registry(settings).download(ref.version or ref.alias, dst)
    if local != dst:  # MLflow may nest the files one level down; the image wants them at the top
        for item in local.iterdir():
            shutil.move(str(item), dst / item.name)
        local.rmdir()
    (dst / BAKED_INFO).write_text(json.dumps({"name": ref.name, "version": ref.version, "alias": ref.alias}))
    return ref


def register_baked_model(model_dir: Path, settings: Settings) -> ModelRef:
    """Register ``model_dir`` (from :func:`export_model`) in the settings' MLflow store under its alias."""
    from mlflow.exceptions import MlflowException

    from mloop.tracking.registry import Registry

    info_file = model_dir / BAKED_INFO
    if not info_file.is_file():
        raise DeployError(
            f"{model_dir} has no {BAKED_INFO}; export it with `mloop deploy docker --model-source baked`."
        )
    info = json.loads(info_file.read_text())
    registry = Registry(settings, name=info["name"])
    try:
        if not registry.exists():
            registry.client.create_registered_model(info["name"])
        mv = registry.client.create_model_version(
            info["name"],
            source=str(model_dir.resolve()),
            tags={"mloop.baked_from_version": str(info["version"])},
        )
    except MlflowException as exc:
        raise DeployError(
            f"Cannot register the baked model in {settings.tracking_uri}: {exc.message}"
        ) from exc
    registry.set_alias(info["alias"], int(mv.version), reason=f"baked from version {info['version']}")
    return ModelRef(info["name"], info["alias"], int(mv.version))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mloop.deploy.bake MODEL_DIR", file=sys.stderr)
        return 2
    try:
        ref = register_baked_model(Path(args[0]), load_settings())
    except MloopError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"baked {ref.name}@{ref.alias} (version {ref.version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
