"""Versioned training data: the exact data each run trained on, and training on it again.

Every training run records a *data version* in its tags (and its model version's): the content hash
of the frame as loaded (:func:`frame_hash`), its rows, the source and (for a file) its modification
time, and where to get the data back:

- a **snapshot**: the frame as Parquet among the run's MLflow artifacts (``data/<hash>.parquet``),
  written once per hash (a later run on the same data points at the first snapshot) and kept by the
  ``training.snapshot`` policy (``always``, ``auto`` up to ``training.snapshot_max_mb``, ``never``);
- a **DVC revision** when the source file is tracked by DVC: git commit, path and the md5 DVC
  recorded (:mod:`mloop.data.dvc`; mloop runs the ``dvc`` command, it never imports DVC).

``mloop train --data-version HASH|REV`` (:func:`resolve`) loads a version back — the snapshot of a
hash, or the source file at a git revision of a DVC repository — and the run trains on exactly it,
tagged with the same hash. See docs/data-versions.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd

from mloop.errors import DataError

if TYPE_CHECKING:
    from mloop.config import Settings
    from mloop.data.dvc import DvcRecord

__all__ = ["DataVersion", "DataVersionNotFound", "describe", "frame_hash", "keep_snapshot", "resolve"]

PREFIX = "mloop.data_"
HASH_TAG = "mloop.data_version"
SNAPSHOT_DIR = "data"
_HASH_RE = re.compile(r"[0-9a-f]{6,64}")


class DataVersionNotFound(DataError):
    """``--data-version`` names no recorded data hash and no git revision of a DVC repository."""


# ---- hashing ------------------------------------------------------------------------------------
def _text_bytes(values: pd.Series) -> list[bytes]:
    """A text column as Arrow's buffers: validity, offsets from 0 and the UTF-8 bytes (no per-row work)."""
    import pyarrow as pa

    arr = pa.array(values, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if arr.null_count:  # a null slot's bytes are the builder's choice: make them empty
        arr = arr.fill_null("")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    first, last = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    data = arr.buffers()[2]
    text = data.to_pybytes()[first:last] if data is not None else b""
    return [valid.tobytes(), (offsets - first).tobytes(), text]


def _column_bytes(col: pd.Series) -> tuple[str, list[bytes]]:
    """A column's kind and bytes in a form that survives a Parquet round trip unchanged.

    Text hashes alike whatever its dtype (``object`` from SQL, ``str`` from CSV, ``category``),
    timestamps as nanoseconds whatever their unit, so a snapshot read back hashes as the frame did."""
    dtype = col.dtype
    kind = str(dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        kind, col = "category", col.astype(object)
        dtype = col.dtype
    if dtype.kind == "O" or pd.api.types.is_string_dtype(dtype):
        # Only a plain object column has to be looked at; str/string dtypes hold text by definition.
        inferred = pd.api.types.infer_dtype(col, skipna=True) if isinstance(dtype, np.dtype) else "string"
        if inferred in ("string", "empty"):
            return ("string" if kind != "category" else kind), _text_bytes(col)
        kind = "object" if kind != "category" else kind
    elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        kind = f"datetime[{getattr(dtype, 'tz', None)}]"
        with contextlib.suppress(ValueError, OverflowError):  # out of the ns range: keep the unit
            col = col.dt.as_unit("ns")
    elif pd.api.types.is_timedelta64_dtype(dtype):
        kind, col = "timedelta", col.dt.as_unit("ns")
    try:
        hashed = pd.util.hash_pandas_object(col, index=False)
    except TypeError:  # unhashable cells (lists, dicts from nested JSON): their text
        hashed = pd.util.hash_pandas_object(col.astype(str), index=False)
    return kind, [hashed.to_numpy().tobytes()]


def frame_hash(frame: pd.DataFrame) -> str:
    """sha256 hex of a frame's column names, kinds and values, in column and row order (index ignored).

    The same data hashes the same in every run and after a Parquet round trip; one changed cell,
    a renamed column, a changed type, reordered columns or reordered rows give another hash — the
    order of columns and rows changes what the split and the estimator see, so it is part of the data.
    No per-row Python work (pandas' row hashes for numbers, Arrow's buffers for text): 100k rows
    cost milliseconds."""
    digest = hashlib.sha256(b"mloop-frame/1\n")
    digest.update(f"{frame.shape[0]}x{frame.shape[1]}\n".encode())
    for i, name in enumerate(frame.columns):
        kind, chunks = _column_bytes(frame.iloc[:, i])
        digest.update(json.dumps([str(name), kind, [len(c) for c in chunks]]).encode("utf-8"))
        for chunk in chunks:
            digest.update(chunk)
    return digest.hexdigest()


# ---- the record ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataVersion:
    """What a run trained on and where to get it back; kept as ``mloop.data_*`` tags."""

    hash: str
    rows: int
    source: str
    mtime: str | None = None
    """The source file's modification time (UTC, ISO 8601), for a file source."""
    snapshot: str | None = None
    """The Parquet snapshot's artifact URI (``runs:/<run>/data/<hash>.parquet``)."""
    snapshot_note: str | None = None
    """Why no snapshot was kept."""
    dvc_path: str | None = None
    dvc_rev: str | None = None
    dvc_md5: str | None = None
    dvc_clean: bool | None = None
    """The file matched its DVC record committed at ``dvc_rev`` (else the revision is not this data)."""
    reproduced_from: str | None = None
    """The ``--data-version`` this run was asked to train on."""

    _FIELDS = ("rows", "mtime", "snapshot", "snapshot_note", "dvc_path", "dvc_rev", "dvc_md5")

    def tags(self) -> dict[str, str]:
        """The ``mloop.data_*`` tags of the run and its model version (``mloop.data_source`` is the
        run's own tag, set beside them)."""
        tags = {HASH_TAG: self.hash}
        for name in self._FIELDS:
            value = getattr(self, name)
            if value is not None:
                tags[PREFIX + name] = str(value)[:5000]
        if self.dvc_clean is not None:
            tags[PREFIX + "dvc_clean"] = "true" if self.dvc_clean else "false"
        if self.reproduced_from is not None:
            tags[PREFIX + "reproduced_from"] = self.reproduced_from[:500]
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> DataVersion | None:
        """The data version recorded in a run's or version's tags, or None (trained before versions)."""
        if HASH_TAG not in tags:
            return None
        get = tags.get
        rows = get(PREFIX + "rows", "")
        clean = get(PREFIX + "dvc_clean")
        return cls(
            hash=tags[HASH_TAG],
            rows=int(rows) if rows.isdigit() else -1,
            source=get(PREFIX + "source", ""),  # mloop.data_source
            mtime=get(PREFIX + "mtime"),
            snapshot=get(PREFIX + "snapshot"),
            snapshot_note=get(PREFIX + "snapshot_note"),
            dvc_path=get(PREFIX + "dvc_path"),
            dvc_rev=get(PREFIX + "dvc_rev"),
            dvc_md5=get(PREFIX + "dvc_md5"),
            dvc_clean=None if clean is None else clean == "true",
            reproduced_from=get(PREFIX + "reproduced_from"),
        )

    def get_back(self) -> list[str]:
        """How a person gets this data back: commands, best first (empty when it cannot be)."""
        ways = []
        if self.snapshot:
            ways.append(f"mloop train --data-version {self.hash[:12]}   (trains on the snapshot)")
            ways.append(f"mlflow artifacts download -u {self.snapshot}   (the Parquet file)")
        if self.dvc_rev and self.dvc_path and self.dvc_clean:
            if not self.snapshot:
                ways.append(f"mloop train --data-version {self.hash[:12]}   (fetches it with DVC)")
            ways.append(f"dvc get . {self.dvc_path} --rev {self.dvc_rev[:12]}   (the file, from DVC)")
        return ways


# ---- recording ----------------------------------------------------------------------------------
def _local_path(settings: Settings) -> Path | None:
    """The configured source's path when it is a local file or folder, else None."""
    uri = settings.source.uri.strip()
    if uri.lower().startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    if "://" in uri or uri.lower().startswith("synthetic:") or not uri:
        return None
    return settings.resolve_path(str(Path(uri).expanduser()))


def _mtime(path: Path) -> str | None:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC).isoformat(timespec="seconds")


def _dvc_fields(record: DvcRecord | None) -> dict[str, Any]:
    if record is None:
        return {}
    return {
        "dvc_path": record.path,
        "dvc_rev": record.rev,
        "dvc_md5": record.md5,
        "dvc_clean": record.clean,
    }


def describe(settings: Settings, frame: pd.DataFrame, source: str, *, from_source: bool) -> DataVersion:
    """The data version of ``frame`` as loaded: hash and rows, plus the file's mtime and DVC record
    when ``from_source`` (the frame is ``settings.source``, not a frame given by the caller)."""
    from mloop.data.dvc import tracked

    found: dict[str, Any] = {}
    path = _local_path(settings) if from_source else None
    if path is not None:
        found["mtime"] = _mtime(path)
        if path.is_file():
            found.update(_dvc_fields(tracked(path)))
    return DataVersion(hash=frame_hash(frame), rows=len(frame), source=source, **found)


def tag_active_run(version: DataVersion) -> None:
    """Tag the active MLflow run (if any) with ``version`` now, so a run that fails later still says
    which data it failed on; the log step tags it again with the snapshot."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tags({**version.tags(), PREFIX + "source": version.source})


def _client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _runs(settings: Settings, where: str, limit: int = 50) -> list[Any]:
    """Runs of the project's experiment matching an MLflow filter on tags, newest first."""
    client = _client(settings)
    exp = client.get_experiment_by_name(settings.experiment_name)
    if exp is None:
        return []
    return list(
        client.search_runs(
            [exp.experiment_id],
            filter_string=where,
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
    )


def _recorded(settings: Settings, prefix: str, limit: int = 50) -> list[tuple[DataVersion, Any]]:
    """(data version, run) of the runs whose data hash starts with ``prefix``, newest first."""
    found = []
    for r in _runs(settings, f"tags.`{HASH_TAG}` LIKE '{prefix}%'", limit):
        version = DataVersion.from_tags(r.data.tags)
        if version is not None:
            found.append((version, r))
    return found


def keep_snapshot(settings: Settings, frame: pd.DataFrame, version: DataVersion) -> DataVersion:
    """``version`` with its snapshot: an earlier run's of the same hash, or a new one logged to the
    active MLflow run (``data/<hash>.parquet``) when ``training.snapshot`` allows; else with the reason."""
    import mlflow

    if version.snapshot:
        return version
    for earlier, _ in _recorded(settings, version.hash):
        if earlier.hash == version.hash and earlier.snapshot:
            return dataclasses.replace(version, snapshot=earlier.snapshot, snapshot_note=None)
    policy, limit_mb = settings.training.snapshot, settings.training.snapshot_max_mb
    note = None
    if policy == "never":
        note = "training.snapshot is never"
    elif len(set(frame.columns)) != frame.shape[1] or not all(isinstance(c, str) for c in frame.columns):
        note = "column names are not distinct strings, which Parquet needs"
    elif policy == "auto":
        size_mb = float(frame.memory_usage(deep=True, index=False).sum()) / 1e6
        if size_mb > limit_mb:
            note = f"{size_mb:.0f} MB in memory is above training.snapshot_max_mb ({limit_mb:g})"
    active = mlflow.active_run()
    if note is None and active is None:
        note = "no active MLflow run to keep it in"
    if note is not None:
        return dataclasses.replace(version, snapshot_note=note)
    assert active is not None
    with tempfile.TemporaryDirectory(prefix="mloop-data-") as tmp:
        path = Path(tmp) / f"{version.hash}.parquet"
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=SNAPSHOT_DIR)
    uri = f"runs:/{active.info.run_id}/{SNAPSHOT_DIR}/{version.hash}.parquet"
    return dataclasses.replace(version, snapshot=uri, snapshot_note=None)


# ---- reproducing --------------------------------------------------------------------------------
def _read_snapshot(settings: Settings, version: DataVersion) -> pd.DataFrame:
    import mlflow.artifacts

    assert version.snapshot is not None
    with tempfile.TemporaryDirectory(prefix="mloop-data-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=version.snapshot, dst_path=tmp, tracking_uri=settings.tracking_uri
            )
            frame = pd.read_parquet(local)
        except Exception as exc:
            raise DataError(
                f"The snapshot {version.snapshot} of data version {version.hash[:12]} could not be read "
                f"({type(exc).__name__}: {exc}). Was the run or its artifacts deleted?"
            ) from exc
    return frame


def _read_dvc(settings: Settings, repo: Path, path: str, rev: str) -> pd.DataFrame:
    from mloop.data import load_source
    from mloop.data.dvc import fetch_at_rev

    with tempfile.TemporaryDirectory(prefix="mloop-dvc-") as tmp:
        dest = Path(tmp) / Path(path).name  # the same name, so source.format auto finds the format
        fetch_at_rev(repo, path, rev, dest, command=settings.training.dvc_command)
        source = settings.source.model_copy(update={"uri": str(dest)})
        return load_source(source, root=settings.root)


def _check(frame: pd.DataFrame, expected: str, where: str) -> str:
    got = frame_hash(frame)
    if got != expected:
        raise DataError(
            f"The data from {where} hashes to {got[:12]}, not to the recorded {expected[:12]}: it is not the "
            "data that run trained on (changed after the fact, or read with other source.options)."
        )
    return got


def _not_found(settings: Settings, ref: str, dvc_note: str) -> DataVersionNotFound:
    seen: dict[str, list[tuple[DataVersion, Any]]] = {}
    for version, r in _recorded(settings, "", limit=200):
        seen.setdefault(version.hash, []).append((version, r))
    known = []
    for digest, runs in list(seen.items())[:10]:
        newest, r = runs[0]
        day = dt.datetime.fromtimestamp(r.info.start_time / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
        snap, dvc = any(v.snapshot for v, _ in runs), any(v.dvc_clean for v, _ in runs)
        kept = "snapshot" if snap else ("dvc" if dvc else "hash only")
        count = f"{len(runs)} runs, latest" if len(runs) > 1 else "run"
        known.append(f"  {digest[:12]}  {newest.rows} rows  {kept:9s} ({count} {r.info.run_id[:8]} {day})")
    listing = "Recent data versions:\n" + "\n".join(known)
    if not known:
        listing = "No run has recorded a data version yet."
    return DataVersionNotFound(
        f"--data-version {ref!r} is neither the hash (or its first 6+ characters) of data a run of "
        f"{settings.experiment_name!r} trained on, nor {dvc_note}. `mloop models show VERSION` shows "
        f"the data version of a model version.\n{listing}"
    )


def resolve(settings: Settings, ref: str) -> tuple[pd.DataFrame, DataVersion]:
    """The frame and data version that ``--data-version ref`` names: a recorded hash (its snapshot,
    else its DVC revision), else a git revision of the DVC repository that tracks the source file."""
    from mloop.data.dvc import find_repo, md5_at_rev, resolve_rev

    ref = ref.strip()
    text = ref.lower()
    if _HASH_RE.fullmatch(text):
        found = _recorded(settings, text)
        hashes = list(dict.fromkeys(v.hash for v, _ in found))
        if len(hashes) > 1:
            raise DataVersionNotFound(
                f"--data-version {ref!r} is the start of {len(hashes)} data hashes "
                f"({', '.join(h[:16] for h in hashes[:5])}); give more characters."
            )
        if hashes:
            versions = [v for v, _ in found]
            kept = next((v for v in versions if v.snapshot), None)
            if kept is not None:
                frame = _read_snapshot(settings, kept)
                _check(frame, kept.hash, kept.snapshot or "")
                return frame, dataclasses.replace(
                    kept, source=f"{kept.snapshot} (snapshot of {kept.source})", reproduced_from=ref
                )
            via_dvc = next((v for v in versions if v.dvc_clean and v.dvc_rev and v.dvc_path), None)
            source_path = _local_path(settings)
            repo = find_repo(source_path if source_path is not None else settings.root)
            if via_dvc is not None and repo is not None:
                assert via_dvc.dvc_path is not None and via_dvc.dvc_rev is not None
                frame = _read_dvc(settings, repo, via_dvc.dvc_path, via_dvc.dvc_rev)
                _check(frame, via_dvc.hash, f"{via_dvc.dvc_path}@{via_dvc.dvc_rev[:12]}")
                return frame, dataclasses.replace(via_dvc, reproduced_from=ref, snapshot=None)
            last = versions[0]
            raise DataVersionNotFound(
                f"Data version {last.hash[:12]} ({last.rows} rows from {last.source or 'a frame'}, file "
                f"modified {last.mtime or 'unknown'}) was recorded but not kept: "
                f"{last.snapshot_note or 'no snapshot'}, and it was not a committed DVC revision. "
                "Set training.snapshot to always (or raise training.snapshot_max_mb), or track the "
                "source with DVC, so later versions can be trained on again."
            )
    path = _local_path(settings)
    repo = find_repo(path) if path is not None else None
    if path is None or repo is None:
        raise _not_found(settings, ref, "a git revision (the source is not in a DVC repository)")
    rev = resolve_rev(repo, ref)
    if rev is None:
        raise _not_found(settings, ref, f"a git revision of {repo}")
    rel = path.resolve().relative_to(repo).as_posix()
    md5 = md5_at_rev(repo, rel, rev)
    if md5 is None:
        raise DataVersionNotFound(
            f"At git revision {rev[:12]}, {rel} is not tracked by DVC (no {rel}.dvc or dvc.lock output "
            "records it). Pick a revision after `dvc add` was committed: `git log -- " + rel + ".dvc`."
        )
    frame = _read_dvc(settings, repo, rel, rev)
    version = DataVersion(
        hash=frame_hash(frame),
        rows=len(frame),
        source=f"dvc:{rel}@{rev[:12]}",
        dvc_path=rel,
        dvc_rev=rev,
        dvc_md5=md5,
        dvc_clean=True,
        reproduced_from=ref,
    )
    return frame, version
