"""Names that leave mloop: the project, the registered model and the serving alias.

These values end up in MLflow (registered model and alias names), in Kubernetes objects and labels,
in Helm's ``Chart.yaml``, in a shell entry point and in URLs. One pattern that every one of them
accepts as it is, with nothing to quote, is enforced when the config is read:

``NAME_PATTERN``: 1-63 characters, letters, digits, ``-``, ``_`` and ``.``, starting and ending with a
letter or digit. It is the grammar of a Kubernetes label value, a subset of what MLflow accepts for a
registered model name, and holds no character a shell, YAML or a URL path treats specially.
Kubernetes object names are made from the project by :func:`mloop.deploy.options.dns_name`
(lower case, ``_`` and ``.`` become ``-``).

``ALIAS_PATTERN``: the same without ``.`` (MLflow aliases allow only word characters and ``-``).
"""

from __future__ import annotations

import re

__all__ = [
    "ALIAS_PATTERN",
    "NAME_PATTERN",
    "NAME_RULE",
    "check_alias",
    "check_name",
    "is_valid_name",
    "suggest_name",
]

NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
ALIAS_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)
NAME_RULE = "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
_ALIAS_RULE = "1-63 letters, digits, '-' or '_', starting and ending with a letter or digit"


def suggest_name(value: str, *, allowed: str = "._-") -> str:
    """A valid name close to ``value`` (``"Fraud: EU"`` -> ``"fraud-eu"``), or ``"my-model"``."""
    text = re.sub(rf"[^a-z0-9{re.escape(allowed)}]+", "-", value.lower())
    text = re.sub(r"-{2,}", "-", text).strip("._-")[:63].strip("._-")
    return text or "my-model"


def is_valid_name(value: str) -> bool:
    """Whether ``value`` matches :data:`NAME_PATTERN`."""
    return _NAME.fullmatch(value) is not None


def check_name(what: str, value: str) -> str:
    """``value`` if it matches :data:`NAME_PATTERN`, else ``ValueError`` naming ``what`` and a fix."""
    if _NAME.fullmatch(value):
        return value
    raise ValueError(
        f"{what} must be {NAME_RULE} (it is used in MLflow, Kubernetes objects and shell scripts); "
        f"got {value!r}. Use for example {suggest_name(value)!r}."
    )


def check_alias(what: str, value: str) -> str:
    """``value`` if it matches :data:`ALIAS_PATTERN`, else ``ValueError`` naming ``what`` and a fix."""
    if _ALIAS.fullmatch(value):
        return value
    raise ValueError(
        f"{what} must be {_ALIAS_RULE} (an MLflow alias such as 'champion'); "
        f"got {value!r}. Use for example {suggest_name(value.lstrip('@'), allowed='_-')!r}."
    )
