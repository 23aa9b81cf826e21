"""Configuration: one typed settings tree read from ``mloop.yaml`` and ``MLOOP_*`` variables.

``load_settings()`` finds the project's ``mloop.yaml`` (or ``MLOOP_CONFIG``), overlays the
environment (``MLOOP_SECTION__KEY=value``) and validates the result into :class:`Settings`. Every key
is documented on its field in :mod:`mloop.config.settings`.
"""

from mloop.config.cluster import check_cluster, cluster_problems
from mloop.config.loader import CONFIG_FILE, find_config, load_settings
from mloop.config.settings import (
    ContractSettings,
    ControlSettings,
    GateSettings,
    ModelSettings,
    MonitoringSettings,
    PredictionLogSettings,
    RolloutSettings,
    ServingSettings,
    Settings,
    SourceSettings,
    SplitSettings,
    StoreSettings,
    TrackingSettings,
    TuningSettings,
)

__all__ = [
    "CONFIG_FILE",
    "ContractSettings",
    "ControlSettings",
    "GateSettings",
    "ModelSettings",
    "MonitoringSettings",
    "PredictionLogSettings",
    "RolloutSettings",
    "ServingSettings",
    "Settings",
    "SourceSettings",
    "SplitSettings",
    "StoreSettings",
    "TrackingSettings",
    "TuningSettings",
    "check_cluster",
    "cluster_problems",
    "find_config",
    "load_settings",
]
