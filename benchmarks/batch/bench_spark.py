"""Spark benchmark: mloop's Spark engine vs MLflow's ``spark_udf``, same model, data and ``local[2]``.

    .venv/bin/python benchmarks/batch/bench_spark.py [--rows 1000000] [--rounds 2] [--workdir DIR]

Reuses the project and the Parquet input of ``bench_batch.py`` in ``--workdir`` (``in-<rows>.parquet``;
written here if missing). One Spark session on ``local[2]`` is started and warmed first; then, in
alternation, ``--rounds`` times each:

* *mloop*: ``batch_predict(engine="spark")``: contract validation, predictions and probabilities,
  scored and rejected outputs written as Parquet datasets.
* *MLflow*: ``mlflow.pyfunc.spark_udf(spark, "models:/NAME@champion", result_type="array<double>",
  env_manager="local")`` over the model's feature columns, the result column added to the input and
  written as a Parquet dataset. Our skops models need ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``.

Time is the wall clock of each job (session start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local[2] talks to itself only
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mloop-bench-spark-"))
    project = work / "project"

    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from mloop.batch import batch_predict
    from mloop.config import load_settings
    from mloop.data import iter_fraud
    from mloop.tracking import Registry, configure_mlflow

    if not (project / ".mloop" / "mlflow.db").exists():
        from mloop.project import init_project
        from mloop.training import train

        init_project(project, template="fraud", rows=20_000, force=True)
        train(load_settings(project / "mloop.yaml"))
    settings = load_settings(project / "mloop.yaml")
    src = work / f"in-{args.rows}.parquet"
    if not src.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        for chunk in iter_fraud(args.rows, 100_000, seed=11):
            table = pa.Table.from_pandas(chunk.drop(columns=["is_fraud"]), preserve_index=False)
            writer = writer or pq.ParquetWriter(src, table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
    configure_mlflow(settings)
    loaded = Registry(settings).load("@champion")
    features = list(loaded.evaluation["features"]["numeric"]) + list(
        loaded.evaluation["features"]["categorical"]
    )
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("mloop-bench")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.read.parquet(str(src)).limit(10).collect()  # warm the session
    udf = mlflow.pyfunc.spark_udf(
        spark, f"models:/{settings.model.name}@champion", result_type="array<double>", env_manager="local"
    )
    times: dict[str, list[float]] = {"mloop": [], "mlflow": []}
    for r in range(args.rounds):
        out = work / "spark-mloop.parquet"
        started = time.perf_counter()
        report = batch_predict(
            settings, str(src), str(out), engine="spark", spark_master="local[2]", overwrite=True
        )
        times["mloop"].append(time.perf_counter() - started)
        print(f"round {r + 1} mloop: {times['mloop'][-1]:.1f}s, {report.rows_scored} scored", flush=True)
        out = work / "spark-mlflow.parquet"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        frame = spark.read.parquet(str(src))
        frame.withColumn("proba", udf(F.struct(*features))).write.mode("overwrite").parquet(str(out))
        times["mlflow"].append(time.perf_counter() - started)
        print(f"round {r + 1} mlflow spark_udf: {times['mlflow'][-1]:.1f}s", flush=True)
    total = {k: sum(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "rows": args.rows,
                "master": "local[2]",
                "rounds": args.rounds,
                "mloop_seconds": [round(t, 1) for t in times["mloop"]],
                "mlflow_spark_udf_seconds": [round(t, 1) for t in times["mlflow"]],
                "mloop_rows_per_s": round(args.rows * args.rounds / total["mloop"]),
                "mlflow_rows_per_s": round(args.rows * args.rounds / total["mlflow"]),
                "mloop_speed_vs_mlflow": round(total["mlflow"] / total["mloop"], 3),
            },
            indent=2,
        )
    )
    spark.stop()


if __name__ == "__main__":
    main()
