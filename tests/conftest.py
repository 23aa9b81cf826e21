"""Shared fixtures: real services (skipped when absent, failed when MLOOP_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("MLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail, when MLOOP_REQUIRE_SERVICES=1) if the service is unreachable."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
    pytest.skip(f"{reason}; start it, or set MLOOP_TEST_POSTGRES_URL/MLOOP_TEST_REDIS_URL.")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test Postgres database (the server must be up)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A Postgres URL whose search_path is a fresh schema, dropped afterwards (tests never collide)."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no MLOOP_* settings leaking in from the environment."""
    for name in list(os.environ):
        if name.startswith("MLOOP_") and name not in {"MLOOP_REQUIRE_SERVICES"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint (``127.0.0.1:port``) of a local S3 API (moto's server, started for the session)."""
    import shutil
    import subprocess
    import sys
    import time

    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        reason = "moto's S3 server is not installed (pip install 'moto[server]', part of the dev extra)"
        if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
        pytest.skip(reason)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not _reachable("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not start on port {port} (exit code {proc.poll()}).")
        time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_url(s3_server: str) -> str:
    """An ``s3://bucket/prefix`` URL of a fresh bucket on the local S3 API (credentials in the URL)."""
    import pyarrow.fs as pafs

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(
        access_key="test",
        secret_key="test",
        endpoint_override=s3_server,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)
    return f"s3://test:test@{bucket}/predictions?endpoint_override={s3_server}&scheme=http&region=us-east-1"


def _restore(before: dict[str, str]) -> None:
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


def _forget_project_code(root: Path, paths_before: list[str]) -> None:
    """Drop the modules a test module imported from projects under ``root`` (pytest's temporary
    folders; every project's ``train.py`` is the module ``train``) and the project folders it put on
    sys.path, so the next module's project imports its own code, not a cached or shadowing copy."""
    import sys

    base = os.path.realpath(root) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file).startswith(base):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p in paths_before or not os.path.realpath(p).startswith(base)]


@pytest.fixture(autouse=True, scope="module")
def _environment_restored_per_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module-scoped fixtures run outside any one test: what they export (mlflow.set_tracking_uri and
    set_registry_uri write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI) ends with their module, and so
    does the project code they imported (:func:`_forget_project_code`)."""
    import sys

    before, paths = dict(os.environ), list(sys.path)
    yield
    _restore(before)
    # The run's folder (every xdist worker's basetemp is inside it); never the checkout itself.
    _forget_project_code(tmp_path_factory.getbasetemp().parent, paths)


@pytest.fixture(autouse=True)
def _loggers_left_enabled() -> Iterator[None]:
    """Every test leaves each logger's ``disabled`` flag as it found it (new loggers enabled).

    ``logging.config.dictConfig`` disables every logger that exists when it runs unless told not
    to; import-linter's ``lint_imports`` (run in-process by tests/unit/test_layers.py) does so, and
    a later test in the same worker then saw nothing from ``mloop.server.app`` in caplog.
    """
    import logging

    loggers = logging.Logger.manager.loggerDict
    before = {name: lg.disabled for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    yield
    for name, lg in list(loggers.items()):
        if isinstance(lg, logging.Logger):
            lg.disabled = before.get(name, False)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Every test leaves os.environ as it found it.

    Commands run in-process (typer's CliRunner) export settings for their worker processes
    (`mloop serve` sets MLOOP_CONFIG); without this, a later test's subprocess inherited a
    deleted project's config and failed far from the cause.
    """
    before = dict(os.environ)
    yield
    _restore(before)
