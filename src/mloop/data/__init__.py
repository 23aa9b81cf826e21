"""Data: sources, the data contract and the synthetic generator.

:func:`load_source` reads the configured source (CSV, Parquet, SQL, HTTP or ``synthetic://fraud``)
into a DataFrame; :func:`data_hash` and :func:`describe_source` give its lineage. The data contract
(:class:`DataContract`, inferred by :func:`infer_contract`, enforced by :func:`validate`) is the one
schema behind serving requests, batch validation and the drift reference. :func:`generate_fraud`
makes seeded card-transaction data with drift scenarios for demos and tests.
"""

from mloop.data.coerce import coerce_frame
from mloop.data.contract import ValidationResult, infer_contract, validate
from mloop.data.report import Violation, ViolationReport
from mloop.data.schema import DTYPES, ColumnSpec, DataContract
from mloop.data.sources import data_hash, describe_source, load_source
from mloop.data.synthetic import SCENARIOS, generate_fraud, iter_fraud

__all__ = [
    "DTYPES",
    "SCENARIOS",
    "ColumnSpec",
    "DataContract",
    "ValidationResult",
    "Violation",
    "ViolationReport",
    "coerce_frame",
    "data_hash",
    "describe_source",
    "generate_fraud",
    "infer_contract",
    "iter_fraud",
    "load_source",
    "validate",
]
