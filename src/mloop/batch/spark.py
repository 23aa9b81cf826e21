"""The Spark batch engine: the same :class:`~mloop.batch.Scorer` in a pandas UDF, on any Spark master.

The scorer (model + contract) is broadcast once, so executors need no access to the MLflow store;
each Python worker unpickles it once and scores Arrow batches single-threaded (Spark already runs one
task per core). Only the contract's columns travel to Python: the UDF returns, per row, the
prediction, the class probabilities, the flags and the rejection reason, and every other column stays
in the JVM. The result is cached, then the scored rows are written to OUTPUT and the rejected ones to
``<stem>.rejected.<ext>``, as Spark datasets (directories of part files; Parquet unless the name ends
in ``.csv``).

Scored rows keep the input columns as read plus ``prediction``, ``proba_<class>`` and ``flags``.
Rejected rows carry ``_input`` (the row as JSON, as read) and ``_reason``. The Spark engine reads
files (CSV, Parquet); it does not resume an interrupted job (Spark retries failed tasks itself) and
has no global row number.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.batch.inputs import BatchInput
from mloop.batch.local import BatchReport
from mloop.batch.scorer import REASON, ROW, Scorer
from mloop.errors import ConfigError, DataError

__all__ = ["INPUT", "run_spark", "udf_schema"]

INPUT = "_input"
"""Column of Spark's rejected output with the rejected row as JSON."""


def udf_schema(scorer: Scorer) -> Any:
    """What the UDF returns per row: prediction, probabilities, flags and the rejection reason."""
    import numpy as np
    from pyspark.sql import types as T

    if scorer.is_classifier:
        kind = np.asarray(scorer.classes).dtype.kind
        prediction = {"i": T.LongType(), "u": T.LongType(), "f": T.DoubleType(), "b": T.BooleanType()}.get(
            kind, T.StringType()
        )
    else:
        prediction = T.DoubleType()
    fields = [T.StructField("prediction", prediction, True)]
    fields += [T.StructField(c, T.DoubleType(), True) for c in scorer.proba_columns]
    fields += [T.StructField(n, T.StringType(), True) for n in ("flags", REASON)]
    return T.StructType(fields)


def _scoring_udf(blob: Any, scorer: Scorer) -> Any:
    # pyspark re-exports pandas_udf through a star import its stubs do not declare.
    from pyspark.sql.functions import pandas_udf  # type: ignore[attr-defined,unused-ignore]

    state: dict[str, Scorer] = {}
    schema = udf_schema(scorer)
    names = schema.names

    @pandas_udf(schema)  # type: ignore[untyped-decorator]
    def score(rows: pd.DataFrame) -> pd.DataFrame:
        if "scorer" not in state:
            from threadpoolctl import threadpool_limits

            state["scorer"] = pickle.loads(blob.value)
            threadpool_limits(1)  # Spark runs one task per core already
        result = state["scorer"].score(rows, keep=[])
        out = pd.DataFrame(index=range(len(rows)), columns=names, dtype=object)
        scored = result.scored
        positions = scored[ROW].to_numpy()
        for name in names[:-1]:
            column = scored[name].to_numpy(dtype=object)
            out.iloc[positions, out.columns.get_loc(name)] = column
        out.iloc[result.rejected[ROW].to_numpy(), out.columns.get_loc(REASON)] = result.rejected[
            REASON
        ].to_numpy(dtype=object)
        out = out.where(out.notna(), None)
        for name in scorer.proba_columns:
            out[name] = out[name].astype("float64")
        return out

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
    keep_names = frame.columns if keep is None else list(keep)
    unknown = [k for k in keep_names if k not in frame.columns]
    if unknown:
        raise DataError(
            f"--keep names {unknown[0]!r}, not an input column; columns: {', '.join(frame.columns)}."
        )
    blob = spark.sparkContext.broadcast(pickle.dumps(scorer))
    udf = _scoring_udf(blob, scorer)
    contract = [F.col(f"`{s.name}`") for s in scorer.specs if s.name in frame.columns]
    scored_all = frame.withColumn("_mloop", udf(F.struct(*contract))).persist()
    path = Path(output.removeprefix("file://"))
    fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    rejected_path = path.with_name(f"{stem}.rejected{path.suffix}")
    mode = "overwrite" if overwrite else "errorifexists"
    reason = F.col(f"_mloop.{REASON}")
    outputs = [F.col(f"_mloop.`{n}`").alias(n) for n in udf_schema(scorer).names if n != REASON]
    ok = scored_all.filter(reason.isNull()).select(*[F.col(f"`{k}`") for k in keep_names], *outputs)
    everything = F.to_json(F.struct(*[F.col(f"`{c}`") for c in frame.columns]))
    bad = scored_all.filter(reason.isNotNull()).select(reason.alias(REASON), everything.alias(INPUT))
    try:
        ok.write.mode(mode).format(fmt).option("header", "true").save(str(path))
        bad.write.mode(mode).format(fmt).option("header", "true").save(str(rejected_path))
        counts = scored_all.select(
            F.count(F.lit(1)).alias("rows"), F.count(reason).alias("rejected")
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
