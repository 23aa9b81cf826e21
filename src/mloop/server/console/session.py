"""Who is looking at the console: the key a login cookie carries, its role, and CSRF tokens.

The login form posts a key; the console keeps it in a cookie that scripts cannot read (``HttpOnly``),
that the browser never sends from another site (``SameSite=Strict``) and, over HTTPS, only over
HTTPS (``Secure``). Every request checks the key again against the server's :class:`KeyRing`, so a
rotated-out key stops working at once. ``Authorization: Bearer`` works too (scripts, curl).

Every POST carries a CSRF token: ``nonce.HMAC-SHA256(sha256(key), nonce)`` — the nonce in its own
cookie, the whole token in the form. It is a *signed* double-submit cookie (OWASP's recommended
stateless pattern): a forged form has neither the nonce cookie's value nor, without the key, the
signature, and it stays valid across worker processes because it needs no server-side secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from mloop.server.auth import KeyRing

__all__ = [
    "CSRF_COOKIE",
    "KEY_COOKIE",
    "Viewer",
    "check_csrf",
    "clear_key",
    "csrf_token",
    "set_csrf",
    "set_key",
]

KEY_COOKIE = "mloop_console_key"
CSRF_COOKIE = "mloop_console_csrf"
_BEARER = "bearer "


@dataclass(frozen=True)
class Viewer:
    """What the request may do: read the pages, act (admin), and whether it logged in."""

    can_read: bool
    is_admin: bool
    key: str | None
    actions_enabled: bool
    """Whether the server has an admin key at all (else actions are disabled for everyone)."""
    read_key_set: bool


def presented_key(request: Request) -> str | None:
    """The key of the request: the bearer header, else the login cookie."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith(_BEARER):
        return header[len(_BEARER) :].strip() or None
    return request.cookies.get(KEY_COOKIE) or None


def viewer(request: Request, keys: KeyRing) -> Viewer:
    key = presented_key(request)
    is_admin = keys.accepts("admin", key)
    read_set = keys.has("read")
    can_read = is_admin or not read_set or keys.accepts("read", key)
    return Viewer(can_read, is_admin, key, keys.has("admin"), read_set)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_key(response: Response, request: Request, key: str, prefix: str) -> None:
    """Keep ``key`` in the login cookie (HttpOnly, SameSite=Strict, Secure over HTTPS)."""
    response.set_cookie(
        KEY_COOKIE, key, httponly=True, samesite="strict", secure=_secure(request), path=prefix or "/"
    )


def clear_key(response: Response, request: Request, prefix: str) -> None:
    response.delete_cookie(
        KEY_COOKIE, httponly=True, samesite="strict", secure=_secure(request), path=prefix or "/"
    )


def _sign(key: str | None, nonce: str) -> str:
    secret = hashlib.sha256((key or "").encode("utf-8")).digest()
    return hmac.new(secret, nonce.encode("ascii"), hashlib.sha256).hexdigest()


def csrf_token(request: Request, key: str | None) -> tuple[str, str | None]:
    """The token forms carry, and the new nonce to set with :func:`set_csrf` (None: the request's
    nonce cookie is kept)."""
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if not nonce or len(nonce) != 32 or not nonce.isalnum():
        nonce = fresh = secrets.token_hex(16)
    return f"{nonce}.{_sign(key, nonce)}", fresh


def set_csrf(response: Response, request: Request, nonce: str, prefix: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path=prefix or "/"
    )


def check_csrf(request: Request, token: str | None, key: str | None) -> bool:
    """Whether the form's ``token`` matches the nonce cookie and is signed with ``key``."""
    nonce = request.cookies.get(CSRF_COOKIE)
    if not token or not nonce or "." not in token:
        return False
    given_nonce, _, signature = token.partition(".")
    same_nonce = hmac.compare_digest(given_nonce.encode(), nonce.encode())
    return same_nonce and hmac.compare_digest(signature.encode(), _sign(key, nonce).encode())
