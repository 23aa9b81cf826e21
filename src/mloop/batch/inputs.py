"""Batch inputs read in chunks of a fixed number of rows: CSV, Parquet (file or directory) or a SQL query.

Chunk boundaries depend only on the input and ``chunk_rows``, so a resumed job sees the same chunks
as the interrupted one and can skip those already written. A SQL query must therefore return its rows
in a stable order (``ORDER BY`` a key) for a resume to be exact. Memory stays bounded by one chunk:
CSV is parsed chunk by chunk, Parquet is scanned batch by batch, SQL rows are streamed from a
server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mloop.errors import SourceError, did_you_mean

__all__ = ["BatchInput", "open_input"]

_CSV = (".csv", ".csv.gz", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True)
class BatchInput:
    """One input: its kind, where it is, and how to read it in chunks."""

    kind: str
    """``csv``, ``parquet`` or ``sql``."""
    location: str
    query: str | None = None

    def describe(self) -> str:
        if self.kind == "sql":
            from mloop.data.sql_source import describe_sql

            return describe_sql(self.location, self.query, Path.cwd())
        return f"{self.kind}:{self.location}"

    def total_rows(self) -> int | None:
        """Row count when it is cheap to know (Parquet metadata); None otherwise."""
        if self.kind != "parquet":
            return None
        import pyarrow.dataset as ds

        return int(ds.dataset(self.location, format="parquet").count_rows())

    def columns(self) -> list[str] | None:
        """Column names when known without reading rows."""
        if self.kind == "parquet":
            import pyarrow.dataset as ds

            return list(ds.dataset(self.location, format="parquet").schema.names)
        return None

    @property
    def splittable(self) -> bool:
        """True when any chunk can be read on its own (:meth:`read_chunk`), e.g. by a worker process."""
        return self.kind == "parquet"

    def read_chunk(self, index: int, chunk_rows: int) -> pd.DataFrame:
        """Chunk ``index`` alone: the same rows :meth:`chunks` yields at that position (Parquet only)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        start, stop = index * chunk_rows, (index + 1) * chunk_rows
        pieces: list[pa.Table] = []
        offset = 0
        for file in _parquet_files(self.location):
            with pq.ParquetFile(file) as reader:
                meta = reader.metadata
                if offset + meta.num_rows <= start:
                    offset += meta.num_rows
                    continue
                groups: list[int] = []
                first = -1
                for g in range(meta.num_row_groups):
                    rows = meta.row_group(g).num_rows
                    if offset + rows > start and offset < stop:
                        groups.append(g)
                        first = offset if first < 0 else first
                    offset += rows
                if groups:
                    table = reader.read_row_groups(groups)
                    lo = max(start - first, 0)
                    pieces.append(table.slice(lo, stop - first - lo))
            if offset >= stop:
                break
        if not pieces:
            return pd.DataFrame()
        return (pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]).to_pandas()

    def chunk_count(self, chunk_rows: int) -> int | None:
        """How many chunks :meth:`chunks` yields, when known without reading (Parquet)."""
        total = self.total_rows()
        return None if total is None else max(1, -(-total // chunk_rows)) if total else 0

    def chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Frames of exactly ``chunk_rows`` rows (the last may be shorter)."""
        if self.kind == "csv":
            yield from _csv_chunks(self.location, chunk_rows)
        elif self.kind == "parquet":
            yield from _parquet_chunks(self.location, chunk_rows)
        else:
            yield from _sql_chunks(self.location, self.query or "", chunk_rows)


def _csv_chunks(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, sep="\t" if path.endswith(".tsv") else ",")
        with reader:
            yield from reader
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"Cannot parse the CSV input {path}: {exc}.") from exc


def _parquet_files(path: str) -> list[Path]:
    root = Path(path)
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix in (".parquet", ".pq", "")
    )


def _parquet_chunks(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # File by file, row group by row group: a dataset scanner reads ahead many batches, and its memory
    # would grow with the input.
    try:
        pending: list[pa.RecordBatch] = []
        have = 0
        for file in _parquet_files(path):
            with pq.ParquetFile(file) as reader:
                for batch in reader.iter_batches(batch_size=chunk_rows):
                    pending.append(batch)
                    have += batch.num_rows
                    while have >= chunk_rows:
                        table = pa.Table.from_batches(pending)
                        yield table.slice(0, chunk_rows).to_pandas()
                        rest = table.slice(chunk_rows)
                        pending, have = rest.to_batches(), rest.num_rows
        if have:
            yield pa.Table.from_batches(pending).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"Cannot read the Parquet input {path}: {exc}.") from exc


def _sql_chunks(uri: str, query: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import sqlalchemy as sa

    from mloop.data.sql_source import sql_url

    url = sql_url(uri, Path.cwd())
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            # A server-side cursor streams rows instead of loading the whole result.
            streaming = conn.execution_options(stream_results=True)
            yield from pd.read_sql_query(sa.text(query), streaming, chunksize=chunk_rows)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise SourceError(
            f"The batch query failed on {url.render_as_string(hide_password=True)}: {exc}. "
            f"Query: {' '.join(query.split())[:200]!r}."
        ) from exc
    finally:
        if "engine" in locals():
            engine.dispose()


def open_input(uri: str, *, query: str | None = None) -> BatchInput:
    """The input for ``uri``: a CSV or Parquet path (file or directory), or a database URL + query."""
    from mloop.data.sql_source import is_sql_url

    if "://" in uri and not uri.startswith("file://") and is_sql_url(uri):
        if not query or not query.strip():
            raise SourceError(
                f"The input {uri.split('@')[-1]} is a database URL: pass the rows to score with "
                "--query 'SELECT … ORDER BY id' (a stable order lets an interrupted job resume exactly)."
            )
        return BatchInput("sql", uri, query)
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
        raise SourceError(f"Input not found: {path}.{did_you_mean(path.name, names)}")
    name = path.name.lower()
    if path.is_dir() or name.endswith(_PARQUET):
        return BatchInput("parquet", str(path))
    if name.endswith(_CSV):
        return BatchInput("csv", str(path))
    raise SourceError(
        f"Cannot tell the format of the input {path}: expected a name ending in "
        f"{', '.join(_CSV + _PARQUET)}, a Parquet directory, or a database URL with --query."
    )
