"""The typed settings tree, one section per capability.

Every key of ``mloop.yaml`` is a field here, with its meaning in the docstring under it. Any key can
also be set from the environment as ``MLOOP_<SECTION>__<KEY>`` (for example
``MLOOP_TRACKING__URI=http://mlflow:5000``); the environment wins over the file.
Unknown keys are errors (with the closest known key suggested), never silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from mloop.config.names import check_alias, check_name

ProjectName = Annotated[str, AfterValidator(lambda v: check_name("project", v))]
ModelName = Annotated[str, AfterValidator(lambda v: check_name("model.name", v))]
AliasName = Annotated[str, AfterValidator(lambda v: check_alias("serving.alias", v))]
REMOTE_TRACKING_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
"""Tracking URI schemes of an MLflow server: its artifact root is the server's, not a local folder."""
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _check_trusted_type(value: str) -> str:
    # Exact names only: a prefix once trusted every builtin, eval included.
    if _DOTTED.fullmatch(value):
        return value
    raise ValueError(
        "model.trusted_types entries are exact dotted names of a class or function, module path "
        f"first (e.g. 'mymodels.SlowForest'); got {value!r}. Prefixes and wildcards are not supported."
    )


TrustedType = Annotated[str, AfterValidator(_check_trusted_type)]
_VERSION_REF = re.compile(r"(?:models:/)?([A-Za-z0-9][A-Za-z0-9._-]{0,61}[A-Za-z0-9]|[A-Za-z0-9])/([0-9]+)")


def _check_code_trust(value: str) -> str:
    # One registered version per entry, never an alias or a whole model: an alias moves, a model
    # gains versions, and trusting either would trust code nobody has looked at yet.
    match = _VERSION_REF.fullmatch(value.strip())
    if match:
        return f"{match.group(1)}/{int(match.group(2))}"
    raise ValueError(
        "model.trust_code_of entries name one registered version as '<model name>/<version number>' "
        f"(e.g. 'churn/3', or 'models:/churn/3'); got {value!r}. Aliases and whole models are not "
        "accepted: an alias moves, a model gains versions."
    )


CodeTrust = Annotated[str, AfterValidator(_check_code_trust)]


class Section(BaseModel):
    """Base of every section: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSettings(Section):
    """Where training data comes from."""

    uri: str = "data/train.csv"
    """A path (``.csv``, ``.parquet``/``.pq``), an ``http(s)://`` URL returning CSV or JSON, a SQLAlchemy
    URL (``postgresql://…``, ``sqlite:///…``) together with ``query``, or ``synthetic://fraud``
    for the built-in generator."""
    query: str | None = None
    """SQL query to run when ``uri`` is a database URL."""
    format: Literal["auto", "csv", "parquet", "json"] = "auto"
    """Force a file format instead of guessing it from the name or the Content-Type."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Extra options passed to the reader (e.g. ``{"sep": ";"}`` for CSV, ``{"rows": 5000, "seed": 1,
    "scenario": "covariate_shift"}`` for ``synthetic://fraud``)."""
    timeout_s: float = 30.0
    """Timeout for HTTP sources, in seconds."""
    event_timestamp_column: str = "event_timestamp"
    """When ``serving.features`` names a Feast feature service, training joins its features as of each
    row's time in this column (Feast's point-in-time join), keyed by the service's entity columns."""


ContractPolicy = Literal["fail", "drop", "warn"]


class ContractSettings(Section):
    """How the data contract is enforced on every load after the first."""

    path: str | None = None
    """Contract file to enforce; by default the contract of the current champion, else inferred."""
    on_missing_column: ContractPolicy = "fail"
    """A contract column is absent from the data."""
    on_dtype: ContractPolicy = "fail"
    """A column's values cannot be read as the contract's type."""
    on_null: ContractPolicy = "drop"
    """A non-nullable column has missing values."""
    on_range: ContractPolicy = "warn"
    """A numeric value lies outside the range seen at training (widened by ``range_tolerance``)."""
    on_category: ContractPolicy = "warn"
    """A categorical value was never seen at training."""
    on_empty: ContractPolicy = "fail"
    """The data has no rows (``drop`` and ``warn`` are treated as ``fail``: nothing to train on)."""
    range_tolerance: float = 0.0
    """Share of the training range by which a numeric value may exceed it before it counts as out of range."""
    max_categories: int = 200
    """A string column with more distinct values than this is not a category column (no allowed-values
    rule)."""


