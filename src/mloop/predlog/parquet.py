"""Prediction log as Parquet segments on local disk (the embedded default, ``.mloop/predictions``).

The layout and the reading are :mod:`mloop.predlog.segments`'. On local disk each segment is written
to a hidden temporary name, fsynced and renamed into place, so a crash leaves either a whole segment
or a hidden ``.tmp`` file that readers skip — never a torn segment.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mloop.errors import StoreError
from mloop.predlog.segments import Listing, SegmentedParquetLog, arrow_table, model_folder

__all__ = ["ParquetPredictionLog", "arrow_table"]

TEMP_SUFFIX = ".tmp"


class ParquetPredictionLog(SegmentedParquetLog):
    """Parquet segments under ``directory``; several processes may write and read it at once (each
    names its segments with its pid and a random part)."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the prediction log directory {self.directory}: {exc.strerror}. "
                "Set prediction_log.url to a writable directory."
            ) from exc
        super().__init__(pafs.LocalFileSystem(), str(self.directory))

    def __repr__(self) -> str:
        return f"ParquetPredictionLog({str(self.directory)!r})"

    # -- writing -------------------------------------------------------------------------------
    def _segment_name(self, first_us: int) -> str:
        return f"{first_us:017d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"

    def _put_segment(self, folder: str, name: str, table: pa.Table) -> None:
        final, temp = Path(folder) / name, Path(folder) / f".{name}{TEMP_SUFFIX}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(temp, final)
            if self.fsync and os.name == "posix":
                dir_fd = os.open(final.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"Cannot write prediction log segment {final}: {exc.strerror or exc}.") from exc

    # -- listing -------------------------------------------------------------------------------
    def _model_dirs(self, model_name: str | None) -> list[Path]:
        if model_name is not None:
            folder = self.directory / model_folder(model_name)
            return [folder] if folder.is_dir() else []
        return sorted(p for p in self.directory.glob("model=*") if p.is_dir())

    def _model_folders(self) -> list[str]:
        return [p.name for p in self._model_dirs(None)]

    def _list(self, model_name: str | None, lo: str | None, hi: str | None) -> Listing:
        # Day folders are filtered before their segments are listed: a recent window lists few.
        listing: Listing = {}
        for model_dir in self._model_dirs(model_name):
            for day_dir in model_dir.glob("date=*"):
                day = day_dir.name[len("date=") :]
                if (lo and day < lo) or (hi and day > hi):
                    continue
                listing.setdefault(day, []).extend(str(p) for p in self._segments(day_dir))
        return listing

    @staticmethod
    def _segments(folder: Path) -> list[Path]:
        # Temporary files are hidden and end in .tmp: a glob on *.parquet never sees them.
        return [p for p in folder.glob("*.parquet") if not p.name.startswith(".")]

    def segments(self) -> list[Path]:
        """Every complete segment file (for tools and tests)."""
        return sorted(Path(p) for paths in self._list(None, None, None).values() for p in paths)

    def _day_emptied(self, model_folder_name: str, day: str) -> None:
        with contextlib.suppress(OSError):  # a writer put a segment in it meanwhile: keep it
            (self.directory / model_folder_name / f"date={day}").rmdir()
