"""The migration chain: one head, head equals schema.py, files shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mloop.store import open_store
from mloop.store.migrate import alembic_config, head_revision
from mloop.store.schema import metadata


def test_chain_is_linear_with_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert all(not r.is_merge_point for r in revisions)


def test_migrations_ship_inside_the_package() -> None:
    root = resources.files("mloop.store") / "migrations"
    assert (root / "env.py").is_file()
    assert (root / "script.py.mako").is_file()
    assert any(p.name.endswith(".py") and p.name[0].isdigit() for p in (root / "versions").iterdir())


def test_head_matches_schema_metadata(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'm.db'}") as store, store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_store(url) as store:
        store.record_event("a.b", "s", "before")
        with store.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
    with open_store(url) as store:
        assert store.schema_revision() == head_revision()
        assert store.events() == []
