"""Every source reader (CSV, Parquet, JSON, SQLite, HTTP, synthetic), lineage strings, hashing and errors."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mloop.config import SourceSettings
from mloop.data import data_hash, describe_source, load_source
from mloop.errors import SourceError

FRAME = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": ["x", "y", "z"]})


def _load(uri: str, root: Path, **kwargs: object) -> pd.DataFrame:
    return load_source(SourceSettings(uri=uri, **kwargs), root=root)


# ---- files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data/train.csv", "data/train.csv.gz"])
def test_csv_relative_to_root(tmp_path: Path, name: str) -> None:
    (tmp_path / "data").mkdir()
    FRAME.to_csv(tmp_path / name, index=False)
    pd.testing.assert_frame_equal(_load(name, tmp_path), FRAME)


def test_csv_options_reach_the_reader(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    pd.testing.assert_frame_equal(_load("semi.csv", tmp_path, options={"sep": ";"}), FRAME)


@pytest.mark.parametrize("name", ["t.parquet", "t.pq"])
def test_parquet(tmp_path: Path, name: str) -> None:
    FRAME.to_parquet(tmp_path / name)
    pd.testing.assert_frame_equal(_load(str(tmp_path / name), Path("/nonexistent")), FRAME)


def test_parquet_folder_and_file_uri(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    FRAME.iloc[:2].to_parquet(folder / "p0.parquet")
    FRAME.iloc[2:].to_parquet(folder / "p1.parquet")
    assert len(_load("parts", tmp_path)) == 3
    FRAME.to_csv(tmp_path / "f.csv", index=False)
    assert len(_load((tmp_path / "f.csv").as_uri(), Path("/"))) == 3


def test_json_file_records_and_wrapped(tmp_path: Path) -> None:
    records = FRAME.to_dict(orient="records")
    (tmp_path / "r.json").write_text(json.dumps(records))
    (tmp_path / "w.json").write_text(json.dumps({"data": records}))
    pd.testing.assert_frame_equal(_load("r.json", tmp_path), FRAME)
    pd.testing.assert_frame_equal(_load("w.json", tmp_path), FRAME)


def test_forced_format(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "export.txt", index=False)
    pd.testing.assert_frame_equal(_load("export.txt", tmp_path, format="csv"), FRAME)


def test_empty_csv_is_an_empty_frame_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    assert _load("empty.csv", tmp_path).empty
    assert list(_load("header.csv", tmp_path).columns) == ["a", "b"]


def test_missing_file_names_resolved_path_and_suggests(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SourceError) as info:
        _load("trian.csv", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "trian.csv") in message
    assert "Did you mean 'train.csv'" in message


def test_missing_folder_is_said(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        _load("nowhere/train.csv", tmp_path)


def test_corrupt_parquet_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(SourceError, match=re.escape("bad.parquet")) as info:
        _load("bad.parquet", tmp_path)
    assert info.value.__cause__ is not None
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n")[:-12])
    with pytest.raises(SourceError, match="as csv"):
        _load("bad.csv.gz", tmp_path)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "book.xlsx").write_bytes(b"x")
    with pytest.raises(SourceError) as info:
        _load("book.xlsx", tmp_path)
    for ext in (".csv", ".csv.gz", ".parquet", ".pq"):
        assert ext in str(info.value)


def test_bad_reader_option(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(SourceError, match=re.escape("source.options")):
        _load("t.csv", tmp_path, options={"no_such_option": 1})


def test_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown scheme 's3'"):
        _load("s3://bucket/train.csv", tmp_path)


# ---- SQLite --------------------------------------------------------------------------------------
@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "data.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        FRAME.to_sql("items", conn, index=False)
    engine.dispose()
    return path


def test_sqlite_relative_url_and_query(tmp_path: Path, sqlite_db: Path) -> None:
    df = _load("sqlite:///data.db", tmp_path, query="SELECT a, c FROM items WHERE a >= 2 ORDER BY a")
    assert df.to_dict(orient="list") == {"a": [2, 3], "c": ["y", "z"]}
    assert _load("sqlite:///data.db", tmp_path, query="SELECT * FROM items WHERE a > 99").empty


def test_sqlite_bad_sql_is_wrapped(tmp_path: Path, sqlite_db: Path) -> None:
    with pytest.raises(SourceError, match="no such table: itemz") as info:
        _load("sqlite:///data.db", tmp_path, query="SELECT * FROM itemz")
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)
    assert "source.query" in str(info.value)


def test_sql_needs_a_query(tmp_path: Path, sqlite_db: Path) -> None:
    with pytest.raises(SourceError, match=re.escape("source.query is empty")):
        _load("sqlite:///data.db", tmp_path)


def test_sqlite_missing_file_is_not_created(tmp_path: Path, sqlite_db: Path) -> None:
    with pytest.raises(SourceError, match=re.escape("Did you mean 'data.db'")):
        _load("sqlite:///dta.db", tmp_path, query="SELECT 1")
    assert not (tmp_path / "dta.db").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgres_is_wrapped(tmp_path: Path) -> None:
    uri = f"postgresql://user:hunter2@127.0.0.1:{_closed_port()}/db"
    with pytest.raises(SourceError, match="Could not connect") as info:
        _load(uri, tmp_path, query="SELECT 1", timeout_s=2)
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is not None


# ---- HTTP ----------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/slow":
            time.sleep(1.0)
        status, ctype, body = self.routes.get(path, (404, "text/plain", b"no such file"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    records = FRAME.to_dict(orient="records")
    _Handler.routes = {
        "/data": (200, "text/csv; charset=utf-8", FRAME.to_csv(index=False).encode()),
        "/records": (200, "application/json", json.dumps(records).encode()),
        "/wrapped": (200, "application/json", json.dumps({"data": records}).encode()),
        "/file.csv": (200, "application/octet-stream", FRAME.to_csv(index=False).encode()),
        "/file.parquet": (200, "application/octet-stream", FRAME.to_parquet()),
        "/blob": (200, "application/octet-stream", b"\x00\x01"),
        "/notjson": (200, "application/json", b"{oops"),
        "/object": (200, "application/json", b'{"items": []}'),
        "/boom": (500, "text/plain", b"internal failure"),
        "/slow": (200, "text/csv", b"a\n1\n"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("path", ["/data", "/records", "/wrapped", "/file.csv", "/file.parquet"])
def test_http_formats(http_base: str, path: str) -> None:
    pd.testing.assert_frame_equal(_load(http_base + path, Path(".")), FRAME)


def test_http_forced_format(http_base: str) -> None:
    pd.testing.assert_frame_equal(_load(http_base + "/file.csv", Path("."), format="csv"), FRAME)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/missing.csv", "HTTP 404"),
        ("/boom", "HTTP 500 Internal Server Error: internal failure"),
        ("/blob", "Cannot tell the format"),
        ("/notjson", "not return valid JSON"),
        ("/object", "'data' list"),
    ],
)
def test_http_errors(http_base: str, path: str, needle: str) -> None:
    with pytest.raises(SourceError, match=needle):
        _load(http_base + path, Path("."))


def test_http_timeout(http_base: str) -> None:
    with pytest.raises(SourceError, match=re.escape("within 0.2 s")):
        _load(http_base + "/slow", Path("."), timeout_s=0.2)


def test_http_unreachable_hides_credentials() -> None:
    with pytest.raises(SourceError, match="Could not reach") as info:
        _load(f"http://bob:s3cret@127.0.0.1:{_closed_port()}/x.csv", Path("."), timeout_s=2)
    assert "s3cret" not in str(info.value)


# ---- synthetic -----------------------------------------------------------------------------------
def test_synthetic_source_with_options() -> None:
    df = _load("synthetic://fraud", Path("."), options={"rows": 300, "seed": 4, "scenario": "new_category"})
    assert len(df) == 300 and "is_fraud" in df.columns


@pytest.mark.parametrize(
    ("uri", "options", "needle"),
    [
        ("synthetic://frawd", {}, "Did you mean 'fraud'"),
        ("synthetic://fraud", {"rowz": 3}, "Did you mean 'rows'"),
        ("synthetic://fraud", {"rows": 3, "scenario": "nope"}, "concept_drift"),
    ],
)
def test_synthetic_errors(uri: str, options: dict[str, object], needle: str) -> None:
    with pytest.raises(SourceError, match=needle):
        _load(uri, Path("."), options=options)


# ---- lineage and hashing -------------------------------------------------------------------------
def test_describe_source_hides_secrets(tmp_path: Path) -> None:
    assert describe_source(SourceSettings(uri="data/t.csv"), tmp_path) == f"csv:{tmp_path / 'data' / 't.csv'}"
    assert describe_source(SourceSettings(uri="t.pq"), tmp_path).startswith("parquet:")
    sql = describe_source(
        SourceSettings(uri="postgresql://ann:pw123@db.local:5433/sales?sslmode=require", query="SELECT 1"),
        tmp_path,
    )
    assert sql.startswith("sql:postgresql://db.local:5433/sales (query sha256:")
    assert "pw123" not in sql and "ann" not in sql
    other = describe_source(SourceSettings(uri="postgresql://db.local/sales", query="SELECT 2"), tmp_path)
    assert other.split("(")[1] != sql.split("(")[1]
    url = describe_source(SourceSettings(uri="https://u:p@example.com/d.csv?api_key=abc&day=1"), tmp_path)
    assert url == "https://example.com/d.csv?api_key=***&day=1"
    syn = describe_source(SourceSettings(uri="synthetic://fraud", options={"seed": 3}), tmp_path)
    assert syn == "synthetic:fraud?rows=10000&seed=3"
    lite = describe_source(SourceSettings(uri="sqlite:///x.db", query="q"), tmp_path)
    assert str(tmp_path / "x.db") in lite


def test_data_hash_is_stable_and_sensitive() -> None:
    same = FRAME.copy()
    same.index = [10, 11, 12]
    assert data_hash(FRAME) == data_hash(same)
    assert len(data_hash(FRAME)) == 64
    changed = FRAME.copy()
    changed.loc[1, "b"] = 9.0
    assert data_hash(changed) != data_hash(FRAME)
    assert data_hash(FRAME.rename(columns={"a": "A"})) != data_hash(FRAME)
    assert data_hash(FRAME.astype({"a": "float64"})) != data_hash(FRAME)
    nested = pd.DataFrame({"x": [[1, 2], [3]]})
    assert data_hash(nested) == data_hash(nested.copy())
