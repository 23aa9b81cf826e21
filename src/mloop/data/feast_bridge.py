"""The Feast side of mloop's feature joins: a script run by the Python that has Feast installed.

No Feast release installs beside mloop's pinned core: every release since 0.35 requires
``pandas<3`` (mloop pins pandas 3), 0.66 and 0.67 also ``prometheus_client<0.25`` and their ``redis``
extra ``redis<8``. Feast therefore lives in an interpreter of its own (``make .venv-feast``), and this
file is the whole of what runs there: it imports only the standard library, Feast and pandas — never
mloop — so it runs by path (``python feast_bridge.py REPO``) in that interpreter. When Feast *is*
importable beside mloop (a future release), :mod:`mloop.data.feast_source` imports this module and
calls :func:`handle` in-process instead; both ways run the same code.

The protocol is one JSON object per line on stdin, one answer per line on stdout:

* ``{"op": "describe", "service": S}`` → the service's features (``name``, ``view``), its entity
  keys and their Feast types (``key_types``: ``Int64``, ``String``, ...);
* ``{"op": "online", "service": S, "entities": {key: [values]}}`` → ``values`` (feature → list, one
  per row) and ``found`` (per row: did the online store hold any feature of the row's entity);
* ``{"op": "historical", "service": S, "entities_path": P, "out_path": Q, "timestamp_column": T}`` →
  reads the entity rows (Parquet), joins the service's features point-in-time (Feast's
  ``get_historical_features``) and writes them to ``out_path`` (Parquet), in the entity rows' order.

Every answer has ``ok``; a failure is ``{"ok": false, "error": "Type: message"}`` and the loop goes on.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["HANDLERS", "describe", "handle", "historical", "main", "online", "open_store"]

_ROW = "__mloop_row__"


def _service(store: Any, name: str) -> Any:
    return store.get_feature_service(name)


def describe(store: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The features of a feature service and the join keys of its feature views' entities."""
    service = _service(store, request["service"])
    features: list[dict[str, Any]] = []
    join_keys: list[str] = []
    key_types: dict[str, str] = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        for key in view.join_keys:
            if key not in join_keys:
                join_keys.append(key)
        for column in view.entity_columns:
            key_types[column.name] = str(column.dtype)
        for feature in projection.features:
            features.append({"name": feature.name, "view": projection.name, "dtype": str(feature.dtype)})
    return {
        "ok": True,
        "project": store.project,
        "features": features,
        "join_keys": join_keys,
        "key_types": key_types,
    }


def online(store: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One online lookup for every row of ``entities`` (Feast reads the online store once per view)."""
    entities: dict[str, list[Any]] = request["entities"]
    n = len(next(iter(entities.values()))) if entities else 0
    rows = [{key: values[i] for key, values in entities.items()} for i in range(n)]
    response = store.get_online_features(
        features=_service(store, request["service"]), entity_rows=rows, full_feature_names=False
    )
    # A row whose every feature is null is an entity the online store does not hold: Feast 0.67's
    # Redis reader reports such rows PRESENT with null values, so the statuses cannot tell.
    values = response.to_dict()
    features = {k: v for k, v in values.items() if k not in entities}
    found = [any(column[i] is not None for column in features.values()) for i in range(n)]
    return {"ok": True, "values": features, "found": found}


def historical(store: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Point-in-time features for the entity rows in ``entities_path``, written to ``out_path``."""
    import pandas as pd

    frame = pd.read_parquet(request["entities_path"])
    column = request["timestamp_column"]
    entity_df = frame.rename(columns={column: "event_timestamp"})
    entity_df[_ROW] = range(len(entity_df))
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    job = store.get_historical_features(
        entity_df=entity_df, features=_service(store, request["service"]), full_feature_names=False
    )
    joined = job.to_df().sort_values(_ROW).reset_index(drop=True)
    features = [c for c in joined.columns if c not in entity_df.columns]
    joined[features].to_parquet(request["out_path"], index=False)
    return {"ok": True, "features": features, "rows": len(joined)}


HANDLERS = {"describe": describe, "online": online, "historical": historical}


def handle(store: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request; every failure becomes ``{"ok": false, "error": ...}``."""
    try:
        handler = HANDLERS[request.get("op", "")]
    except KeyError:
        known = ", ".join(sorted(HANDLERS))
        return {
            "ok": False,
            "error": f"KeyError: unknown op {request.get('op')!r}; known: {known}",
        }
    try:
        return handler(store, request)
    except Exception as exc:  # the caller raises it as mloop's error, with this text
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def open_store(repo: str) -> Any:
    """Feast's ``FeatureStore`` over the feature repo at ``repo``."""
    from feast import FeatureStore

    return FeatureStore(repo_path=repo)


def main(argv: list[str]) -> int:
    """Serve requests on stdin until it closes (``argv[1]`` is the feature repo)."""
    # Answers go to the real stdout; anything Feast prints goes to stderr and cannot garble them.
    out, sys.stdout = sys.stdout, sys.stderr
    try:
        store = open_store(argv[1])
        hello: dict[str, Any] = {"ok": True, "ready": True}
    except Exception as exc:
        hello = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(hello) + "\n")
    out.flush()
    if not hello["ok"]:
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        answer = handle(store, json.loads(line))
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
