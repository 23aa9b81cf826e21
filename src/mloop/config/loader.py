"""Read ``mloop.yaml`` plus ``MLOOP_*`` variables into :class:`~mloop.config.settings.Settings`.

pydantic-settings' own YAML source would accept the file, but its errors name pydantic internals;
this loader merges the same two layers (file, then environment) and turns every validation error
into one message that names the key, what was expected and the closest known key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mloop.config.settings import Settings
from mloop.errors import ConfigError, did_you_mean

CONFIG_FILE = "mloop.yaml"
ENV_PREFIX = "MLOOP_"
ENV_DELIMITER = "__"

# Variables with a well-known name of their own, mapped onto the tree.
_ALIASES = {"MLOOP_ADMIN_TOKEN": ("serving", "admin_token"), "MLOOP_API_KEY": ("serving", "api_key")}
# MLOOP_* variables that are not settings.
_NOT_SETTINGS = {"MLOOP_REQUIRE_SERVICES", "MLOOP_CONFIG", "MLOOP_VERBOSE"}


def find_config(start: Path | None = None) -> Path | None:
    """``MLOOP_CONFIG`` if set, else the nearest ``mloop.yaml`` in ``start`` or a parent directory."""
    env = os.environ.get("MLOOP_CONFIG")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    require_file: bool = False,
) -> Settings:
    """Load the settings tree.

    ``path`` is a ``mloop.yaml`` (or the directory holding one); by default it is looked up from the
    working directory upwards. ``overrides`` (nested dicts) win over the environment, which wins
    over the file.
    """
    file = Path(path) if path is not None else find_config()
    if file is not None and file.is_dir():
        file = file / CONFIG_FILE
    data: dict[str, Any] = {}
    root = Path.cwd()
    if file is not None:
        if not file.is_file():
            raise ConfigError(
                f"Config file {str(file)!r} does not exist. Create one with `mloop init`, or point "
                "MLOOP_CONFIG at an existing mloop.yaml."
            )
        root = file.resolve().parent
        data = _read_yaml(file)
    elif require_file:
        raise ConfigError(
            f"No {CONFIG_FILE} found in {Path.cwd()} or its parents. Run `mloop init` to create a "
            "project, or cd into one."
        )
    from_env: dict[tuple[str, ...], str] = {}
    _merge(data, _from_env(os.environ if env is None else env, sources=from_env))
    if overrides:
        _merge(data, dict(overrides))
        for key in _leaves(overrides):  # an override wins over the variable: it no longer explains
            from_env.pop(key, None)
    try:
        settings = Settings.model_validate({**data, "root": root})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, file, from_env)) from exc
    return settings


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"Cannot read {file}: {exc.strerror}.") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file} must be a mapping of keys to values, got a {type(loaded).__name__}.")
    return loaded


def _from_env(env: Mapping[str, str], *, sources: dict[tuple[str, ...], str] | None = None) -> dict[str, Any]:
    """The settings set by ``MLOOP_*`` variables; ``sources`` gets each key's variable name."""
    out: dict[str, Any] = {}
    sources = {} if sources is None else sources
    for name, value in env.items():
        if name in _ALIASES:
            section, key = _ALIASES[name]
            out.setdefault(section, {})[key] = value
            sources[(section, key)] = name
            continue
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_DELIMITER)]
        if parts[0] not in Settings.model_fields:
            continue  # an MLOOP_* variable meant for something else (tests, tools)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        # Keys stay verbatim: YAML would read "0123" or "1e5" as numbers and change them.
        node[parts[-1]] = value if parts[:2] == ["serving", "keys"] else _parse_env_value(value)
        sources[tuple(parts)] = name
    return out


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out += _leaves(value, (*prefix, key))
        out.append((*prefix, key))
    return out


def _env_name(loc: tuple[Any, ...], from_env: Mapping[tuple[str, ...], str]) -> str | None:
    """The variable that set ``loc`` or one of its parents (``MLOOP_SERVING='{...}'``), if any."""
    for end in range(len(loc), 0, -1):
        name = from_env.get(tuple(str(p) for p in loc[:end]))
        if name is not None:
            return name
    return None


def _parse_env_value(value: str) -> Any:
    # Let YAML type scalars and lists the way the file would ("5", "true", "[1, 2]").
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        current = field.annotation
    return [k for k in current.model_fields if k != "root"]


def _explain(
    exc: ValidationError, file: Path | None, from_env: Mapping[tuple[str, ...], str] | None = None
) -> str:
    """One line per error; a value set by an ``MLOOP_*`` variable names the variable, not the file."""
    lines: list[str] = []
    env_only = True
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        variable = _env_name(loc, from_env or {})
        env_only = env_only and variable is not None
        start = len(lines)
        if err["type"] == "extra_forbidden":
            known = _known_keys(Settings, loc)
            hint = did_you_mean(str(loc[-1]), known)
            lines.append(f"unknown key {key!r}.{hint} Known keys here: {', '.join(sorted(known))}.")
        elif err["type"] == "value_error":  # our own validators already say what was received
            lines.append(f"{key}: {err['ctx']['error']}")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r}).")
        if variable is not None:  # the value came from the environment: name the variable
            lines[start] = f"{variable}: {lines[start]}"
    if env_only:
        where = "environment variable" + ("s" if len(lines) > 1 else "")
        return f"Invalid {where} (fix or unset it):\n  - " + "\n  - ".join(lines)
    where = str(file) if file else "the configuration"
    if any(line.startswith(ENV_PREFIX) for line in lines):
        where += " and environment"
    return f"Invalid {where}:\n  - " + "\n  - ".join(lines)