class OnnxExportSettings(Section):
    """The ONNX copy of each trained version (``model.onnx``; needs ``pip install 'mloop[onnx]'``)."""

    export: bool = True
    """Convert the fitted pipeline to ONNX after training and verify it on the holdout; a model the
    converters cannot handle is recorded as ``not available`` and training goes on (docs/onnx.md)."""
    max_abs_diff: float = Field(default=1e-3, ge=0)
    """Largest absolute difference of a class probability between the copy and the pipeline on the
    holdout; beyond it the copy is refused. Not zero: ONNX Runtime sums trees and layers in float32
    (differences around 1e-7 to 1e-5)."""
    min_label_agreement: float = Field(default=0.99, ge=0, le=1)
    """Smallest share of holdout rows whose predicted class the copy must reproduce (a tied vote may
    break either way)."""
    max_rel_diff: float = Field(default=1e-3, ge=0)
    """Regression: largest difference of a prediction, in standard deviations of the predictions."""


class ModelSettings(Section):
    """What model to train."""

    name: ModelName = "model"
    """Registered model name in MLflow: 1-63 letters, digits, ``-``, ``_`` or ``.``, starting and ending
    with a letter or digit (see :mod:`mloop.config.names`)."""
    task: Literal["classification", "regression"] = "classification"
    """Classification (binary or multiclass) or regression."""
    target: str = "label"
    """Target column."""
    estimator: str = "hist_gradient_boosting"
    """Built-in name (``logistic``, ``linear``, ``random_forest``, ``hist_gradient_boosting``,
    ``xgboost``, ``lightgbm``) or ``module:function`` returning a scikit-learn-compatible estimator."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the estimator."""
    features: list[str] | None = None
    """Columns to use as features; by default every column but the target and ``drop_columns``."""
    drop_columns: list[str] = Field(default_factory=list)
    """Columns that are never features (ids, timestamps used only for splitting)."""
    seed: int = 42
    """Random seed for splits, estimators and tuning."""
    trusted_types: list[TrustedType] = Field(default_factory=list)
    """Exact names (``mymodels.SlowForest``) of your own classes or functions that a saved model may
    hold. scikit-learn, XGBoost and LightGBM estimators and numpy/scipy data types are trusted
    already; any other type or function in a model file refuses the load until it is listed here
    (code-running builtins such as ``builtins.eval`` never load). The PyTorch module class a saved
    network is rebuilt from (``train.MLP``) is listed here too (docs/pytorch.md). See docs/security.md."""
    trust_code_of: list[CodeTrust] = Field(default_factory=list)
    """Registered versions (``<model name>/<version>``) whose model files may run code when loaded:
    custom ``mlflow.pyfunc`` models (cloudpickle), PyTorch pickles, pickled scikit-learn models.
    Every other format that is not skops or ONNX is refused until its version is listed here; each
    load under this opt-in is recorded (a ``model.code_trusted`` event and a version tag). See
    docs/security.md and docs/models.md."""
    onnx: OnnxExportSettings = Field(default_factory=OnnxExportSettings)
    """The ONNX copy exported and verified at training (see docs/onnx.md)."""


