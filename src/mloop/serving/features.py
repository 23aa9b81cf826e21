"""Join a Feast feature service's online features onto requests: one lookup per micro-batch.

With ``serving.features`` set, a request carries the entity keys (``customer_id``) and the
request-time columns; the service's features (``txn_count_24h``, ...) come from the Feast online
store. The seam, in order:

1. the request is decoded and validated against the contract *without* requiring the served features
   (:meth:`FeatureJoiner.bind` gives each runtime such a request validator): a malformed request is
   refused before any lookup, as before;
2. its rows queue in the joiner's own :class:`~mloop.serving.batcher.MicroBatcher`: concurrent requests
   share **one** online lookup (one bridge call, one Redis pipeline per feature view) per micro-batch;
3. the joined rows are validated against the *full* contract (so the contract covers the joined row:
   a served value out of range is flagged or refused like a sent one), then go to the model's batcher;
   the prediction log records the joined row, so drift sees the features.

Why a batcher of its own rather than the lookup inside the model's batch call: a request whose
entity is missing must fail alone with a 422 before it reaches the model batch (the model batcher
answers a failed batch by re-running each request, which would repeat the lookup per request), and
the model's batcher keeps its inline fast path for compiled models untouched. Without
``serving.features`` none of this exists: the service's hot path is the one it always was.

A row whose entity the online store does not hold is refused (422 naming the entity key and value),
or with ``serving.missing_entity: default`` gets ``serving.feature_defaults``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

from mloop.config import Settings
from mloop.data.feast_source import FeastClient, FeatureService, feast_python
from mloop.data.schema import ColumnSpec, DataContract, Dtype
from mloop.errors import RequestValidationError, ServingError
from mloop.serving.batcher import MicroBatcher
from mloop.serving.validation import MISSING, Columns, ContractValidator

__all__ = ["FeatureJoiner", "OnlineFeatures", "Served"]

log = logging.getLogger(__name__)

_Joined = dict[str, list[Any]] | RequestValidationError


class OnlineFeatures(Protocol):
    """What the joiner needs of a feature store client (:class:`~mloop.data.feast_source.FeastClient`)."""

    def online(
        self, service: str, entities: dict[str, list[Any]]
    ) -> tuple[dict[str, list[Any]], list[bool]]: ...

    def close(self) -> None: ...


class Served(Protocol):
    """What the joiner reads and sets of a :class:`~mloop.serving.runtime.ModelRuntime`."""

    name: str
    version: str
    validator: ContractValidator


# Contract types of entity keys the model's contract does not hold, from Feast's value types.
_KEY_DTYPES: dict[str, Dtype] = {"Int32": "int", "Int64": "int", "String": "string", "Bool": "bool"}


class FeatureJoiner:
    """Online features of one feature service, joined onto validated rows (see the module doc)."""

    def __init__(
        self,
        client: OnlineFeatures,
        service: FeatureService,
        *,
        missing_entity: str = "reject",
        defaults: dict[str, Any] | None = None,
        max_batch_rows: int = 64,
        max_wait_ms: float = 2.0,
    ) -> None:
        self.client = client
        self.service = service
        self.missing_entity = missing_entity
        self.defaults = dict(defaults or {})
        unknown = sorted(set(self.defaults) - set(service.features))
        if unknown:
            raise ServingError(
                f"serving.feature_defaults names {', '.join(map(repr, unknown))}, which feature service "
                f"{service.name!r} does not serve; it serves {', '.join(service.features)}."
            )
        self.lookups = 0
        """Online lookups made (one per micro-batch of requests)."""
        self.batcher: MicroBatcher[Columns, _Joined] = MicroBatcher(
            self._lookup,
            size=lambda c: c.n,
            max_batch_rows=max_batch_rows,
            max_wait_ms=max_wait_ms,
            name=f"feature service {service.name}",
        )
        self._full: weakref.WeakKeyDictionary[Served, ContractValidator] = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureJoiner | None:
        """The joiner ``serving.features`` asks for (None without it); describes the service once."""
        serving = settings.serving
        if not serving.features:
            return None
        repo = settings.root / serving.feature_repo
        client = FeastClient(repo, python=feast_python(serving.feast_python, settings.root))
        try:
            service = client.describe(serving.features)
        except Exception:
            client.close()
            raise
        log.info(
            "Joining feature service %s (%s) by %s from %s",
            service.name,
            ", ".join(service.features),
            ", ".join(service.join_keys),
            repo,
        )
        return cls(
            client,
            service,
            missing_entity=serving.missing_entity,
            defaults=serving.feature_defaults,
            max_batch_rows=serving.max_batch_rows,
            max_wait_ms=serving.max_wait_ms,
        )

    def status(self) -> dict[str, Any]:
        """What ``/ready`` says about the join: the service, its features and keys, lookups so far."""
        return {
            "service": self.service.name,
            "features": list(self.service.features),
            "entity_keys": list(self.service.join_keys),
            "lookups": self.lookups,
            "missing_entity": self.missing_entity,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        self.client.close()

    def bind(self, runtime: Served) -> None:
        """Let ``runtime`` decode requests that carry the entity keys instead of the served features;
        keep its full validator for the joined rows. Entity keys the contract lacks (dropped at
        training with ``model.drop_columns``: ids are not features) are added to the request
        contract, typed from Feast; they reach the lookup but not the model."""
        full = runtime.validator
        contract = full.contract
        extra = [
            ColumnSpec(key, _KEY_DTYPES.get(self.service.key_types.get(key, ""), "string"), False)
            for key in self.service.join_keys
            if key not in full.fields
        ]
        if extra:
            contract = DataContract((*contract.columns, *extra), contract.target, contract.task)
        needed = [c.name for c in full.checks if c.required]
        served = set(self.service.features)
        runtime.validator = ContractValidator(
            contract,
            required=[c for c in needed if c not in served] + list(self.service.join_keys),
            unseen_category=full.unseen_category,
            out_of_range=full.out_of_range,
        )
        self._full[runtime] = full

    # -- the join --------------------------------------------------------------------------------
    async def join(self, runtime: Served, columns: Columns) -> Columns:
        """``columns`` (validated without the served features) joined and validated in full."""
        result = await self.batcher.submit(columns)
        if isinstance(result, RequestValidationError):
            raise result
        joined = self._full.get(runtime, runtime.validator).from_columns(result, columns.n)
        # Entity keys the contract lacks ride along (the model never reads them): the prediction log
        # keeps them, and a shadow arm's request validator finds the keys it requires.
        for key in self.service.join_keys:
            joined.values.setdefault(key, result[key])
        return joined

    def _lookup(self, items: list[Columns]) -> list[_Joined]:
        """One online lookup for every row of ``items``; each item gets its joined columns or a 422."""
        keys = self.service.join_keys
        entities = {k: [_plain(v) for item in items for v in item.values[k]] for k in keys}
        self.lookups += 1
        # A FeatureStoreError (503) fails this batch's requests: the store, not the arm, is at fault.
        values, found = self.client.online(self.service.name, entities)
        out: list[_Joined] = []
        start = 0
        for item in items:
            stop = start + item.n
            joined: dict[str, list[Any]] = dict(item.values)
            for name in self.service.features:
                joined[name] = values[name][start:stop]
            missing = [i for i, ok in enumerate(found[start:stop]) if not ok]
            if missing and self.missing_entity == "reject":
                out.append(self._missing(item, missing))
            else:
                for name, default in self.defaults.items():
                    column = joined[name]
                    for i in missing:
                        column[i] = default
                out.append(joined)
            start = stop
        return out

    def _missing(self, item: Columns, rows: list[int]) -> RequestValidationError:
        keys = self.service.join_keys
        first = {k: _plain(item.values[k][rows[0]]) for k in keys}
        shown = ", ".join(f"{k}={v!r}" for k, v in first.items())
        return RequestValidationError(
            f"The Feast online store holds no features of {shown} (feature service "
            f"{self.service.name!r}, {len(rows)} row(s)); send a known entity, materialize its "
            "features, or set serving.missing_entity: default with serving.feature_defaults.",
            [
                {
                    "field": keys[0] if len(keys) == 1 else ",".join(keys),
                    "rule": "unknown_entity",
                    "received": first[keys[0]] if len(keys) == 1 else first,
                    "allowed": f"an entity materialized in feature service {self.service.name!r}",
                    "rows": rows[:10],
                    "count": len(rows),
                }
            ],
        )


def _plain(value: Any) -> Any:
    return None if value is MISSING else value
