"""Open the prediction log for a URL: the one place that maps URL schemes to backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mloop.errors import ConfigError, did_you_mean
from mloop.predlog.base import PredictionLogBackend
from mloop.predlog.logger import PredictionLogger
from mloop.predlog.memory import MemoryPredictionLog
from mloop.predlog.objectstore import ObjectStorePredictionLog
from mloop.predlog.parquet import ParquetPredictionLog
from mloop.predlog.postgres import PostgresPredictionLog
from mloop.predlog.wal import DurablePredictionLogger

if TYPE_CHECKING:
    from mloop.config import Settings

__all__ = ["SUPPORTED_SCHEMES", "open_prediction_log", "open_prediction_logger"]

SUPPORTED_SCHEMES = ("file", "s3", "postgresql", "postgresql+psycopg", "memory")


def open_prediction_log(url: str) -> PredictionLogBackend:
    """The backend for ``url`` (``settings.prediction_log_url``).

    ``file:///abs/dir`` or a plain path → Parquet segments in that directory;
    ``s3://bucket/prefix`` → Parquet segments on S3-compatible object storage;
    ``postgresql+psycopg://user@host/db`` (or ``postgresql://``) → one shared table;
    ``memory://`` → an in-process list (tests).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"prediction_log.url must be a directory or a URL; got {url!r}.")
    scheme, sep, _ = url.partition("://")
    if not sep or (len(scheme) == 1 and scheme.isalpha()):  # a plain path, or a Windows drive letter
        return ParquetPredictionLog(Path(url))
    scheme = scheme.lower()
    if scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"prediction_log.url {url!r} names host {parsed.netloc!r}; file URLs must be local."
            )
        return ParquetPredictionLog(Path(unquote(parsed.path)))
    if scheme == "s3":
        return ObjectStorePredictionLog(url)
    if scheme in ("postgresql", "postgresql+psycopg"):
        return PostgresPredictionLog(url)
    if scheme == "memory":
        return MemoryPredictionLog()
    hint = did_you_mean(scheme, SUPPORTED_SCHEMES)
    raise ConfigError(
        f"prediction_log.url uses the scheme {scheme!r}, which the prediction log does not support; "
        f"supported: {', '.join(SUPPORTED_SCHEMES)} or a plain directory path.{hint}"
    )


def open_prediction_logger(
    settings: Settings, *, on_drop: Callable[[int], Any] | None = None
) -> PredictionLogger | DurablePredictionLogger:
    """The logger the server writes through, per ``prediction_log.durability``: in memory first
    (``buffered``) or through a local write-ahead log (``sync``, see :mod:`mloop.predlog.wal`)."""
    pl = settings.prediction_log
    backend = open_prediction_log(settings.prediction_log_url)
    if pl.durability != "sync":
        return PredictionLogger(
            backend,
            buffer_size=pl.buffer_size,
            flush_interval_s=pl.flush_interval_s,
            flush_rows=pl.flush_rows,
            on_drop=on_drop,
        )
    try:
        return DurablePredictionLogger(
            backend,
            Path(pl.wal_dir) if pl.wal_dir else settings.home_dir / "predictions-wal",
            buffer_size=pl.buffer_size,
            flush_interval_s=pl.flush_interval_s,
            flush_rows=pl.flush_rows,
            on_drop=on_drop,
        )
    except BaseException:
        backend.close()
        raise
