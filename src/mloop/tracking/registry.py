"""The model registry, on MLflow: versions, aliases, lineage, and loading a version to serve.

mloop keeps no second registry. A version is an MLflow model version; ``champion`` and
``challenger`` are MLflow aliases; lineage is kept in version tags (``mloop.*``). Every alias move is
also recorded in the platform store's event log with who moved it and why.

Artifacts carried by every version mloop trains (inside the model directory, so
``models:/name@alias`` is self-contained): ``contract.json`` (the data contract), ``profile.json``
(the reference profile) and ``evaluation.json`` (holdout metrics). A version registered any other
way loads through its ``python_function`` flavor under :mod:`mloop.tracking.pyfunc`'s policy, with
its MLflow signature as the contract.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.data.schema import DataContract
from mloop.errors import DataError, MloopError, ModelNotFound, ModelRefused, TrackingError, did_you_mean
from mloop.store.events import EventSink
from mloop.tracking import pyfunc
from mloop.tracking.client import configure_mlflow
from mloop.tracking.model_io import load_sklearn_model
from mloop.tracking.project_code import project_imports

__all__ = ["EventSink", "LoadedModel", "Registry", "VersionInfo", "parse_version_ref"]

CONTRACT_FILE = "contract.json"
PROFILE_FILE = "profile.json"
EVALUATION_FILE = "evaluation.json"
TAG_PREFIX = "mloop."

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, as mloop shows it."""

    name: str
    version: int
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float]
    created_at: int
    status: str
    source: str

    @property
    def ref(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def lineage(self) -> dict[str, Any]:
        """Data source and hash → run → version → parent champion."""
        return {
            "data_source": self.tags.get(f"{TAG_PREFIX}data_source"),
            "data_hash": self.tags.get(f"{TAG_PREFIX}data_hash"),
            "contract_hash": self.tags.get(f"{TAG_PREFIX}contract_hash"),
            "git_commit": self.tags.get(f"{TAG_PREFIX}git_commit"),
            "run_id": self.run_id,
            "version": self.version,
            "parent_champion": self.tags.get(f"{TAG_PREFIX}parent_champion"),
        }


@dataclass
class LoadedModel:
    """A version ready to predict: the fitted pipeline and the artifacts that travel with it."""

    info: VersionInfo
    model: Any
    contract: dict[str, Any]
    profile: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def parse_version_ref(ref: str | int) -> tuple[str, str]:
    """``"3"``/``"v3"``/``3`` → ("version", "3"); ``"@champion"``/``"champion"`` → ("alias", "champion")."""
    text = str(ref).strip()
    if text.startswith("@"):
        return "alias", text[1:]
    if text.lower().startswith("v") and text[1:].isdigit():
        return "version", text[1:]
    if text.isdigit():
        return "version", text
    return "alias", text


class Registry:
    """Versions and aliases of the project's registered model (``model.name``)."""

    def __init__(self, settings: Settings, events: EventSink | None = None, name: str | None = None) -> None:
        from mlflow import MlflowClient

        configure_mlflow(settings)
        self.settings = settings
        self.name = name or settings.model.name
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        self._events = events
        self._refused: set[int] = set()
        self._code_trusted: set[int] = set()

    # ---- reading -------------------------------------------------------------------------------
    def _info(self, mv: Any, aliases: list[str] | None = None) -> VersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except Exception:  # the run may have been deleted; the version stays readable
                metrics = {}
        return VersionInfo(
            name=mv.name,
            version=int(mv.version),
            run_id=mv.run_id,
            aliases=tuple(sorted(set(getattr(mv, "aliases", None) or []) | set(aliases or []))),
            tags=dict(mv.tags or {}),
            metrics=metrics,
            created_at=int(mv.creation_timestamp or 0),
            status=str(mv.status),
            source=str(mv.source),
        )

    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
            return True
        except MlflowException:
            return False

    def versions(self) -> list[VersionInfo]:
        """All versions, newest first (an empty list if nothing was registered yet)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            raise TrackingError(f"Cannot list versions of {self.name!r}: {exc.message}") from exc
        # search_model_versions does not fill aliases on every store; the registered model has them.
        by_version: dict[str, list[str]] = {}
        if found:
            for alias, version in (self.client.get_registered_model(self.name).aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
        infos = [self._info(mv, by_version.get(str(mv.version), [])) for mv in found]
        return sorted(infos, key=lambda v: v.version, reverse=True)

    def by_alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(self.name, alias))
        except MlflowException:
            return None

    def get(self, ref: str | int) -> VersionInfo:
        """A version by number (``3``, ``v3``) or alias (``@champion``, ``champion``)."""
        from mlflow.exceptions import MlflowException

        kind, value = parse_version_ref(ref)
        if kind == "alias":
            info = self.by_alias(value)
            if info is None:
                known = sorted({a for v in self.versions() for a in v.aliases})
                hint = did_you_mean(value, known)
                raise ModelNotFound(
                    f"Model {self.name!r} has no version with alias {value!r}.{hint} "
                    f"Aliases in use: {', '.join(known) or 'none (train a model with `mloop train`)'}."
                )
            return info
        try:
            return self._info(self.client.get_model_version(self.name, value))
        except MlflowException as exc:
            have = ", ".join(str(v.version) for v in self.versions()) or "none"
            raise ModelNotFound(
                f"Model {self.name!r} has no version {value}. Versions: {have} (see `mloop models list`)."
            ) from exc

    # ---- writing -------------------------------------------------------------------------------
    def set_alias(self, alias: str, ref: str | int, *, reason: str, actor: str = "mloop") -> VersionInfo:
        """Point ``alias`` at a version and record the move (from which version, why, by whom)."""
        from mlflow.exceptions import MlflowException

        target = self.get(ref)
        previous = self.by_alias(alias)
        try:
            self.client.set_registered_model_alias(self.name, alias, str(target.version))
        except MlflowException as exc:
            raise TrackingError(f"MLflow refused to move alias {alias!r}: {exc.message}") from exc
        self._record(
            "alias.moved",
            f"model:{self.name}/v{target.version}",
            reason,
            actor=actor,
            data={
                "alias": alias,
                "version": target.version,
                "previous": previous.version if previous else None,
            },
        )
        return self.get(target.version)

    def delete_alias(self, alias: str, *, reason: str, actor: str = "mloop") -> None:
        from mlflow.exceptions import MlflowException

        previous = self.by_alias(alias)
        if previous is None:
            return
        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException as exc:
            raise TrackingError(f"MLflow refused to delete alias {alias!r}: {exc.message}") from exc
        self._record(
            "alias.removed",
            f"model:{self.name}/v{previous.version}",
            reason,
            actor=actor,
            data={"alias": alias, "version": previous.version},
        )

    def set_tags(self, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def _record_refusal(self, info: VersionInfo, exc: ModelRefused) -> None:
        """One ``model.refused`` event per version and process (alias polls retry the load)."""
        if info.version in self._refused:
            return
        self._refused.add(info.version)
        try:
            self._record(
                "model.refused",
                f"model:{self.name}/v{info.version}",
                exc.message,
                actor="mloop",
                data={"version": info.version, "types": list(exc.types)},
            )
        except MloopError as err:  # the refusal is the news; a store that cannot record it is logged
            _log.warning("Could not record the refusal of %s: %s", info.ref, err.message)

    def _record(self, kind: str, subject: str, reason: str, *, actor: str, data: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.record_event(kind, subject, reason, actor=actor, data=data)

    # ---- loading -------------------------------------------------------------------------------
    def download(self, ref: str | int, dst: Path | None = None) -> tuple[VersionInfo, Path]:
        """Download a version's model directory; return its info and the local path."""
        import mlflow
        from mlflow.exceptions import MlflowException

        info = self.get(ref)
        target = dst or Path(tempfile.mkdtemp(prefix=f"mloop-{self.name}-v{info.version}-"))
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=info.ref, dst_path=str(target))
        except MlflowException as exc:
            raise TrackingError(f"Cannot download {info.ref}: {exc.message}") from exc
        return info, Path(local)

    def load(self, ref: str | int = "@champion", dst: Path | None = None) -> LoadedModel:
        """Load a version's fitted pipeline with its contract, profile and evaluation.

        The contract is checked first (``contract.json``, else the MLflow signature), the model file
        then goes through the trust policy of :mod:`mloop.tracking.model_io` (skops) or
        :mod:`mloop.tracking.pyfunc` (any other ``python_function`` model, decided from ``MLmodel``
        alone); a version that breaks either raises :class:`~mloop.errors.ModelRefused` and nothing
        of it is built. ``extra`` says ``contract_source: signature`` and ``flavor``/``code_trusted``
        for versions mloop did not train.
        """
        info, path = self.download(ref, dst)
        extra: dict[str, Any] = {}
        try:
            contract = _read_contract(info.ref, path)
            meta = pyfunc.read_mlmodel(path, info.ref)
            if contract is None:  # a version mloop did not train: its MLflow signature is the contract
                contract = pyfunc.contract_from_signature(meta, info.ref).to_dict()
                extra["contract_source"] = "signature"
            if pyfunc.is_skops_sklearn(meta):
                model = load_sklearn_model(
                    path,
                    extra_trusted=self.settings.model.trusted_types,
                    ref=info.ref,
                    project_root=self.settings.root,
                )
            else:
                key = f"{info.name}/{info.version}"
                trusted_by = pyfunc.check_code_trust(
                    meta, path, ref=info.ref, key=key, trusted=self.settings.model.trust_code_of
                )
                if trusted_by is not None:
                    self._record_code_trust(info, meta)
                with project_imports(self.settings.root):  # code it pickled by reference: the project's
                    model = pyfunc.load_pyfunc_model(path, meta, ref=info.ref)
                extra["flavor"] = "python_function"
                extra["code_trusted"] = trusted_by is not None
        except ModelRefused as exc:
            self._record_refusal(info, exc)
            raise
        return LoadedModel(
            info=info,
            model=model,
            contract=contract,
            profile=_read_json(_artifact(path, PROFILE_FILE)),
            evaluation=_read_json(_artifact(path, EVALUATION_FILE)),
            path=path,
            extra=extra,
        )

    def _record_code_trust(self, info: VersionInfo, meta: dict[str, Any]) -> None:
        """A version that runs code on load is loading under ``model.trust_code_of``: say so, as an
        event (once per version and process) and as a version tag, before its code runs."""
        loader = str(meta["flavors"]["python_function"].get("loader_module"))
        key = f"{info.name}/{info.version}"
        _log.warning("Loading %s, which runs code on load (%s), under model.trust_code_of", info.ref, loader)
        if info.version in self._code_trusted:
            return
        self._code_trusted.add(info.version)
        try:
            self._record(
                pyfunc.CODE_TRUST_EVENT,
                f"model:{self.name}/v{info.version}",
                f"{info.ref} loaded with code execution allowed by model.trust_code_of: [{key}] ({loader})",
                actor="mloop",
                data={"version": info.version, "loader": loader, "trusted_by": f"model.trust_code_of: {key}"},
            )
        except MloopError as err:
            _log.warning("Could not record the code trust of %s: %s", info.ref, err.message)
        if info.tags.get(pyfunc.CODE_TRUST_TAG) != key:
            try:
                self.client.set_model_version_tag(info.name, str(info.version), pyfunc.CODE_TRUST_TAG, key)
            except Exception as exc:  # a read-only registry still serves; the event and the log stand
                _log.warning("Could not tag %s as code-trusted: %s", info.ref, exc)


def _artifact(model_dir: Path, name: str) -> Path:
    """MLflow stores ``extra_files`` under ``extra_files/`` in the model directory, and a custom
    ``python_function`` model's ``artifacts`` under ``artifacts/`` (how such a version supplies a
    ``profile.json`` or ``contract.json``)."""
    for folder in ("extra_files", "artifacts"):
        nested = model_dir / folder / name
        if nested.is_file():
            return nested
    return model_dir / name


def _read_contract(ref: str, model_dir: Path) -> dict[str, Any] | None:
    """The version's contract (None when it has none), refused unless it is a valid
    :class:`DataContract` (names of printable characters within a length limit, dtypes from the
    closed set)."""
    path = _artifact(model_dir, CONTRACT_FILE)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        DataContract.from_json(text)
    except (DataError, OSError, UnicodeDecodeError) as exc:
        raise ModelRefused(f"{ref} has an invalid {CONTRACT_FILE}, so it is not loaded: {exc}") from exc
    data: dict[str, Any] = json.loads(text)  # an object with a columns list: from_json checked it
    return data


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None
