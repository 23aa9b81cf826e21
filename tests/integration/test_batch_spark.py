"""The Spark engine on local[2]: same predictions as the local engine, rejected rows with reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mloop.batch import batch_predict
from mloop.data import generate_fraud

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark: pip install 'mloop[spark]'")
# pyspark 4 warns on import of its pandas bridge under pandas 3; the engine is tested here regardless.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="module")
def spark_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (java on PATH)")


def test_spark_engine_matches_the_local_engine(spark_java, trained_settings, tmp_path: Path) -> None:
    frame = generate_fraud(3000, seed=17).drop(columns=["is_fraud"]).astype({"amount": object})
    frame.loc[[5, 2000], "amount"] = "abc"
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    local = batch_predict(trained_settings, str(src), str(tmp_path / "local.parquet"), workers=1)
    report = batch_predict(
        trained_settings, str(src), str(tmp_path / "spark.parquet"), engine="spark", spark_master="local[2]"
    )
    assert (report.rows_in, report.rows_scored, report.rows_rejected) == (3000, 2998, 2)
    ours = pd.read_parquet(tmp_path / "local.parquet").set_index("transaction_id").sort_index()
    theirs = pd.read_parquet(tmp_path / "spark.parquet").set_index("transaction_id").sort_index()
    assert (theirs["prediction"] == ours["prediction"]).all()
    pd.testing.assert_series_equal(theirs["proba_1"], ours["proba_1"], rtol=1e-9)
    rejected = pd.read_parquet(tmp_path / "spark.rejected.parquet")
    assert rejected["_reason"].str.startswith("amount: type (got 'abc'").all()
    assert local.rows_rejected == 2
