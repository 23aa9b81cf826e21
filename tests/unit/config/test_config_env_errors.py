"""A bad value from an MLOOP_* variable names the variable, not mloop.yaml."""

from pathlib import Path

import pytest

from mloop.config import load_settings
from mloop.errors import ConfigError


def _write(project_dir: Path, text: str) -> Path:
    path = project_dir / "mloop.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_env_value_names_the_variable(project_dir: Path) -> None:
    path = _write(project_dir, "serving:\n  port: 8000\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={"MLOOP_SERVING__PORT": "lots"})
    msg = str(err.value)
    assert "MLOOP_SERVING__PORT" in msg
    assert "'lots'" in msg
    assert "mloop.yaml" not in msg
    assert msg.startswith("Invalid environment variable")


def test_unknown_env_key_names_the_variable(project_dir: Path) -> None:
    path = _write(project_dir, "model:\n  name: a\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={"MLOOP_SERVING__PORTT": "1"})
    assert "MLOOP_SERVING__PORTT: unknown key 'serving.portt'" in str(err.value)
    assert "Did you mean 'port'?" in str(err.value)


def test_file_and_env_errors_name_both(project_dir: Path) -> None:
    path = _write(project_dir, "serving:\n  workers: many\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={"MLOOP_SERVING__PORT": "lots"})
    msg = str(err.value)
    assert msg.startswith(f"Invalid {path} and environment")
    assert "MLOOP_SERVING__PORT: serving.port" in msg
    assert "\n  - serving.workers" in msg


def test_override_of_the_variable_is_not_blamed_on_it(project_dir: Path) -> None:
    path = _write(project_dir, "model:\n  name: a\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={"MLOOP_SERVING__PORT": "1"}, overrides={"serving": {"port": "x"}})
    assert "MLOOP_SERVING__PORT" not in str(err.value)
    assert "serving.port" in str(err.value)
