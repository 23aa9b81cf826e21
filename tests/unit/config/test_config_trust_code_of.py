"""``model.trust_code_of`` names single registered versions: never an alias, never a whole model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mloop.config import Settings


def test_entries_are_normalised_to_name_slash_version() -> None:
    settings = Settings.model_validate(
        {"model": {"trust_code_of": ["churn/3", "models:/churn/04", " a.b-c_d/12 "]}}
    )
    assert settings.model.trust_code_of == ["churn/3", "churn/4", "a.b-c_d/12"]


@pytest.mark.parametrize(
    "entry", ["churn", "churn@champion", "models:/churn@3", "churn/latest", "churn/*", "*/3", "churn/3/4", ""]
)
def test_aliases_wildcards_and_whole_models_are_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match="one registered version"):
        Settings.model_validate({"model": {"trust_code_of": [entry]}})
