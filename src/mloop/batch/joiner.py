"""Join a staging directory's Arrow parts into one Parquet or CSV file, in chunk order, as they arrive.

The engine calls :meth:`PartJoiner.advance` after each finished chunk: parts are appended while the
next one in order exists, so joining overlaps with scoring instead of following it. The file grows
under a temporary name and is renamed by :meth:`PartJoiner.close`; after a crash it is simply started
again from the parts (which are kept until the job finishes). The schema is the first part's; if a
later part cannot be cast to it (a CSV column read as numbers in one chunk and as text in another),
the joiner starts over once at the end with the schema unified across all parts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["PartJoiner", "join_parts"]


def _conform(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)


def _open(tmp: Path, schema: Any, fmt: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt != "parquet":
        return pacsv.CSVWriter(tmp, schema)
    # Dictionary encoding pays off for text; on numbers it is tried, abandoned, and costs ~40% of
    # the encoding time.
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return pq.ParquetWriter(tmp, schema, use_dictionary=text or False)


class PartJoiner:
    """Appends ``<prefix>-NNNNNN.arrow`` parts of ``staging`` to ``target`` in index order."""

    def __init__(self, staging: Path, prefix: str, target: Path, fmt: str) -> None:
        self.staging = staging
        self.prefix = prefix
        self.target = target
        self.fmt = fmt
        self.tmp = target.with_name(f".{target.name}.joining")
        self.next = 0
        self.writer: Any = None
        self.schema: Any = None
        self.failed = False

    def _part(self, index: int) -> Path:
        return self.staging / f"{self.prefix}-{index:06d}.arrow"

    def advance(self, done: set[int]) -> None:
        """Append every part from the next index on that is finished."""
        import pyarrow as pa
        import pyarrow.feather as feather

        while not self.failed and self.next in done:
            table = feather.read_table(self._part(self.next), memory_map=False)
            self.next += 1
            if table.num_rows == 0:
                continue
            if self.writer is None:
                self.schema = table.schema.remove_metadata()
                self.target.parent.mkdir(parents=True, exist_ok=True)
                self.writer = _open(self.tmp, self.schema, self.fmt)
            try:
                self.writer.write_table(_conform(table, self.schema))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                self.failed = True  # types differ between parts: unify them all at the end

    def close(self, total: int) -> None:
        """Append the rest and move the file into place (joins from scratch if types differed)."""
        self.advance(set(range(total)))
        if self.writer is not None:
            self.writer.close()
        if self.failed or self.writer is None:
            self.tmp.unlink(missing_ok=True)
            join_parts([self._part(i) for i in range(total)], self.target, self.fmt)
            return
        os.replace(self.tmp, self.target)

    def abandon(self) -> None:
        """Drop the partial file (the parts stay for a resume)."""
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def join_parts(parts: list[Path], target: Path, fmt: str) -> None:
    """Concatenate Arrow parts into one file with the schema unified across them, one part at a time."""
    import pyarrow as pa
    import pyarrow.feather as feather

    parts = [p for p in parts if p.exists()]
    schemas = []
    for part in parts:
        with pa.ipc.open_file(part) as reader:
            schemas.append(reader.schema)
    tmp = target.with_name(f".{target.name}.joining")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not schemas:
        tmp.write_bytes(b"")
        os.replace(tmp, target)
        return
    schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
    writer = _open(tmp, schema, fmt)
    try:
        for part in parts:
            table = feather.read_table(part, memory_map=False)
            if table.num_rows:
                writer.write_table(_conform(table, schema))
    finally:
        writer.close()
    os.replace(tmp, target)
