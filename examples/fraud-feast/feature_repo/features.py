"""The customer features the fraud model reads from Feast instead of the request.

``customer_stats`` holds, per customer and as of each of their transactions, the number of
transactions in the 24 hours before it and their mean amount over the 30 days before it. The offline
rows come from ``build_features.py``; the stream example keeps the online values fresh
(``stream_features.py``, ``FeatureStore.write_to_online_store``).
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String

customer = Entity(name="customer", join_keys=["customer_id"])

customer_stats_source = FileSource(
    path=str(Path(__file__).parent / "data" / "customer_stats.parquet"),
    timestamp_field="event_timestamp",
)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=3650),  # the synthetic data starts in 2024: keep old values servable
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="txn_count_24h", dtype=Int64),
        Field(name="avg_amount_30d", dtype=Float64),
    ],
    source=customer_stats_source,
)

fraud_features = FeatureService(name="fraud_features", features=[customer_stats])
