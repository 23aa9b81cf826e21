"""The one error tree of mloop.

Every error mloop raises on purpose is an :class:`MloopError`. Each carries a message written for a
person (what was wrong, what was expected, how to fix it) and, where it can cross HTTP, a status code
that the server maps in one handler. Third-party failures are wrapped at the boundary with
``raise ... from exc`` so the cause stays chained.

    MloopError
    ├── ConfigError                 mloop.yaml / MLOOP_* env is invalid
    ├── DataError                   data could not be read or does not fit
    │   ├── SourceError             a file, URL or query could not be read
    │   │   └── FeatureStoreError   the Feast feature store failed or is not set up (503)
    │   └── ContractViolation       rows break the data contract (carries the report)
    ├── TrainingError               an estimator, split, metric or tuning problem
    ├── TrackingError               MLflow could not be reached or refused an operation
    │   ├── ModelNotFound           no such registered model, version or alias (404)
    │   └── ModelRefused            a version breaks the load policy: untrusted type, bad contract (422)
    ├── StoreError                  the platform store failed
    │   └── ConflictError           a concurrent change won (409)
    │       └── TransitionError     a state machine refused a move (409)
    ├── ServingError                a prediction could not be made (status per subclass)
    │   ├── RequestValidationError  the request breaks the contract (422)
    │   ├── PayloadTooLarge         body or rows above the configured limit (413)
    │   ├── Overloaded              the batching queue is full (503, Retry-After)
    │   ├── UnsupportedMediaType    the body is not of an accepted content type (415)
    │   └── Unauthorized            missing or wrong token (401)
    ├── MonitoringError             drift or quality could not be computed
    ├── RolloutError                a rollout operation is not allowed now (409)
    ├── ControlError                the closed loop could not act
    └── DeployError                 deployment files could not be generated
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ConflictError",
    "ContractViolation",
    "ControlError",
    "DataError",
    "DeployError",
    "FeatureStoreError",
    "MloopError",
    "ModelNotFound",
    "ModelRefused",
    "MonitoringError",
    "Overloaded",
    "PayloadTooLarge",
    "RequestValidationError",
    "RolloutError",
    "ServingError",
    "SourceError",
    "StoreError",
    "TrackingError",
    "TrainingError",
    "TransitionError",
    "Unauthorized",
    "UnsupportedMediaType",
    "did_you_mean",
]


class MloopError(Exception):
    """Root of every error mloop raises on purpose.

    ``status_code`` is what the HTTP layer answers with when this error crosses it; ``exit_code`` is
    what the CLI exits with.
    """

    status_code: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MloopError):
    """The project configuration (mloop.yaml or MLOOP_* variables) is invalid."""

    exit_code = 2
    status_code = 500


class DataError(MloopError):
    """Data could not be read, or does not have the shape the project expects."""

    status_code = 422


class SourceError(DataError):
    """A file, URL or SQL query could not be read."""


class FeatureStoreError(SourceError):
    """The Feast feature store could not be reached, is not set up, or answered an error."""

    status_code = 503


class ContractViolation(DataError):
    """Rows break the data contract; ``report`` lists every broken rule."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class TrainingError(MloopError):
    """Training could not run: unknown estimator, bad split, failing user code."""


class TrackingError(MloopError):
    """MLflow could not be reached or refused an operation."""

    status_code = 502


class ModelNotFound(TrackingError):
    """No such registered model, version or alias."""

    status_code = 404


class ModelRefused(TrackingError):
    """A registered version is not loaded: its model file holds a type outside the trusted set, its
    format runs code on load and ``model.trust_code_of`` does not list it, or its contract (or MLflow
    signature) breaks the rules; ``types`` names the refused types or loader (empty for a contract)."""

    status_code = 422

    def __init__(self, message: str, types: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.types = types


class StoreError(MloopError):
    """The platform store failed."""


class ConflictError(StoreError):
    """A concurrent change was applied first; retry with fresh state."""

    status_code = 409


class TransitionError(ConflictError):
    """A persisted state machine (rollout, loop cycle) refused a move its transition table lacks."""

    def __init__(self, machine: str, subject: str, source: str, target: str, allowed: Iterable[str]) -> None:
        self.machine, self.subject, self.source, self.target = machine, subject, source, target
        self.allowed = sorted(allowed)
        nxt = ", ".join(self.allowed) if self.allowed else "nothing (it is final)"
        super().__init__(
            f"{machine.capitalize()} {subject} cannot go from {source!r} to {target!r}; from {source!r} it "
            f"may go to {nxt}. Re-read its state (it may have moved on) before retrying."
        )


class ServingError(MloopError):
    """A prediction could not be made."""


class RequestValidationError(ServingError):
    """The request does not fit the contract; ``errors`` holds one entry per offending field."""

    status_code = 422

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class PayloadTooLarge(ServingError):
    """The body or the number of rows is above the configured limit."""

    status_code = 413


class Overloaded(ServingError):
    """The batching queue is full; the client should retry after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthorized(ServingError):
    """A token was required and was missing or wrong."""

    status_code = 401


class UnsupportedMediaType(ServingError):
    """The body's Content-Type is not one the endpoint accepts."""

    status_code = 415


class MonitoringError(MloopError):
    """Drift or quality could not be computed."""


class RolloutError(MloopError):
    """A rollout operation is not allowed in the current state."""

    status_code = 409


class ControlError(MloopError):
    """The closed loop could not act."""


class DeployError(MloopError):
    """Deployment files could not be generated."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""
