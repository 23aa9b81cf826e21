"""The local engine: formats in and out, rejected side output, resume without gaps or duplicates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from mloop.batch import ROW, FileOutput, batch_predict
from mloop.data import generate_fraud
from mloop.errors import DataError, SourceError


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    frame = generate_fraud(1000, seed=21).drop(columns=["is_fraud"]).astype({"amount": object})
    frame.loc[[10, 500, 999], "amount"] = "abc"
    return frame


@pytest.fixture
def csv_input(tmp_path: Path, data: pd.DataFrame) -> Path:
    path = tmp_path / "in.csv"
    data.to_csv(path, index=False)
    return path


def _run(settings, src, dst, **kw):
    return batch_predict(settings, str(src), str(dst), workers=1, chunk_rows=300, **kw)


def test_csv_in_parquet_out_with_rejected_side_file(fraud_settings, csv_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    report = _run(fraud_settings, csv_input, out)
    scored = pd.read_parquet(out)
    rejected = pd.read_parquet(tmp_path / "scores.rejected.parquet")
    assert (report.rows_in, report.rows_scored, report.rows_rejected, report.chunks) == (1000, 997, 3, 4)
    assert rejected[ROW].tolist() == [10, 500, 999]
    assert rejected["_reason"].str.startswith("amount: type (got 'abc'").all()
    assert sorted(scored[ROW].tolist() + rejected[ROW].tolist()) == list(range(1000))
    assert {"prediction", "proba_0", "proba_1", "transaction_id"} <= set(scored.columns)
    assert report.reasons == {"amount: type": 3}
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_an_interrupted_job_resumes_without_gaps_or_duplicates(
    fraud_settings,
    csv_input: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = tmp_path / "ref.parquet"
    _run(fraud_settings, csv_input, reference)
    out = tmp_path / "resumed.parquet"
    original = FileOutput.write_chunk
    calls = {"n": 0}

    def crash_on_third(self, index, scored, rejected):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        original(self, index, scored, rejected)

    monkeypatch.setattr(FileOutput, "write_chunk", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(fraud_settings, csv_input, out)
    assert not out.exists() and len(list((tmp_path / "resumed.parquet.parts").glob("part-*"))) == 2
    monkeypatch.setattr(FileOutput, "write_chunk", original)
    report = _run(fraud_settings, csv_input, out)
    assert report.chunks_resumed == 2 and report.chunks == 2
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))
    assert pd.read_parquet(tmp_path / "resumed.rejected.parquet")[ROW].tolist() == [10, 500, 999]


def test_a_resume_with_other_settings_is_refused_until_restart(
    fraud_settings,
    csv_input: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "o.parquet"
    monkeypatch.setattr(FileOutput, "finish", lambda self, chunks: None)  # leave the job unfinished
    _run(fraud_settings, csv_input, out)
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"chunk_rows differ.*--restart"):
        batch_predict(fraud_settings, str(csv_input), str(out), workers=1, chunk_rows=100)
    report = batch_predict(fraud_settings, str(csv_input), str(out), workers=1, chunk_rows=100, restart=True)
    assert report.chunks == 10 and len(pd.read_parquet(out)) == 997


def test_an_existing_output_needs_overwrite(fraud_settings, csv_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    _run(fraud_settings, csv_input, out)
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        _run(fraud_settings, csv_input, out)
    _run(fraud_settings, csv_input, out, overwrite=True)
    assert len(pd.read_csv(out)) == 997 and len(pd.read_csv(tmp_path / "o.rejected.csv")) == 3


def test_parquet_directory_output_is_a_dataset(fraud_settings, data: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    data.astype({"amount": str}).to_parquet(src)
    out = tmp_path / "scores"
    report = _run(fraud_settings, src, f"{out}/", keep=["transaction_id"])
    assert report.rows_scored == 997
    frame = pd.read_parquet(out)
    assert sorted(frame[ROW]) == sorted(set(range(1000)) - {10, 500, 999})
    assert list(frame.columns)[:2] == [ROW, "transaction_id"]
    assert len(pd.read_parquet(tmp_path / "scores.rejected")) == 3


def test_sql_query_in_and_sql_table_out_resume(
    fraud_settings,
    data: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "bank.db"
    with sqlite3.connect(db) as conn:
        data.astype({"amount": str, "timestamp": str}).to_sql("tx", conn, index=False)
    url = f"sqlite:///{db}"
    query = "SELECT * FROM tx ORDER BY transaction_id"
    # SQLite locks a file being read; the output goes to another database file.
    target = f"sqlite:///{tmp_path / 'scores.db'}?table=scores"
    from mloop.batch.outputs import SqlOutput

    original = SqlOutput.write_chunk
    calls = {"n": 0}

    def crash_on_second(self, index, scored, rejected):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        original(self, index, scored, rejected)

    monkeypatch.setattr(SqlOutput, "write_chunk", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _run(fraud_settings, url, target, query=query)
    monkeypatch.setattr(SqlOutput, "write_chunk", original)
    report = _run(fraud_settings, url, target, query=query)
    assert report.chunks_resumed == 1
    with sqlite3.connect(tmp_path / "scores.db") as conn:
        scored = pd.read_sql("SELECT * FROM scores", conn)
        rejected = pd.read_sql("SELECT * FROM scores_rejected", conn)
    assert len(scored) == 997 and scored[ROW].is_unique and len(rejected) == 3


def test_a_database_input_needs_a_query(fraud_settings, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--query"):
        _run(fraud_settings, f"sqlite:///{tmp_path}/x.db", tmp_path / "o.parquet")


def test_worker_processes_give_the_same_output(fraud_settings, csv_input: Path, tmp_path: Path) -> None:
    _run(fraud_settings, csv_input, tmp_path / "one.parquet")
    batch_predict(fraud_settings, str(csv_input), str(tmp_path / "two.parquet"), workers=2, chunk_rows=300)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    )


def test_a_sample_reaches_the_prediction_log(fraud_settings, csv_input: Path, tmp_path: Path) -> None:
    from mloop.predlog import open_prediction_log

    settings = fraud_settings.model_copy(deep=True)
    settings.prediction_log.url = (tmp_path / "log").as_uri()
    settings.batch.log_sample = 0.1
    report = _run(settings, csv_input, tmp_path / "o.parquet")
    logged = open_prediction_log(settings.prediction_log_url).read()
    assert 50 <= report.rows_logged <= 150 and len(logged) == report.rows_logged
    assert (
        set(logged["arm"]) == {"batch"} and "amount" in logged.columns and logged["prediction_id"].is_unique
    )


def test_workers_read_parquet_chunks_themselves_and_resume(
    fraud_settings,
    data: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "in.parquet"
    data.astype({"amount": str}).to_parquet(src, row_group_size=250)  # row groups across chunk edges
    reference = tmp_path / "ref.parquet"
    _run(fraud_settings, src, reference)
    out = tmp_path / "out.parquet"
    monkeypatch.setattr(FileOutput, "finish", lambda self, chunks: None)  # an interrupted run...
    _run(fraud_settings, src, out)
    monkeypatch.undo()
    parts = tmp_path / "out.parquet.parts"
    for lost in ("part-000001.arrow", "part-000003.arrow"):  # ...that had finished chunks 0 and 2
        (parts / lost).unlink()
    report = batch_predict(fraud_settings, str(src), str(out), workers=2, chunk_rows=300)
    assert (report.chunks_resumed, report.chunks, report.rows_in) == (2, 2, 1000)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))
