from pathlib import Path

import pytest

from mloop.config import load_settings
from mloop.errors import ConfigError


def write(tmp: Path, text: str) -> Path:
    path = tmp / "mloop.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file(project_dir: Path) -> None:
    s = load_settings()
    assert s.model.task == "classification"
    assert s.store_url == f"sqlite:///{project_dir / '.mloop' / 'mloop.db'}"
    assert s.tracking_uri.endswith(".mloop/mlflow.db")


def test_file_values_and_root(project_dir: Path) -> None:
    sub = project_dir / "proj"
    sub.mkdir()
    write(sub, "model:\n  name: fraud\n  target: is_fraud\nsplit:\n  test_size: 0.3\n")
    s = load_settings(sub / "mloop.yaml")
    assert (s.model.name, s.model.target, s.split.test_size) == ("fraud", "is_fraud", 0.3)
    assert s.root == sub.resolve()
    assert s.home_dir == sub.resolve() / ".mloop"


def test_found_upwards(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project_dir, "model:\n  name: up\n")
    deep = project_dir / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert load_settings().model.name == "up"


def test_env_overrides_file_and_overrides_win(project_dir: Path) -> None:
    path = write(project_dir, "serving:\n  port: 8000\nmodel:\n  name: a\n")
    env = {
        "MLOOP_SERVING__PORT": "9001",
        "MLOOP_MODEL__NAME": "b",
        "MLOOP_ADMIN_TOKEN": "s3cret",
        "MLOOP_OTHER": "x",
    }
    s = load_settings(path, env=env)
    assert s.serving.port == 9001
    assert s.model.name == "b"
    assert s.serving.admin_token == "s3cret"
    s2 = load_settings(path, env=env, overrides={"model": {"name": "c"}})
    assert s2.model.name == "c"


def test_unknown_key_suggests_close_match(project_dir: Path) -> None:
    path = write(project_dir, "model:\n  targt: is_fraud\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    msg = str(err.value)
    assert "model.targt" in msg
    assert "Did you mean 'target'?" in msg


def test_unknown_top_level_section(project_dir: Path) -> None:
    path = write(project_dir, "servng:\n  port: 1\n")
    with pytest.raises(ConfigError, match="Did you mean 'serving'"):
        load_settings(path)


def test_wrong_type_names_key_and_value(project_dir: Path) -> None:
    path = write(project_dir, "serving:\n  port: lots\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "serving.port" in str(err.value)
    assert "'lots'" in str(err.value)


def test_invalid_yaml_and_non_mapping(project_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(project_dir, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write(project_dir, "- a\n- b\n"))


def test_missing_file_explains(project_dir: Path) -> None:
    with pytest.raises(ConfigError, match="mloop init"):
        load_settings(project_dir / "nope.yaml")
    with pytest.raises(ConfigError, match=r"No mloop\.yaml found"):
        load_settings(require_file=True)
