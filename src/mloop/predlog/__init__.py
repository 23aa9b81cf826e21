"""The prediction log: every prediction leaves the hot path and lands in a backend for monitoring.

The server builds a :class:`PredictionRecord` per prediction and hands it to a
:class:`PredictionLogger`, which buffers in memory (bounded; drops and counts when full) and writes
batches from a background thread to a :class:`PredictionLogBackend`: Parquet segments on local disk
(the default, ``.mloop/predictions``), the same segments on object storage (``s3://``) or one
PostgreSQL table, both shared by replicas. Monitoring reads
windows back with ``backend.read(...)`` as a flat DataFrame (features as columns).

    >>> log = open_prediction_log(settings.prediction_log_url)            # doctest: +SKIP
    >>> with PredictionLogger(log, flush_interval_s=1.0) as logger:       # doctest: +SKIP
    ...     logger.log(PredictionRecord(new_prediction_id(), "fraud", "3", {"amount": 12.0}, 0))
"""

from mloop.predlog.base import PredictionLogBackend, ReadQuery
from mloop.predlog.factory import SUPPORTED_SCHEMES, open_prediction_log, open_prediction_logger
from mloop.predlog.logger import PredictionLogger
from mloop.predlog.memory import MemoryPredictionLog
from mloop.predlog.objectstore import ObjectStorePredictionLog
from mloop.predlog.parquet import ParquetPredictionLog
from mloop.predlog.postgres import PostgresPredictionLog
from mloop.predlog.record import (
    BASE_COLUMNS,
    PredictionRecord,
    new_prediction_id,
    new_prediction_ids,
    records_to_frame,
)
from mloop.predlog.wal import DurablePredictionLogger

__all__ = [
    "BASE_COLUMNS",
    "SUPPORTED_SCHEMES",
    "DurablePredictionLogger",
    "MemoryPredictionLog",
    "ObjectStorePredictionLog",
    "ParquetPredictionLog",
    "PostgresPredictionLog",
    "PredictionLogBackend",
    "PredictionLogger",
    "PredictionRecord",
    "ReadQuery",
    "new_prediction_id",
    "new_prediction_ids",
    "open_prediction_log",
    "open_prediction_logger",
    "records_to_frame",
]
