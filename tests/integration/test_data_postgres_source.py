"""The SQL source against a real PostgreSQL (fresh schema per test)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mloop.config import SourceSettings
from mloop.data import describe_source, generate_fraud, infer_contract, load_source
from mloop.errors import SourceError

pytestmark = pytest.mark.postgres


@pytest.fixture
def loaded_url(postgres_schema_url: str) -> str:
    engine = sa.create_engine(postgres_schema_url)
    with engine.begin() as conn:
        generate_fraud(500, seed=9).to_sql("transactions", conn, index=False)
    engine.dispose()
    return postgres_schema_url


def test_query_a_table(loaded_url: str, tmp_path: Path) -> None:
    query = "SELECT amount, merchant_category, is_fraud FROM transactions WHERE amount > 10 ORDER BY amount"
    df = load_source(SourceSettings(uri=loaded_url, query=query), root=tmp_path)
    expected = generate_fraud(500, seed=9)
    assert len(df) == int((expected["amount"] > 10).sum())
    assert df["amount"].is_monotonic_increasing
    contract = infer_contract(df, target="is_fraud")
    assert contract.column("merchant_category").dtype == "category"


def test_plain_postgresql_scheme_uses_psycopg(loaded_url: str, tmp_path: Path) -> None:
    plain = loaded_url.replace("postgresql+psycopg://", "postgresql://", 1)
    df = load_source(SourceSettings(uri=plain, query="SELECT count(*) AS n FROM transactions"), root=tmp_path)
    assert df.loc[0, "n"] == 500
    assert describe_source(SourceSettings(uri=plain, query="q"), tmp_path).startswith(
        "sql:postgresql://127.0.0.1"
    )


def test_bad_sql_names_the_problem(loaded_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape("transactionz")) as info:
        load_source(SourceSettings(uri=loaded_url, query="SELECT * FROM transactionz"), root=tmp_path)
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)


def test_empty_result_is_not_an_error(loaded_url: str, tmp_path: Path) -> None:
    df = load_source(
        SourceSettings(uri=loaded_url, query="SELECT * FROM transactions WHERE false"), root=tmp_path
    )
    assert isinstance(df, pd.DataFrame) and df.empty and "amount" in df.columns