class SplitSettings(Section):
    """How the holdout is cut."""

    strategy: Literal["random", "stratified", "time"] = "stratified"
    """``stratified`` keeps class shares (classification only), ``time`` holds out the latest rows."""
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of rows in the holdout."""
    time_column: str | None = None
    """Column ordering rows in time, required by ``strategy: time``."""


class TuningSettings(Section):
    """Hyperparameter search with Optuna."""

    trials: int = 0
    """Number of trials; 0 disables tuning (``mloop train --tune N`` overrides)."""
    storage: str | None = None
    """Optuna storage URL; by default ``sqlite:///.mloop/optuna.db``. A Postgres URL lets several
    workers share one study."""
    study: str | None = None
    """Study name; by default ``<model name>-tuning``."""
    metric: str | None = None
    """Metric to optimise; by default ``roc_auc`` (binary), ``f1_macro`` (multiclass) or ``rmse``."""
    timeout_s: float | None = None
    """Stop tuning after this many seconds."""
    cv_folds: int = 3
    """Cross-validation folds inside the training split for each trial (pruning happens per fold)."""
    space: dict[str, Any] = Field(default_factory=dict)
    """Search space overrides: ``{param: [low, high]}`` (int/float ranges, ``log: true`` via
    ``{low, high, log}``) or ``{param: [choice, …]}`` for categorical choices."""


class TrainingSettings(Section):
    """What ``mloop train`` records of the data each run trained on (docs/data-versions.md)."""

    snapshot: Literal["always", "auto", "never"] = "auto"
    """Keep the training frame as Parquet among the run's MLflow artifacts (``data/<hash>.parquet``,
    once per data hash), so ``mloop train --data-version HASH`` can train on it again: ``always``,
    ``auto`` (up to ``snapshot_max_mb``) or ``never``. Without a snapshot the hash, rows, source and
    file time are still recorded (and the DVC revision, for a DVC-tracked file)."""
    snapshot_max_mb: float = Field(default=200.0, gt=0)
    """With ``snapshot: auto``, frames larger than this in memory (MB) are not snapshotted."""
    dvc_command: str = "dvc"
    """The DVC command (found on PATH, or a path, e.g. ``.venv-dvc/bin/dvc``) that fetches a DVC-tracked
    source at another git revision for ``--data-version REV``; mloop never imports DVC."""


class GateSettings(Section):
    """Rules a new version must pass to become ``challenger``."""

    thresholds: dict[str, float] = Field(default_factory=dict)
    """Minimum (or, for error metrics such as rmse/mae/log_loss, maximum) holdout metric values,
    e.g. ``{roc_auc: 0.8}``."""
    beat_champion_metric: str | None = None
    """Metric compared with the champion on the same holdout; by default the tuning metric."""
    min_improvement: float = 0.0
    """The challenger must beat the champion by at least this much on ``beat_champion_metric``
    (negative allows a small loss)."""
    promote_first: bool = True
    """The first version that passes becomes ``champion`` directly."""


class TrackingSettings(Section):
    """MLflow: the system of record."""

    uri: str | None = None
    """MLflow tracking URI; by default ``sqlite:///<home>/mlflow.db``."""
    artifact_location: str | None = None
    """Artifact root for new experiments. By default ``<home>/artifacts`` when MLflow is local
    (``uri`` unset, ``sqlite:``, ``file:`` or a path); with a tracking server (``http(s)://``,
    ``databricks``) the server's own root — proxied ``mlflow-artifacts:/`` or its S3 bucket — so that
    every process of a cluster reads what any other wrote."""
    experiment: str | None = None
    """Experiment name; by default the model name."""


class StoreSettings(Section):
    """The platform store (runtime state: events, deployments, rollouts, feedback)."""

    url: str | None = None
    """SQLAlchemy URL; by default ``sqlite:///<home>/mloop.db``. Use ``postgresql+psycopg://…``
    when several processes or machines share state."""


