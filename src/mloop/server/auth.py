"""Keys per role of the HTTP API: who may predict, send labels, read and administer.

Four roles, each with its own keys (``serving.keys``, see ``docs/security.md``):

    predict    POST /predict, /invocations, /v2/models/{name}[/versions/{v}]/infer
    feedback   POST /feedback
    read       GET /v2/models/{name} (model details), /openapi.json, /docs, /redoc; GET /admin/status
               and GET /admin/rollout
    admin      /admin/* (reload, rollouts); an admin key is accepted on every route

A route needs a key when its role has one (``Authorization: Bearer <key>``); ``/admin/*`` always
needs one and is disabled (403) while no admin key is set (its two GETs also take a read key).
Health, readiness and metrics stay open: probes and Prometheus call them without credentials.
Each role takes several keys at once, so a key is rotated without downtime.

Keys are compared in constant time: the SHA-256 of the presented key against the SHA-256 of every
accepted key with :func:`hmac.compare_digest`, with no early exit, so neither the time taken nor
the length of a key tells an attacker anything. On the prediction routes, a role with no key costs
nothing; with keys, one header lookup, one hash and one comparison per accepted key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

from fastapi import Request

from mloop.config import Settings
from mloop.config.settings import ServingSettings
from mloop.errors import ConfigError, MloopError, Unauthorized

__all__ = ["ROLES", "ForbiddenError", "Guard", "KeyRing", "Role", "bind_warning"]

log = logging.getLogger("mloop.server")

Role = Literal["predict", "feedback", "read", "admin"]
ROLES: tuple[Role, ...] = ("predict", "feedback", "read", "admin")
Guard = Callable[[Request], None]
"""Raises :class:`~mloop.errors.Unauthorized` (or :class:`ForbiddenError`) unless the request may pass."""

_ENV = {role: f"MLOOP_SERVING__KEYS__{role.upper()}" for role in ROLES}


class ForbiddenError(MloopError):
    """Admin endpoints are disabled because no admin key is configured."""

    status_code = 403


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key if isinstance(key, bytes) else key.encode("utf-8")).digest()


def _presented(request: Request) -> bytes | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else the deprecated ``X-API-Key``.

    Read from the raw ASGI headers (names are lower-case there), without building a header mapping.
    """
    legacy = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
        if name == b"x-api-key":
            legacy = value
    return legacy or None


def _matches(given: bytes, accepted: tuple[bytes, ...]) -> bool:
    digest = _digest(given)
    ok = False
    for key in accepted:  # every key is compared: the time does not depend on which one matches
        ok |= hmac.compare_digest(digest, key)
    return ok


