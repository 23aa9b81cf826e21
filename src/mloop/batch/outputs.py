"""Batch outputs that a job writes chunk by chunk and can resume: files (Parquet, CSV) and SQL tables.

Every output records which chunks are finished, atomically with their rows, so an interrupted job
resumes from its last finished chunk and never writes a row twice:

- **Files.** Chunks go to a staging directory next to the output (``<output>.parts/``) as
  ``part-NNNNNN.arrow`` (+ ``rejected-NNNNNN.arrow``; Arrow IPC, uncompressed: written and read back at
  memory speed), each written to a temporary name and renamed: a chunk is finished exactly when its
  part exists. The parts are joined, in chunk order and while later chunks are scored
  (:mod:`mloop.batch.joiner`), into the output file (Parquet or CSV) and the rejected rows into
  ``<stem>.rejected.<ext>``; ``finish()`` completes the files and removes the staging directory. An
  output path ending in ``/`` (or an existing directory) keeps the parts as a Parquet dataset instead
  (``part-NNNNNN.parquet``; rejected rows in the sibling directory ``<name>.rejected/``).
  ``_mloop_job.json`` in the staging directory pins the job (input, model version, chunk size): a
  resume with different settings is refused.
- **SQL.** ``postgresql+psycopg://…/db?table=scores`` (or any SQLAlchemy URL with ``table=``): each
  chunk's rows and a row in ``mloop_batch_chunks`` are inserted in one transaction; rejected rows go to
  ``<table>_rejected``.

``write_chunk`` may be called from worker processes (outputs are picklable), so writing runs in
parallel with scoring.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pandas as pd

from mloop.batch.joiner import PartJoiner
from mloop.errors import ConfigError, DataError, SourceError

__all__ = ["JOB_FILE", "BatchOutput", "FileOutput", "SqlOutput", "open_output"]

JOB_FILE = "_mloop_job.json"
"""Pins an unfinished job; the leading underscore keeps Parquet dataset readers from listing it."""


class BatchOutput(ABC):
    """Where scored and rejected rows go, chunk by chunk, with the finished chunks remembered."""

    location: str
    rejected_location: str

    @abstractmethod
    def begin(self, job: dict[str, object], *, restart: bool) -> set[int]:
        """Start or resume ``job``; return the indexes of chunks already finished."""

    @abstractmethod
    def write_chunk(self, index: int, scored: pd.DataFrame, rejected: pd.DataFrame) -> None:
        """Write one chunk's rows and mark it finished, all or nothing."""

    def advance(self, done: set[int]) -> None:  # noqa: B027 - optional hook
        """Called in the main process after each finished chunk (``done``: every finished index)."""

    @abstractmethod
    def finish(self, chunks: int) -> None:
        """Make the output final once all ``chunks`` are written."""

    def abandon(self) -> None:  # noqa: B027 - optional hook
        """The job stopped early: release what :meth:`advance` holds (finished chunks stay)."""


def _job_mismatch(where: str, old: dict[str, object], new: dict[str, object]) -> DataError:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return DataError(
        f"{where} holds an unfinished batch job with other settings ({', '.join(changed)} differ: "
        f"{ {k: old.get(k) for k in changed} } before, { {k: new.get(k) for k in changed} } now). "
        "Run the same command again to resume it, or pass --restart to discard it and start over."
    )


