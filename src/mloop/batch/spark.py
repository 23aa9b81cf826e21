"""The Spark batch engine: the same :class:`~mloop.batch.Scorer` inside ``mapInPandas`` on any master.

The scorer (model + contract) is broadcast once, so executors need no access to the MLflow store;
each Python worker unpickles it once and scores Arrow batches single-threaded (Spark already runs one
task per core). One pass produces scored and rejected rows together; the result is cached, then the
scored rows are written to OUTPUT and the rejected ones to ``<stem>.rejected.<ext>`` as Spark
datasets (directories of part files; Parquet unless the name ends in ``.csv``).

Scored rows keep the input columns (contract columns with the contract's types) plus ``prediction``,
``proba_<class>`` and ``flags``. Rejected rows carry ``_input`` (the row as JSON, as read) and
``_reason``. The Spark engine reads files (CSV, Parquet); it does not resume an interrupted job
(Spark retries failed tasks itself) and has no global row number.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.batch.inputs import BatchInput
from mloop.batch.local import BatchReport
from mloop.batch.scorer import REASON, ROW, Scorer
from mloop.errors import ConfigError, DataError

__all__ = ["INPUT", "run_spark", "spark_output_schema"]

INPUT = "_input"
"""Column of Spark's rejected output with the rejected row as JSON."""


def _spark_type(dtype: str) -> Any:
    from pyspark.sql import types as T

    return {
        "int": T.LongType(),
        "float": T.DoubleType(),
        "bool": T.BooleanType(),
        "datetime": T.TimestampType(),
    }.get(dtype, T.StringType())


def spark_output_schema(scorer: Scorer, input_schema: Any, keep: Sequence[str] | None) -> Any:
    """The one schema of the mapInPandas output: scored and rejected rows together."""
    import numpy as np
    from pyspark.sql import types as T

    specs = {s.name: s for s in scorer.specs}
    names = [f.name for f in input_schema.fields] if keep is None else list(keep)
    by_name = {f.name: f for f in input_schema.fields}
    fields = []
    for name in names:
        if name not in by_name:
            raise DataError(f"--keep names {name!r}, not an input column; columns: {', '.join(by_name)}.")
        kind = _spark_type(specs[name].dtype) if name in specs else by_name[name].dataType
        fields.append(T.StructField(name, kind, True))
    if scorer.is_classifier:
        kind = np.asarray(scorer.classes).dtype.kind
        prediction = {"i": T.LongType(), "u": T.LongType(), "f": T.DoubleType(), "b": T.BooleanType()}.get(
            kind, T.StringType()
        )
    else:
        prediction = T.DoubleType()
    fields.append(T.StructField("prediction", prediction, True))
    fields += [T.StructField(c, T.DoubleType(), True) for c in scorer.proba_columns]
    fields += [T.StructField(n, T.StringType(), True) for n in ("flags", REASON, INPUT)]
    return T.StructType(fields)


def _plain_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as objects: pyspark's Arrow bridge cannot take pandas' Arrow-backed strings."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object and pd.api.types.is_string_dtype(column.dtype):
            frame[name] = column.astype(object).where(column.notna(), None)
    return frame


def _partition_scorer(blob: Any, keep: list[str] | None, columns: list[str]) -> Any:
    state: dict[str, Scorer] = {}

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        if "scorer" not in state:
            from threadpoolctl import threadpool_limits

            state["scorer"] = pickle.loads(blob.value)
            threadpool_limits(1)  # Spark runs one task per core already
        scorer = state["scorer"]
        for pdf in batches:
            result = scorer.score(pdf, keep=keep)
            scored = result.scored.drop(columns=[ROW])
            scored[REASON] = None
            scored[INPUT] = None
            positions = result.rejected[ROW].to_numpy()
            raw = pdf.iloc[positions]
            rejected = pd.DataFrame(
                {
                    REASON: result.rejected[REASON].to_numpy(),
                    INPUT: [json.dumps(r, default=str) for r in raw.to_dict("records")],
                }
            )
            out = pd.concat([scored, rejected], ignore_index=True).reindex(columns=columns)
            yield _plain_text(out)

    return score


def run_spark(
    scorer: Scorer,
    source: BatchInput,
    output: str,
    *,
    master: str,
    conf: dict[str, str] | None = None,
    keep: Sequence[str] | None = None,
    overwrite: bool = False,
) -> BatchReport:
    """Score ``source`` into the Spark dataset ``output`` (and ``<stem>.rejected.<ext>``)."""
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F
    except ImportError as exc:
        raise ConfigError("The Spark engine needs pyspark: pip install 'mloop[spark]'.") from exc
    if source.kind == "sql":
        raise ConfigError(
            "The Spark engine reads CSV and Parquet files; export the query first, or use --engine local."
        )
    started = time.perf_counter()
    builder = SparkSession.builder.master(master).appName(f"mloop batch {scorer.name} v{scorer.version}")
    settings = {"spark.sql.execution.arrow.pyspark.enabled": "true"}
    if master.startswith("local"):
        # An in-process cluster talks to itself only: bind the driver to loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run this interpreter (the one with mloop installed), not `python3` on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    reader = spark.read
    frame = (
        reader.option("header", "true").csv(source.location)  # text columns: the scorer reads the types
        if source.kind == "csv"
        else reader.parquet(source.location)
    )
    scorer.check_columns(frame.columns)
    schema = spark_output_schema(scorer, frame.schema, keep)
    blob = spark.sparkContext.broadcast(pickle.dumps(scorer))
    scored_all = frame.mapInPandas(
        _partition_scorer(blob, list(keep) if keep is not None else None, schema.names), schema=schema
    ).persist()
    path = Path(output.removeprefix("file://"))
    fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    rejected_path = path.with_name(f"{stem}.rejected{path.suffix}")
    mode = "overwrite" if overwrite else "errorifexists"
    ok = scored_all.filter(F.col(REASON).isNull()).drop(REASON, INPUT)
    bad = scored_all.filter(F.col(REASON).isNotNull()).select(REASON, INPUT)
    try:
        ok.write.mode(mode).format(fmt).option("header", "true").save(str(path))
        bad.write.mode(mode).format(fmt).option("header", "true").save(str(rejected_path))
        counts = scored_all.select(
            F.count(F.lit(1)).alias("rows"), F.count(F.col(REASON)).alias("rejected")
        ).collect()[0]
    except Exception as exc:
        if "already exists" in str(exc):
            raise DataError(f"The output {path} exists; pass --overwrite to replace it.") from exc
        raise
    finally:
        scored_all.unpersist()
    report = BatchReport(
        output=str(path),
        rejected_output=str(rejected_path),
        model_name=scorer.name,
        model_version=scorer.version,
        engine=f"spark ({master})",
        rows_in=int(counts["rows"]),
        rows_rejected=int(counts["rejected"]),
        chunks=frame.rdd.getNumPartitions(),
    )
    report.rows_scored = report.rows_in - report.rows_rejected
    report.seconds = time.perf_counter() - started
    return report