class KeyRing:
    """The accepted keys of each role, as digests; builds the guard of each route.

    >>> keys = KeyRing({"predict": ["p-key"], "admin": ["a-key"]})
    >>> keys.guard("feedback") is None      # no feedback key: /feedback is open
    True
    """

    def __init__(self, keys: Mapping[str, Iterable[str]] | None = None) -> None:
        keys = keys or {}
        unknown = sorted(set(keys) - set(ROLES))
        if unknown:
            raise ConfigError(f"Unknown key role(s) {unknown}; the roles are {', '.join(ROLES)}.")
        self._keys: dict[str, tuple[bytes, ...]] = {
            role: tuple(dict.fromkeys(_digest(k) for k in keys.get(role, ()) if k)) for role in ROLES
        }

    @classmethod
    def from_settings(cls, settings: Settings | ServingSettings) -> KeyRing:
        """Keys of ``serving.keys`` (and its ``dir``), plus the older ``admin_token`` (admin) and the
        deprecated ``api_key`` (predict and feedback)."""
        serving = settings.serving if isinstance(settings, Settings) else settings
        conf = serving.keys
        keys: dict[str, list[str]] = {role: list(getattr(conf, role)) for role in ROLES}
        if conf.dir:
            for role, found in _read_dir(Path(conf.dir)).items():
                keys[role].extend(found)
        for token in (serving.admin_token, os.environ.get("MLOOP_ADMIN_TOKEN")):
            if token:
                keys["admin"].append(token)
        if serving.api_key:
            log.warning(
                "serving.api_key (MLOOP_API_KEY) is deprecated: set serving.keys.predict and "
                "serving.keys.feedback (MLOOP_SERVING__KEYS__PREDICT, MLOOP_SERVING__KEYS__FEEDBACK)."
            )
            keys["predict"].append(serving.api_key)
            keys["feedback"].append(serving.api_key)
        return cls(keys)

    @classmethod
    def coerce(cls, keys: KeyRing | str | None, *, roles: Iterable[Role]) -> KeyRing:
        """``keys`` as a ring: ``None`` has no keys; a string is the one key of each of ``roles``."""
        if isinstance(keys, KeyRing):
            return keys
        return cls({role: [keys] for role in roles} if keys else None)

    def has(self, role: Role) -> bool:
        """Whether ``role`` has a key (its routes then need one)."""
        return bool(self._keys[role])

    def accepts(self, role: Role, key: str | bytes | None) -> bool:
        """Whether ``key`` is one of ``role``'s keys (or an admin key), compared in constant time
        (the web console checks the key its login cookie carries with this)."""
        if not key:
            return False
        given = key.encode("utf-8") if isinstance(key, str) else key
        return _matches(given, self._keys[role] + (self._keys["admin"] if role != "admin" else ()))

    @property
    def roles(self) -> list[Role]:
        """The roles that have at least one key."""
        return [role for role in ROLES if self._keys[role]]

    def guard(self, role: Role) -> Guard | None:
        """The check of a ``role`` route; ``None`` while the role has no key (the route is open).

        ``admin`` routes use :meth:`admin_guard` instead: they are never open.
        """
        if role == "admin":
            return self.admin_guard()
        if not self._keys[role]:
            return None
        return self._check(self._keys[role] + self._keys["admin"], role)

    def admin_guard(self, *, read: bool = False) -> Guard:
        """The check of an ``/admin`` route: admin keys (and read keys when ``read``); while none of
        those is set, the route answers 403."""
        accepted = self._keys["admin"] + (self._keys["read"] if read else ())
        if accepted:
            return self._check(accepted, "read" if read else "admin")

        def disabled(request: Request) -> None:
            raise ForbiddenError(
                "Admin endpoints are disabled because no admin key is configured. Set "
                "MLOOP_SERVING__KEYS__ADMIN (or serving.keys.dir, or MLOOP_ADMIN_TOKEN), then send "
                "'Authorization: Bearer <key>'."
            )

        return disabled

    @staticmethod
    def _check(accepted: tuple[bytes, ...], role: Role) -> Guard:
        either = "" if role == "admin" else " or an admin key"
        # The message never echoes what was sent: keys must not end up in logs.
        message = (
            f"This endpoint needs a {role} key{either}: send the header 'Authorization: Bearer <key>' "
            f"(keys are set with {_ENV[role]} or serving.keys.{role})."
        )

        def check(request: Request) -> None:
            given = _presented(request)
            if given is None or not _matches(given, accepted):
                raise Unauthorized(message)

        return check


def _read_dir(directory: Path) -> dict[Role, list[str]]:
    """Keys from files named after the roles in ``directory`` (one key per line; missing files: none)."""
    if not directory.is_dir():
        raise ConfigError(
            f"serving.keys.dir {str(directory)!r} is not a directory. Point it at the directory holding "
            "the files predict, feedback, read and admin (e.g. a mounted Secret), or unset it."
        )
    out: dict[Role, list[str]] = {}
    for role in ROLES:
        path = directory / role
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the {role} keys from {path}: {exc}.") from exc
        out[role] = [line.strip() for line in text.splitlines() if line.strip()]
    return out


def _loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind_warning(settings: Settings, host: str | None = None) -> str | None:
    """What to warn about when the server binds ``host`` (default ``serving.host``) with keys missing:
    beyond loopback, anyone who reaches the port may send labels without a feedback key (and predict
    without a predict key). ``None`` when there is nothing to say."""
    host = host or settings.serving.host
    if _loopback(host):
        return None
    ring = KeyRing.from_settings(settings)
    pair: tuple[Role, Role] = ("feedback", "predict")
    missing = [role for role in pair if not ring.has(role)]
    if "feedback" not in missing:
        return None
    return (
        f"Binding {host} with no {' and no '.join(missing)} key: anyone who reaches this port can send "
        "labels that steer monitoring, retraining and rollouts. Set MLOOP_SERVING__KEYS__FEEDBACK (and "
        "MLOOP_SERVING__KEYS__PREDICT), or bind 127.0.0.1. See docs/security.md."
    )