class FileOutput(BatchOutput):
    """A Parquet or CSV file (or a Parquet directory) written through a staging directory of parts."""

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        text = str(path)
        self.path = Path(text.removeprefix("file://"))
        self.as_directory = text.endswith("/") or self.path.is_dir() or not self.path.suffix
        name = self.path.name.lower()
        if not self.as_directory and not name.endswith((".parquet", ".pq", ".csv")):
            raise ConfigError(
                f"Cannot tell the output format of {self.path}: use a name ending in .parquet or .csv, "
                "a directory (ending in /) for a Parquet dataset, or a database URL with ?table=NAME."
            )
        self.format = "csv" if name.endswith(".csv") else "parquet"
        self.overwrite = overwrite
        self.part_suffix = ".parquet" if self.as_directory else ".arrow"
        if self.as_directory:
            self.staging = self.path
            self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        else:
            self.staging = self.path.with_name(self.path.name + ".parts")
            stem = self.path.name[: -len(self.path.suffix)]
            self.rejected_path = self.path.with_name(f"{stem}.rejected{self.path.suffix}")
        self.location = str(self.path)
        self.rejected_location = str(self.rejected_path)
        self._joining: list[PartJoiner] | None = None

    def begin(self, job: dict[str, object], *, restart: bool) -> set[int]:
        marker = self.staging / JOB_FILE
        if restart:
            for path in (self.staging, self.rejected_path if self.as_directory else None):
                if path is not None and path.exists():
                    shutil.rmtree(path)
        if marker.is_file():
            old = json.loads(marker.read_text(encoding="utf-8"))
            if old != job:
                raise _job_mismatch(str(self.staging), old, job)
            return {int(p.stem.split("-")[1]) for p in self.staging.glob(f"part-*{self.part_suffix}")}
        if not self.as_directory and self.path.exists() and not self.overwrite:
            raise DataError(f"The output {self.path} exists; pass --overwrite to replace it.")
        if self.as_directory and self.path.exists() and any(self.path.iterdir()) and not self.overwrite:
            raise DataError(f"The output directory {self.path} is not empty; pass --overwrite to replace it.")
        if self.as_directory:
            for path in (self.path, self.rejected_path):
                if path.exists():
                    shutil.rmtree(path)
        self.staging.mkdir(parents=True, exist_ok=True)
        _atomic_write(marker, json.dumps(job, indent=2, sort_keys=True).encode("utf-8"))
        return set()

    def write_chunk(self, index: int, scored: pd.DataFrame, rejected: pd.DataFrame) -> None:
        # The rejected part first: the scored part's rename is what marks the chunk finished.
        rejected_dir = self.rejected_path if self.as_directory else self.staging
        rejected_dir.mkdir(parents=True, exist_ok=True)
        _write_part(rejected_dir / f"rejected-{index:06d}{self.part_suffix}", rejected)
        _write_part(self.staging / f"part-{index:06d}{self.part_suffix}", scored)

    def _joiners(self) -> list[PartJoiner]:
        if self._joining is None:
            self._joining = [
                PartJoiner(self.staging, "part", self.path, self.format),
                PartJoiner(self.staging, "rejected", self.rejected_path, self.format),
            ]
        return self._joining

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_joining"] = None  # open writers stay in the main process
        return state

    def advance(self, done: set[int]) -> None:
        if not self.as_directory:
            for joiner in self._joiners():
                joiner.advance(done)

    def finish(self, chunks: int) -> None:
        if self.as_directory:
            (self.staging / JOB_FILE).unlink(missing_ok=True)
            return
        for joiner in self._joiners():
            joiner.close(chunks)
        shutil.rmtree(self.staging)

    def abandon(self) -> None:
        for joiner in self._joining or []:
            joiner.abandon()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_part(path: Path, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")  # hidden from dataset readers until renamed
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if path.suffix == ".arrow":
        feather.write_feather(table, tmp, compression="uncompressed")
    else:
        pq.write_table(table, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class SqlOutput(BatchOutput):
    """A SQL table; chunk rows and the chunk's checkpoint row are committed in one transaction."""

    CHECKPOINTS = "mloop_batch_chunks"

    def __init__(self, url: str, *, overwrite: bool = False) -> None:
        # Split by hand: urlsplit would fold sqlite:////abs/path into a host name.
        base, _, query_text = url.partition("?")
        query = dict(parse_qsl(query_text))
        self.table = query.pop("table", "")
        if not self.table:
            raise ConfigError(
                f"A database output needs the table to write: add ?table=NAME to {base.split('@')[-1]}."
            )
        from mloop.data.sql_source import sql_url

        self.url = sql_url(base + (f"?{urlencode(query)}" if query else ""), Path.cwd())
        self.rejected_table = f"{self.table}_rejected"
        safe = self.url.render_as_string(hide_password=True)
        self.location = f"{safe} table {self.table}"
        self.rejected_location = f"{safe} table {self.rejected_table}"
        self.overwrite = overwrite
        self.job_id = ""
        self._engine: Any = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_engine"] = None  # each process opens its own connections
        return state

    def _connect(self) -> Any:
        import sqlalchemy as sa

        if self._engine is None:
            try:
                self._engine = sa.create_engine(self.url)
            except (sa.exc.SQLAlchemyError, ImportError) as exc:
                raise SourceError(f"Cannot open the output database {self.location}: {exc}.") from exc
        return self._engine

    def begin(self, job: dict[str, object], *, restart: bool) -> set[int]:
        import hashlib

        import sqlalchemy as sa

        self.job_id = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
        engine = self._connect()
        meta = sa.MetaData()
        table = sa.Table(
            self.CHECKPOINTS,
            meta,
            sa.Column("job_id", sa.String(32), primary_key=True),
            sa.Column("chunk", sa.Integer, primary_key=True),
            sa.Column("output_table", sa.String(255)),
        )
        try:
            meta.create_all(engine)
            with engine.begin() as conn:
                if restart:
                    conn.execute(table.delete().where(table.c.output_table == self.table))
                    for name in (self.table, self.rejected_table):
                        conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quote(conn, name)}"))
                done = {
                    int(r[0])
                    for r in conn.execute(sa.select(table.c.chunk).where(table.c.job_id == self.job_id))
                }
                if not done and not restart and sa.inspect(conn).has_table(self.table):
                    if not self.overwrite:
                        raise DataError(
                            f"The output table {self.table!r} exists; pass --overwrite to replace it "
                            "(or --restart to drop an unfinished job's rows)."
                        )
                    for name in (self.table, self.rejected_table):
                        conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quote(conn, name)}"))
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"Cannot prepare the output table at {self.location}: {exc}.") from exc
        return done

    def write_chunk(self, index: int, scored: pd.DataFrame, rejected: pd.DataFrame) -> None:
        import sqlalchemy as sa

        try:
            with self._connect().begin() as conn:
                if len(scored):
                    scored.to_sql(self.table, conn, if_exists="append", index=False)
                if len(rejected):
                    rejected.to_sql(self.rejected_table, conn, if_exists="append", index=False)
                conn.execute(
                    sa.text(
                        f"INSERT INTO {self.CHECKPOINTS} (job_id, chunk, output_table) VALUES (:j, :c, :t)"
                    ),
                    {"j": self.job_id, "c": index, "t": self.table},
                )
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"Writing chunk {index} to {self.location} failed: {exc}.") from exc

    def finish(self, chunks: int) -> None:
        import sqlalchemy as sa

        with self._connect().begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.CHECKPOINTS} WHERE job_id = :j"), {"j": self.job_id})
        self._connect().dispose()


def _quote(conn: Any, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def open_output(uri: str, *, overwrite: bool = False) -> BatchOutput:
    """A file output for a path, a SQL output for a database URL with ``?table=``."""
    if "://" in uri and not uri.startswith("file://"):
        return SqlOutput(uri, overwrite=overwrite)
    return FileOutput(uri, overwrite=overwrite)
