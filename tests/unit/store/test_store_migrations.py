"""The migration chain: one head, head equals schema.py, files shipped with the package."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mloop.store import open_store
from mloop.store.migrate import alembic_config, head_revision, upgrade
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


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def test_a_store_written_before_lease_fences_upgrades_in_place(any_url: str) -> None:
    """A store at revision 0003 (rollouts, cycles, a held lease) opens at head with its data intact."""
    from mloop.control.states import CYCLE_MACHINE
    from mloop.rollout.states import ROLLOUT_MACHINE
    from mloop.store.loop import LoopRepository
    from mloop.store.rollouts import RolloutStore

    engine = sa.create_engine(any_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    later = now + timedelta(minutes=10)
    with engine.begin() as conn:
        upgrade(conn, "0003")
        conn.execute(
            sa.text(
                "INSERT INTO leases (name, owner, expires_at) VALUES ('loop:fraud', 'other-host:1:x', :t)"
            ),
            {"t": later},
        )
        conn.execute(
            sa.text(
                "INSERT INTO rollouts (id, model_name, strategy, state, baseline_version, candidate_version, "
                "step, step_started_at, created_at, updated_at, actor, reason, revision) VALUES "
                "(1, 'fraud', 'canary', 'running', '1', '2', 0, :t, :t, :t, 'cli', 'old', 1)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO loop_cycles (model_name, trigger_kind, trigger_key, state, reason, attempts, "
                "revision, created_at, updated_at) "
                "VALUES ('fraud', 'manual', 'k', 'training', 'old', 1, 1, :t, :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    with open_store(any_url) as store:
        assert store.schema_revision() == head_revision()
        held = store.leases.holder("loop:fraud")
        assert held is not None and (held.owner, held.fence, held.acquired_at) == ("other-host:1:x", 0, None)
        assert not store.leases.acquire("loop:fraud", "me", 60)
        rollout = RolloutStore(store, ROLLOUT_MACHINE).get(1)
        assert (rollout.state, rollout.terminal) == ("running", False)
        cycle = LoopRepository(store, CYCLE_MACHINE).active("fraud")
        assert cycle is not None and cycle.state == "training"
        assert store.leases.release("loop:fraud", "other-host:1:x")
        assert store.leases.acquire("loop:fraud", "me", 60)
        assert store.leases.holder("loop:fraud").fence == 1


def test_fences_grow_on_every_handover_and_survive_release(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'f.db'}") as store:
        assert store.leases.acquire("loop:m", "a", 60)
        first = store.leases.holder("loop:m")
        assert first is not None and first.fence == 1 and first.acquired_at is not None
        assert store.leases.renew("loop:m", "a", 60) and store.leases.acquire("loop:m", "a", 60)
        assert store.leases.holder("loop:m") == replace(
            first, expires_at=store.leases.holder("loop:m").expires_at
        )
        assert store.leases.release("loop:m", "a") and store.leases.holder("loop:m") is None
        assert not store.leases.renew("loop:m", "a", 60), "a released lease is not renewed"
        assert store.leases.acquire("loop:m", "b", 60)
        assert store.leases.holder("loop:m").fence == 2
