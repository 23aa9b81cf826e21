"""``model.trusted_types`` holds exact dotted names: no prefixes, no wildcards."""

from pathlib import Path

import pytest

from mloop.config import load_settings
from mloop.errors import ConfigError


@pytest.mark.parametrize("entry", ["builtins.", "sklearn", "builtins.*", "my models.Forest", "a..b", ""])
def test_prefixes_and_wildcards_are_refused(project_dir: Path, entry: str) -> None:
    path = project_dir / "mloop.yaml"
    path.write_text(f"model:\n  trusted_types: [{entry!r}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="exact dotted names") as err:
        load_settings(path)
    assert "model.trusted_types" in str(err.value)


def test_exact_names_are_kept(project_dir: Path) -> None:
    path = project_dir / "mloop.yaml"
    path.write_text("model:\n  trusted_types: [mymodels.SlowForest, train._clip]\n", encoding="utf-8")
    assert load_settings(path).model.trusted_types == ["mymodels.SlowForest", "train._clip"]
