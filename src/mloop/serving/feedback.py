"""Ground-truth labels sent to ``/feedback``: checked against the prediction log and the model.

Labels steer monitoring, retraining and rollouts, so a label is stored only when

* it names a prediction of this model found in the prediction log (within
  ``serving.feedback_max_age_days``); unknown ids are rejected with 404;
* it fits the version that made that prediction: one of its classes for a classifier, a finite
  number for a regressor; anything else is rejected with 422 naming the id;
* the id has no label yet: the **first label of an id wins**, a later one (in the same request or
  another) is rejected with 409, so a label once recorded cannot be swayed.

Rejected items are listed with their index, id and status; the others are stored. A request may
carry at most ``serving.max_feedback_items`` labels (413 above), so a large body cannot flood the
store.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mloop.errors import PayloadTooLarge, RequestValidationError, ServingError

if TYPE_CHECKING:
    from mloop.serving.runtime import ModelRuntime
    from mloop.serving.service import PredictionService

__all__ = ["FeedbackDesk", "label_problem"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def label_problem(runtime: ModelRuntime, label: Any) -> tuple[Any, str | None]:
    """``(label as stored, None)`` when ``label`` fits ``runtime``'s model, else ``(label, why not)``.

    A classifier's label must equal one of its classes, of the same kind (``1.0`` matches class ``1``
    and is stored as ``1``; the string ``"1"`` does not); a regressor's must be a finite number.
    """
    classes = runtime.classes if runtime.task == "classification" else None
    if classes:
        for cls in classes:
            same_kind = (
                (_is_number(cls) and _is_number(label))
                or (isinstance(cls, str) and isinstance(label, str))
                or (isinstance(cls, bool) and isinstance(label, bool))
            )
            if same_kind and cls == label:
                return cls, None
        shown = ", ".join(repr(c) for c in classes[:20]) + (", ..." if len(classes) > 20 else "")
        return label, f"is not one of the classes of {runtime.name} v{runtime.version}: {shown}"
    if runtime.task == "classification":  # a classifier that does not list its classes
        if isinstance(label, str | int | bool) and not isinstance(label, float):
            return label, None
        return label, "must be a class label (a string, integer or boolean)"
    if _is_number(label) and math.isfinite(label):
        return label, None
    return label, f"must be a finite number ({runtime.name} v{runtime.version} is a regressor)"


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:80] + "..."
    return value if isinstance(value, int | float | bool) or value is None else type(value).__name__


def _reject(index: int, pid: Any, status: int, message: str) -> dict[str, Any]:
    return {"index": index, "prediction_id": _shown(pid), "status": status, "error": message}


def _shape_error(field: str, value: Any, allowed: str, problem: str | None = None) -> RequestValidationError:
    why = f" ({problem})" if problem else ""
    return RequestValidationError(
        f"Feedback field {field} is invalid: expected {allowed}; got {_shown(value)!r}{why}.",
        [
            {
                "field": field,
                "rule": "feedback",
                "received": _shown(value),
                "allowed": allowed,
                "rows": [],
                "count": 1,
            }
        ],
    )


class FeedbackDesk:
    """Receives the labels of one :class:`~mloop.serving.service.PredictionService`."""

    def __init__(self, service: PredictionService) -> None:
        self.service = service

    def _items(self, body: Any) -> list[Any]:
        items = body.get("feedback", body) if isinstance(body, Mapping) and "feedback" in body else body
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list) or not items:
            raise _shape_error(
                "body", items, 'an object {"prediction_id", "label"} or a non-empty list of them'
            )
        limit = self.service.serving.max_feedback_items
        if len(items) > limit:
            raise PayloadTooLarge(
                f"The request carries {len(items)} labels; at most {limit} are accepted per request "
                "(serving.max_feedback_items). Send them in several requests."
            )
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise _shape_error(f"[{i}]", item, 'an object {"prediction_id", "label"}')
        return items

    async def receive(self, body: Any) -> dict[str, Any]:
        """Store the acceptable labels of ``body``; ``{"received", "stored"}`` plus ``rejected`` (index,
        prediction_id, status, error per refused item) when any was refused."""
        from mloop.store.store import feedback_problem

        items = self._items(body)
        # A malformed item (an id or label no store can hold) fails the whole request and stores
        # nothing: the client has a bug to fix. A well-formed one stores what fits and lists the rest.
        for i, item in enumerate(items):
            pid, label = item.get("prediction_id"), item.get("label")
            found = feedback_problem(pid, label)
            if found is not None and found[0] == "prediction_id":
                raise _shape_error(
                    f"[{i}].prediction_id",
                    pid,
                    "the id string returned with the prediction",
                    f"the prediction_id {found[1]}",
                )
            if found is not None or isinstance(label, Mapping | list):
                problem = (
                    f"the item for {_shown(pid)!r} {found[1]}"
                    if found is not None
                    else f"the label of {_shown(pid)!r} is not a single value"
                )
                raise _shape_error(
                    f"[{i}].label", label, "the observed value (number, string or boolean)", problem
                )
        rejected: list[dict[str, Any]] = []
        chosen: dict[str, tuple[int, Any]] = {}
        for i, item in enumerate(items):
            pid, label = str(item["prediction_id"]), item["label"]
            if pid in chosen:
                rejected.append(
                    _reject(i, pid, 409, "An earlier item of this request labels this id; the first wins.")
                )
            else:
                chosen[pid] = (i, label)
        stored = 0
        if chosen:
            accepted = await self._check(chosen, rejected)
            if accepted:
                stored = await self._write(accepted, chosen, rejected)
        result: dict[str, Any] = {"received": len(items), "stored": stored}
        if rejected:
            result["rejected"] = sorted(rejected, key=lambda r: r["index"])
        return result

    async def _check(
        self, chosen: dict[str, tuple[int, Any]], rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Labels of ids found in the prediction log that fit their version: id -> label to store."""
        service = self.service
        versions = await self._versions(list(chosen))
        accepted: dict[str, Any] = {}
        for pid, (i, label) in chosen.items():
            version = versions.get(pid)
            if version is None:
                rejected.append(
                    _reject(
                        i,
                        pid,
                        404,
                        f"No prediction {pid!r} of model {service.model_name!r} in the prediction log "
                        f"(last {service.serving.feedback_max_age_days:g} days); send the id a prediction "
                        "returned.",
                    )
                )
                continue
            runtime = service.runtime_of(version)
            if runtime is None:
                raise ServingError("No model is loaded yet, so labels cannot be checked; retry when /ready.")
            value, problem = label_problem(runtime, label)
            if problem is not None:
                rejected.append(_reject(i, pid, 422, f"The label {_shown(label)!r} of {pid!r} {problem}."))
            else:
                accepted[pid] = value
        return accepted

    async def _versions(self, ids: list[str]) -> dict[str, str]:
        logger = self.service.logger
        if logger is None:
            return {}
        backend = logger.backend
        model = self.service.model_name
        since = datetime.now(UTC) - timedelta(days=self.service.serving.feedback_max_age_days)
        found = await asyncio.to_thread(backend.versions, ids, model_name=model, since=since)
        missing = [i for i in ids if i not in found]
        if missing:
            # The prediction may still wait in this process's buffer, or be in a write under way:
            # flush (which waits for that write) and look again.
            await asyncio.to_thread(logger.flush)
            found.update(await asyncio.to_thread(backend.versions, missing, model_name=model, since=since))
        return found

    async def _write(
        self, accepted: dict[str, Any], chosen: dict[str, tuple[int, Any]], rejected: list[dict[str, Any]]
    ) -> int:
        store = await self.service._store()
        # One atomic insert-if-absent: of two labels for one id, from any processes, the first wins.
        stored = set(
            await asyncio.to_thread(store.add_first_feedback, list(accepted.items()), self.service.model_name)
        )
        for pid in accepted:
            if pid not in stored:
                rejected.append(
                    _reject(chosen[pid][0], pid, 409, "This prediction already has a label; the first wins.")
                )
        return len(stored)