def _key_list(value: Any) -> Any:
    """Keys as a list: a comma-separated string (how an environment variable carries several) is split."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list):
        keys = [k.strip() if isinstance(k, str) else k for k in value]
        for k in keys:
            if not isinstance(k, str) or not k.isprintable() or " " in k:
                raise ValueError(
                    "each key must be a string of printable characters without spaces; got a value of "
                    f"type {type(k).__name__} (the key itself is not shown)"
                )
        return [k for k in keys if k]
    return value


KeyList = Annotated[list[str], BeforeValidator(_key_list)]


class KeySettings(Section):
    """Keys of the HTTP API, per role (see ``docs/security.md``). A role with no key is open, except
    ``admin``, whose routes are disabled without one. Several keys per role are accepted at once, so
    a key is rotated without downtime: add the new one, move the clients, remove the old one.

    Set them from the environment (``MLOOP_SERVING__KEYS__PREDICT=k1,k2``) or from files (``dir``), not
    in ``mloop.yaml``; ``mloop deploy`` takes them from a Secret."""

    predict: KeyList = Field(default_factory=list)
    """Keys that may call ``/predict``, ``/invocations`` and v2 inference."""
    feedback: KeyList = Field(default_factory=list)
    """Keys that may send labels to ``/feedback``."""
    read: KeyList = Field(default_factory=list)
    """Keys that may read status, model details and the OpenAPI schema (it shows the contract)."""
    admin: KeyList = Field(default_factory=list)
    """Keys of ``/admin/*`` (reload, rollouts); an admin key is also accepted on every other route."""
    dir: str | None = None
    """Directory holding one file per role (``predict``, ``feedback``, ``read``, ``admin``) with one key
    per line, e.g. a Kubernetes Secret or Docker secrets mounted as files; added to the keys above."""


class ServingSettings(Section):
    """``mloop serve``."""

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8000
    """Port to bind."""
    workers: int = 1
    """Worker processes; each loads its own copy of the model."""
    alias: AliasName = "champion"
    """Alias of the registered model to serve (letters, digits, ``-``, ``_``)."""
    max_batch_rows: int = 64
    """Largest number of rows grouped into one model call."""
    max_wait_ms: float = 2.0
    """Longest a request waits for others to join its batch."""
    max_queue: int | None = Field(default=None, ge=1)
    """Rows admitted and not yet answered beyond which requests get 503 with Retry-After, refused before
    their body is read. None (default) sizes it from the measured throughput: rows per second times
    ``latency_budget_ms``."""
    latency_budget_ms: float = Field(default=1000.0, gt=0)
    """Longest an admitted request should wait under overload; sizes the queue when ``max_queue`` is
    None. Requests whose estimated work does not fit are refused at once (503, Retry-After)."""
    max_request_rows: int = 10000
    """Most rows accepted in one request (413 above)."""
    max_body_bytes: int = 10_000_000
    """Largest request body accepted (413 above)."""
    max_header_bytes: int = Field(default=65_536, ge=1024)
    """Largest request line plus headers accepted (431 above, and the connection is closed)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a client may take to send a request's line and headers (408, connection closed)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Longest a client may take to send a request's body once its headers arrived (connection closed)."""
    refusal_hold_ms: float = Field(default=250.0, ge=0)
    """Longest a 503 refused under overload is held before it is sent: the estimated time for the
    admitted work to drain, at most this. Paces clients that retry at once (each refusal's body still
    has to be read past); 0 sends refusals at once."""
    poll_interval_s: float = 10.0
    """How often the alias is checked for a new version (0 disables polling)."""
    cold_start_wait_s: float = Field(default=60.0, ge=0)
    """AWS Lambda (``mloop deploy lambda``): longest the first event of an execution environment waits
    for the model to load before it is answered; later requests get 503 until it is loaded."""
    keys: KeySettings = Field(default_factory=KeySettings)
    """Keys per role: ``predict``, ``feedback``, ``read``, ``admin`` (``Authorization: Bearer <key>``)."""
    admin_token: str | None = None
    """An admin key (also from ``MLOOP_ADMIN_TOKEN``); the same as one entry of ``keys.admin``."""
    api_key: str | None = None
    """Deprecated: use ``keys.predict`` and ``keys.feedback``. A key accepted on the prediction routes and
    ``/feedback`` (as a bearer token or the old ``X-API-Key`` header)."""
    max_feedback_bytes: int = Field(default=1_000_000, ge=1)
    """Largest ``/feedback`` body accepted (413 above); about 20,000 labels."""
    max_feedback_items: int = Field(default=10_000, ge=1)
    """Most labels accepted in one ``/feedback`` request (413 above)."""
    feedback_max_age_days: float = Field(default=90.0, gt=0)
    """How far back ``/feedback`` looks for the prediction a label names; older ids are unknown (404)."""
    unseen_category: Literal["reject", "flag"] = "flag"
    """Unseen categorical values: reject with 422, or accept and flag in the response and log."""
    out_of_range: Literal["reject", "flag"] = "flag"
    """Numeric values outside the training range: reject with 422, or accept and flag."""
    model_threads: int | None = 1
    """Threads one model call may use (sets every ``n_jobs`` parameter of the loaded pipeline, and a
    PyTorch step's ``threads``); None keeps the model's own setting. Micro-batching already amortises
    a call over many rows, and parallel tree evaluation on a handful of rows costs more in thread
    hand-offs than it saves."""
    onnx: Literal["auto", "off", "require"] = "off"
    """Serve through ONNX Runtime: ``auto`` when the version carries a verified ONNX copy and it answers
    the warm-up batch faster than the compiled tree path or scikit-learn (measured at load, on this
    host); ``require`` always, refusing to load a version without a verified copy; ``off`` (default)
    never. Off by default because the copy computes in float32: its probabilities match the model's
    within the version's tolerance, not bit for bit as the other paths do. See docs/onnx.md."""
    features: str | None = None
    """A Feast feature service (docs/features.md): a request carries its entity keys (e.g.
    ``customer_id``) and the request-time columns, and the service's features are read from the Feast
    online store, one lookup per micro-batch, and joined before the row is validated and predicted.
    Training joins the same features point-in-time from the offline store
    (``source.event_timestamp_column``). None (default): requests carry every feature."""
    feature_repo: str = "feature_repo"
    """The Feast feature repo (the folder with ``feature_store.yaml``), relative to the project."""
    feast_python: str | None = None
    """The Python that runs Feast (Feast cannot be installed beside mloop's pandas 3): by default this
    one when it imports ``feast``, else ``.venv-feast/bin/python`` (``make .venv-feast``)."""
    missing_entity: Literal["reject", "default"] = "reject"
    """A request whose entity the online store does not hold: ``reject`` (422 naming the entity), or
    ``default``: take ``feature_defaults`` (features without a default stay missing values)."""
    feature_defaults: dict[str, Any] = Field(default_factory=dict)
    """Values of served features for an entity the online store does not hold (``missing_entity:
    default``), e.g. ``{"txn_count_24h": 0}``."""


class PredictionLogSettings(Section):
    """Where predictions are logged for monitoring."""

    url: str | None = None
    """``file://<dir>`` for Parquet segments (default ``<home>/predictions``); for a log shared by
    replicas, ``s3://bucket/prefix`` for the same segments on S3-compatible object storage (options in
    the query, e.g. ``?endpoint_override=minio:9000&scheme=http``; credentials from the AWS variables)
    or a SQLAlchemy Postgres URL for one table."""
    buffer_size: int = 100_000
    """Records held in memory before new ones are dropped (and counted)."""
    flush_interval_s: float = 1.0
    """Longest a record waits in memory before it is written."""
    flush_rows: int = 5000
    """Write as soon as this many records are waiting."""
    durability: Literal["buffered", "sync"] = "buffered"
    """``buffered``: a prediction is answered while its record is in memory, so a crash (``kill -9``,
    out of memory, power loss) loses the records not yet written — up to ``flush_interval_s`` of
    traffic or ``flush_rows`` records, plus a batch being written. ``sync``: it is answered only once
    its record is fsync'd to a local write-ahead file (``wal_dir``; one fsync per group of concurrent
    requests), shipped to ``url`` afterwards and replayed at the next start, so an acknowledged
    prediction is never lost (it may be stored twice after a crash). See docs/serving.md for the cost."""
    wal_dir: str | None = None
    """Local directory of the write-ahead log in ``sync`` mode (default ``<home>/predictions-wal``);
    must not be shared between machines."""
    retention_days: float | None = Field(default=None, gt=0)
    """Predictions and their ``/feedback`` labels older than this many days are deleted by the loop
    leader (``mloop run``) once per ``control.monitor_interval_s``; None (default) keeps everything."""


class MonitoringSettings(Section):
    """Drift and live quality."""

    window_rows: int = 5000
    """Rows of the prediction log compared with the reference by default."""
    interval_s: float = 60.0
    """How often the server runs a monitoring cycle in the background (drift, live quality, alerts,
    Prometheus gauges); ``0`` turns the background loop off (``mloop monitor`` from cron still works)."""
    drift_share: float = 0.5
    """Share of drifted columns at which the dataset counts as drifted."""
    fdr: float = 0.05
    """False-discovery rate for the dataset-level verdict (Benjamini-Hochberg)."""
    reports_dir: str | None = None
    """Where HTML/JSON reports go; by default ``<home>/reports``."""
    alerts: list[dict[str, Any]] = Field(default_factory=list)
    """Alert rules (see ``mloop.monitoring.alerts``)."""
    min_labelled_rows: int = Field(default=30, ge=1)
    """Labelled predictions (``/feedback``) a window needs before live quality metrics are computed;
    fewer labels are reported as a count only, so quality alerts do not fire on noise."""
    estimate_min_rows: int = Field(default=100, ge=1)
    """Predictions with class probabilities (or numeric predictions) a window needs before its quality
    is estimated without labels (CBPE-style for classifiers, error bins for regressors; see
    docs/monitoring.md, "Estimated quality"). Fewer give no estimate."""
    multivariate: bool = True
    """Run the multivariate (domain-classifier) drift check beside the per-column tests: it sees broken
    relations between columns that no single column shows (report, gauges, ``multivariate_drift``
    alert rule)."""
    multivariate_in_verdict: bool = True
    """Let the multivariate check join the dataset verdict (``dataset_drift`` alerts and
    drift-triggered retraining): its p-value enters the Benjamini-Hochberg correction with the
    columns', and it turns the verdict only when its held-out AUC is at least
    ``multivariate_min_auc``."""
    multivariate_min_auc: float = Field(default=0.6, ge=0.5, lt=1)
    """Effect floor of the multivariate check: a window drifts jointly only when the classifier's
    held-out ROC AUC is at least this, besides being significant. Windows that repeat the same
    entities (customers, devices) are told apart from the reference with AUC 0.54-0.56 on stable
    traffic; the broken dependencies the check is for score 0.63-0.84 even at 100 rows. 0.5 turns the
    floor off (any significant difference drifts)."""
    multivariate_alpha: float = Field(default=0.01, gt=0, lt=1)
    """Significance of the multivariate check on its own (its ``drifted`` and the
    ``multivariate_drift`` alert rule); the dataset verdict uses ``fdr``."""


class RolloutSettings(Section):
    """How a new challenger reaches traffic."""

    strategy: Literal["direct", "ab", "canary", "shadow"] = "canary"
    """Default strategy for ``mloop rollout start`` and the closed loop."""
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    """Canary traffic percentages, in order."""
    min_requests_per_step: int = 200
    """Requests the canary must have seen before a step is analysed."""
    step_hold_s: float = 0.0
    """Minimum time each step is held."""
    max_wait_s: float = 3600.0
    """Longest a step waits for enough traffic before the rollout fails safe."""
    max_error_rate: float = 0.01
    """Canary error rate the canary must be shown to exceed (exact binomial bound) to be rolled back
    whatever the baseline does; a canary significantly worse than the baseline (Fisher's exact test)
    by more than ``error_rate_margin`` is rolled back too."""
    error_rate_margin: float = Field(default=0.005, ge=0.0)
    """Smallest excess of the canary's error rate over the baseline's worth a rollback."""
    max_latency_ratio: float = Field(default=1.5, gt=1.0)
    """The canary is rolled back only if it is significantly slower than this many times the
    baseline *and* than the baseline plus ``latency_margin_ms`` (see docs/rollouts.md)."""
    latency_margin_ms: float = Field(default=10.0, ge=0.0)
    """Absolute latency margin (ms) the canary must exceed, on top of ``max_latency_ratio``."""
    latency_quantile: float = Field(default=0.95, gt=0.5, lt=1.0)
    """Upper quantile whose confidence bounds are compared (the tail test of the latency check)."""
    min_latency_samples: int = Field(default=20, ge=5)
    """Latencies (and outputs, for ``prediction_drift``) each arm needs before those checks are
    evaluated; with fewer they are "not evaluated", never passed."""
    max_prediction_drift: float = 0.2
    """Jensen-Shannon distance between the arms' outputs above which it is rolled back (when a
    chi-square test also says the difference is not noise)."""
    quality_metric: Literal["auto", "accuracy", "roc_auc", "pr_auc", "f1", "rmse", "mae"] = "auto"
    """Metric the canary's live quality is compared on; ``auto``: the gate's metric
    (``gates.beat_champion_metric``, else ``tuning.metric``, else ``roc_auc`` for binary classifiers,
    ``accuracy`` for multiclass, ``rmse`` for regressors)."""
    max_quality_drop: float = 0.05
    """Non-inferiority margin of live quality: the canary is verified when the confidence interval of
    (canary - baseline) on ``quality_metric`` shows it is at most this much worse (a relative increase
    for ``rmse``/``mae``); it is rolled back when the interval shows it is worse at all by more than
    half of this."""
    false_rollback_rate: float = Field(default=0.01, gt=0.0, lt=0.5)
    """Chance of rolling back a canary as good as the baseline, over the whole rollout: split between
    the checks (Bonferroni) and spent over the looks (alpha spending), see docs/rollouts.md."""
    label_wait_s: float = Field(default=3600.0, ge=0.0)
    """Before its traffic reaches 100 % (or promotion), a canary whose quality could not be evaluated
    yet waits this long for labels (state ``awaiting_labels``), then follows ``unlabelled_policy``."""
    unlabelled_policy: Literal["hold", "rollback", "promote_unverified"] = "hold"
    """What to do when ``label_wait_s`` passed without enough labels: ``hold`` keeps the canary at its
    weight until labels arrive or an operator decides; ``rollback``; ``promote_unverified`` promotes
    and records the rollout as ``promoted_unverified`` (verified later, as labels arrive)."""
    estimated_quality_check: bool = True
    """While the arms have fewer than ``min_labelled`` labels, compare their quality *estimated* from
    the logged probabilities (each version's calibrated estimator): a canary estimated clearly worse
    is rolled back before labels arrive (check ``estimated_quality``). An estimate never verifies
    quality; the label gate still waits for labels."""
    verify_interval_s: float = Field(default=60.0, gt=0)
    """How often a ``promoted_unverified`` rollout is looked at again for its labels (by the serving
    process holding the rollout lease, and by the loop's leader): once enough have arrived, the
    promotion is verified (``promoted``) or rolled back on the quality check."""
    bootstrap_resamples: int = Field(default=400, ge=50)
    """Bootstrap resamples for quality intervals of metrics without a closed-form variance."""
    shadow_share: float = 1.0
    """Share of requests copied to the shadow arm."""
    routing_key: str | None = None
    """Header or request field whose hash makes A/B assignment sticky."""
    refresh_s: float = 2.0
    """How often each serving process re-reads the traffic split from the store."""
    ab_weights: list[float] | None = None
    """A/B traffic weights, champion first then each challenger; equal shares when unset."""
    ab_min_effect: float = 0.05
    """Smallest difference of the compared metric (accuracy, or mean absolute error for regressors)
    an A/B test must be able to detect; sets the minimum labelled sample per arm."""
    confidence: float = 0.95
    """Confidence level of A/B tests and their intervals (significance level = 1 - confidence)."""
    power: float = 0.8
    """Statistical power used for the A/B minimum sample size."""
    min_labelled: int = 50
    """Labelled predictions each arm needs before live quality is compared (canary check, A/B test);
    ROC and PR AUC also need at least 5 labels of each class in each arm."""
    auto_advance: bool = True
    """Serving processes drive canary steps themselves: the one holding the store lease runs one
    analysis every ``refresh_s``. Turn off when ``mloop run`` or ``mloop rollout status --watch`` drives."""


class ControlSettings(Section):
    """The closed loop (``mloop run``)."""

    schedule: str | None = None
    """Cron expression for scheduled retraining (e.g. ``0 3 * * *``)."""
    retrain_on_drift: bool = True
    """Retrain when a drift alert fires."""
    retrain_on_quality: bool = True
    """Retrain when live quality falls below the alert threshold."""
    retrain_on_estimated_quality: float | None = None
    """Retrain when the quality *estimated without labels* of a monitoring window is worse than this
    value on the version's gate metric (``evaluation.json``'s metric, e.g. ``roc_auc``; for ``rmse``
    and ``mae`` worse means above). It fires only when the whole confidence interval is on the wrong
    side, so one noisy window does not retrain. None (default): off. The estimate cannot see a change
    of P(y|x) with unchanged inputs; ``retrain_on_quality`` catches that once labels arrive."""
    watch_source: bool = False
    """Retrain when the source has new data."""
    max_retrains: int = 3
    """At most this many retrains per ``retrain_period_s``."""
    retrain_period_s: float = 86400.0
    """Period for ``max_retrains``."""
    backoff_s: float = 60.0
    """First wait after a failed training; doubles on each failure."""
    approval: Literal["auto", "manual"] = "auto"
    """``manual``: a passing challenger waits for ``mloop approve VERSION``."""
    dry_run: bool = False
    """Record what the loop would do, without doing it."""
    interval_s: float = 5.0
    """How often the loop checks its triggers."""
    monitor_interval_s: float = 60.0
    """How often the loop runs a monitoring cycle (drift and quality alerts are its triggers)."""
    retrain_data: Literal["auto", "source", "recent", "both"] = "auto"
    """What a triggered retraining trains on: the configured ``source``, the ``recent`` labelled traffic
    (prediction log joined with /feedback labels), ``both``, or ``auto`` (recent if at least
    ``min_recent_rows`` labelled rows exist, else the source)."""
    recent_rows: int = 20_000
    """Most recent labelled rows used when training on recent traffic."""
    min_recent_rows: int = 300
    """Fewest labelled rows for ``retrain_data: recent`` to be used."""
    retrain_after_alert: bool = True
    """After a drift or quality alert, train on recent traffic served *since the alert fired* only:
    rows from before it follow the pattern the alert says is gone, and would let the retrained model
    lose the gate to the champion on a holdout made mostly of old rows."""
    label_wait_s: float = 3600.0
    """With ``retrain_after_alert``, how long a cycle waits in ``triggered`` for ``min_recent_rows``
    labelled rows served since the alert; after that it uses all recent rows (or, with ``auto``, the
    source if there are too few)."""
    training_timeout_s: float = 3600.0
    """A training subprocess running longer than this is killed and the cycle fails."""
    training_nice: int = Field(default=10, ge=0, le=19)
    """Niceness of the training subprocess (0 = same priority as serving, 19 = lowest). Serving beside
    the loop (``mloop run``) keeps its latency while a retraining uses every core: the scheduler gives
    the training only the CPU time serving leaves idle."""
    training_threads: int | None = Field(default=None, ge=1)
    """Threads the training subprocess may use for its numeric libraries (OpenMP, BLAS; sets
    ``OMP_NUM_THREADS`` and friends). Default: all cores but one, at least one, so serving always
    keeps a core while a retraining runs."""
    lease_ttl_s: float = Field(default=60.0, gt=0)
    """How long the loop leader's lease (``loop:<model>`` in the store) lasts without being renewed;
    the leader renews it on every tick (``interval_s``, so keep this at 3 intervals or more), and a
    standby ``mloop run`` takes over at most this long after the leader died."""


class BatchSettings(Section):
    """``mloop batch-predict``: offline scoring of files, tables and queries."""

    model: str = "@champion"
    """Version to score with: an alias (``@champion``), a version number (``3``), or
    ``NAME@alias``/``NAME/3`` for another registered model."""
    engine: Literal["local", "spark"] = "local"
    """``local`` scores chunk by chunk on this machine; ``spark`` runs the model on a Spark cluster."""
    chunk_rows: int = Field(default=100_000, ge=1)
    """Rows per chunk (local engine): memory use is about ``workers + 2`` chunks, whatever the input size."""
    workers: int | None = None
    """Processes scoring chunks in parallel (local engine); by default one per CPU core. Each worker
    runs its model single-threaded, so workers do not fight over cores."""
    log_sample: float = Field(default=0.01, ge=0.0, le=1.0)
    """Share of scored rows sent to the prediction log (``arm: batch``), so monitoring sees batch traffic."""
    log_max_rows: int = Field(default=20_000, ge=0)
    """At most this many sampled rows per job go to the prediction log (a drift window needs thousands,
    not millions)."""
    spark_master: str = "local[*]"
    """Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://…``) for ``engine: spark``."""
    spark_conf: dict[str, str] = Field(default_factory=dict)
    """Extra Spark configuration, e.g. ``{"spark.executor.memory": "4g"}``."""


class StreamSettings(Section):
    """``mloop stream``: score events from a stream and write results to another."""

    source: str | None = None
    """Stream to consume: ``redis://host:port/db?stream=NAME&group=G`` or ``kafka://host:port/topic?group=G``."""
    sink: str | None = None
    """Where results go, same URL forms (``stream=``/topic is the result stream)."""
    dead_letter: str | None = None
    """Stream for malformed or invalid events with the reason; by default ``<source stream>.dead``."""
    model: str = "@champion"
    """Version to score with (same forms as ``batch.model``)."""
    batch_size: int = Field(default=256, ge=1)
    """Most events read and scored together."""
    block_ms: int = Field(default=1000, ge=1)
    """Longest a read waits for new events."""
    max_in_flight: int = Field(default=1024, ge=1)
    """Events read but not yet acknowledged, at most (backpressure: reading pauses above it)."""
    claim_idle_ms: int = Field(default=60_000, ge=1)
    """Pending events of another consumer idle this long are claimed (Redis) — a crashed consumer's work."""
    dedupe_ttl_s: int = Field(default=86_400, ge=1)
    """How long a sink remembers source ids it already wrote, so a replay does not duplicate results
    (only used when source and sink are not the same Redis, where write and acknowledge are atomic)."""
    log_sample: float = Field(default=0.01, ge=0.0, le=1.0)
    """Share of scored events sent to the prediction log (``arm: stream``)."""


class Settings(Section):
    """The whole project configuration (``mloop.yaml``)."""

    project: ProjectName = "mloop-project"
    """Project name, used in generated files and Kubernetes object names: 1-63 letters, digits, ``-``,
    ``_`` or ``.``, starting and ending with a letter or digit (see :mod:`mloop.config.names`)."""
    home: str = ".mloop"
    """Directory of embedded state, relative to the project directory."""
    cluster: bool = False
    """This process is one of several (serving replicas, loop leader and standby; the generated
    manifests set ``MLOOP_CLUSTER=1``). It then refuses local-only state at start — a SQLite store,
    a local-file prediction log, a local MLflow or artifact root — because the other processes could
    not see it (see docs/deploy.md)."""
    source: SourceSettings = Field(default_factory=SourceSettings)
    contract: ContractSettings = Field(default_factory=ContractSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gates: GateSettings = Field(default_factory=GateSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    prediction_log: PredictionLogSettings = Field(default_factory=PredictionLogSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)

    # Not a key of mloop.yaml: the directory the file was read from (set by the loader).
    root: Path = Field(default_factory=Path.cwd, exclude=True)

    # ---- derived locations -------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        """Absolute directory of embedded state."""
        home = Path(self.home)
        return home if home.is_absolute() else (self.root / home)

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def tracking_is_remote(self) -> bool:
        """Whether MLflow is a server (``http(s)://``, ``databricks``) rather than a local store."""
        scheme = self.tracking_uri.partition(":")[0].lower()
        return scheme in REMOTE_TRACKING_SCHEMES

    @property
    def artifact_location(self) -> str | None:
        """Artifact root for new experiments; None lets a tracking server choose its own."""
        if self.tracking.artifact_location:
            return self.tracking.artifact_location
        return None if self.tracking_is_remote else (self.home_dir / "artifacts").as_uri()

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.model.name

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.home_dir / 'mloop.db'}"

    @property
    def prediction_log_url(self) -> str:
        return self.prediction_log.url or (self.home_dir / "predictions").as_uri()

    @property
    def reports_dir(self) -> Path:
        return Path(self.monitoring.reports_dir) if self.monitoring.reports_dir else self.home_dir / "reports"

    @property
    def optuna_storage(self) -> str:
        return self.tuning.storage or f"sqlite:///{self.home_dir / 'optuna.db'}"

    def resolve_path(self, path: str) -> Path:
        """A path from the config, relative to the project directory."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p
