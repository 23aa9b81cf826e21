"""Promote / roll back / abort as commands issue them while a server drives the same rollout, and the
deployment rollback after a promotion (the registry's ``previous`` alias is the target, ``cd -``)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from mloop.cli.main import app
from mloop.errors import RolloutError
from mloop.rollout import ROLLOUT_MACHINE, RolloutController
from mloop.store.rollouts import RolloutStore


def _ctl(settings: Any, store: Any, registry: Any, predlog: Any) -> RolloutController:
    return RolloutController(settings, store=store, registry=registry, predlog=predlog)


def _race_on_champion_move(registry: Any, during: Any) -> None:
    """Run ``during`` once, in the middle of the next ``champion`` move (while a promotion is between
    its claim and its ``promoted`` record) — as a serving process's refresh would."""
    move = registry.set_alias
    pending = [during]

    def set_alias(alias: str, ref: Any, **kw: Any) -> Any:
        moved = move(alias, ref, **kw)
        if alias == "champion" and pending:
            pending.pop()()
        return moved

    registry.set_alias = set_alias


def test_the_servers_advance_leaves_a_promotion_in_flight_to_its_promoter(
    settings, store, registry, predlog
) -> None:
    cli = _ctl(settings, store, registry, predlog)
    server = _ctl(settings, store, registry, predlog)  # the auto-advancing serving process
    r = cli.start(strategy="ab", versions=["2"])
    seen: list[Any] = []
    _race_on_champion_move(registry, lambda: seen.append(server.advance(r.id, actor="rollout:auto")))
    done = cli.promote(r.id, actor="cli")
    # The server saw the promotion in flight and left it alone; the command finished it.
    assert [s.state for s in seen] == ["promoting"]
    assert done.state == "promoted" and registry.aliases == {"champion": 2, "previous": 1}
    assert registry.moves == [("champion", 2, "cli"), ("-challenger", 0, "cli"), ("previous", 1, "cli")]
    kinds = [(e.kind, e.actor) for e in store.events(subject=f"rollout:{r.id}", limit=None)][::-1]
    assert kinds == [
        ("rollout.started", "mloop"),
        ("rollout.promoting", "cli"),
        ("rollout.promoted", "cli"),
    ]
    assert store.acquire_lease(f"rollout-promote:{r.id}", "someone-else", 1.0)  # released


def test_a_promotion_whose_promoter_died_is_finished_without_moving_aliases_twice(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    ctl.repo.transition(
        r.id,
        expected_revision=r.revision,
        state="promoting",
        weights={"champion": 0.0, "canary": 1.0},
        reason="claimed",
        actor="x",
    )
    registry.set_alias("champion", 2, reason="moved before the crash", actor="x")
    # The dead promoter's lease: same host, a pid that no longer exists.
    import socket

    assert store.acquire_lease(f"rollout-promote:{r.id}", f"{socket.gethostname()}:999999999:dead", 600)
    done = ctl.advance(r.id, actor="rollout:auto")
    assert done.state == "promoted" and registry.aliases == {"champion": 2, "previous": 1}
    assert [m for m in registry.moves if m[0] == "champion"] == [("champion", 2, "x")]


def test_a_live_promoters_lease_is_respected(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "canary")
    claimed = ctl.repo.transition(
        r.id, expected_revision=r.revision, state="promoting", reason="claimed", actor="x"
    )
    assert store.acquire_lease(f"rollout-promote:{r.id}", "other-host:1:live", 600)
    assert ctl.advance(r.id) == claimed and registry.moves == []


def test_asking_for_the_state_a_rollout_is_already_in_is_not_an_error(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.promote(ctl.start("2", "canary").id)
    assert ctl.promote(r.id) == r and ctl.promote(r.id, version="2") == r
    with pytest.raises(RolloutError, match="promoted v2"):
        ctl.promote(r.id, version="3")
    rolled = ctl.rollback(ctl.start("3", "canary").id)
    assert ctl.rollback(rolled.id) == rolled
    aborted = ctl.abort(ctl.start("3", "canary").id)
    assert ctl.abort(aborted.id) == aborted


def test_rolling_back_a_promoted_rollout_names_the_real_command(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start("2", "direct")
    with pytest.raises(RolloutError) as err:
        ctl.rollback(r.id)
    assert "--deployment" not in err.value.message
    assert "`mloop rollout rollback` without --id" in err.value.message


def test_deployment_rollback_follows_the_registry_and_swaps_champion_and_previous(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    ctl.start("2", "direct")  # champion v2, previous v1; the store agrees
    # Promoted by hand (`mloop models promote 3`): the store follows the registry.
    dep = ctl.promote_version("3", actor="cli", reason="manual promotion")
    assert (dep.champion_version, dep.previous_version) == ("3", "2")
    assert registry.aliases == {"champion": 3, "previous": 2}
    dep = ctl.rollback_deployment(actor="carol")
    assert (dep.champion_version, dep.previous_version) == ("2", "3")
    assert registry.aliases == {"champion": 2, "previous": 3}
    dep = ctl.rollback_deployment(actor="carol")  # like `cd -`: back and forth
    assert (dep.champion_version, dep.previous_version) == ("3", "2")
    assert registry.aliases == {"champion": 3, "previous": 2}
    assert [e.data for e in store.events(kind="deployment.rolled_back")][::-1] == [
        {"champion": "2", "previous": "3"},
        {"champion": "3", "previous": "2"},
    ]


def test_deployment_rollback_repairs_a_stale_store_record_from_the_registry(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    ctl.start("2", "direct")
    # An alias moved behind the store's back (e.g. by an older `mloop models promote`).
    registry.aliases.update(champion=1, previous=2)
    dep = ctl.rollback_deployment(actor="cli")
    assert (dep.champion_version, dep.previous_version) == ("2", "1")
    assert registry.aliases == {"champion": 2, "previous": 1}


def test_deployment_rollback_without_previous_and_promote_during_a_rollout_are_refused(
    settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    with pytest.raises(RolloutError, match="no `previous` version"):
        ctl.rollback_deployment()
    r = ctl.start("2", "canary")
    with pytest.raises(RolloutError, match=f"rollout #{r.id} active"):
        ctl.promote_version("3")
    ctl.abort(r.id)
    assert ctl.promote_version("1").champion_version == "1"  # already champion: nothing moves
    assert registry.moves == []


# -- the commands ------------------------------------------------------------------------------
@pytest.fixture
def cli(settings, store, registry, predlog, monkeypatch: pytest.MonkeyPatch) -> Any:
    import mloop.cli.rollout as rollout_cli

    def controller(config: Any, model: Any = None) -> RolloutController:
        ctl = _ctl(settings, store, registry, predlog)
        ctl.close = lambda: None  # the fixture owns the store
        return ctl

    monkeypatch.setattr(rollout_cli, "_controller", controller)

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["rollout", *args], env={"COLUMNS": "200"})

    return run


def test_cli_says_when_the_rollout_is_already_where_it_was_asked_to_go(
    cli, settings, store, registry, predlog
) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    r = ctl.start(strategy="ab", versions=["2"])
    first = cli("promote")
    assert first.exit_code == 0 and "promoted" in first.output
    again = cli("promote", "--id", str(r.id))
    assert again.exit_code == 0, again.output
    assert f"Rollout #{r.id} is already promoted (v2 is champion)" in again.output
    assert len(store.events(kind="rollout.promoted")) == 1
    back = cli("rollback", "--id", str(r.id))
    assert isinstance(back.exception, RolloutError) and "--deployment" not in back.exception.message
    assert "mloop rollout rollback` without --id" in back.exception.message
    dep = cli("rollback")
    assert dep.exit_code == 0 and "back on v1 (was v2, now `previous`)" in dep.output
    rolled = ctl.rollback(ctl.start("3", "canary").id)
    again = cli("rollback", "--id", str(rolled.id))
    assert again.exit_code == 0 and f"Rollout #{rolled.id} is already rolled back" in again.output


def test_rollback_help_documents_the_back_and_forth() -> None:
    out = CliRunner().invoke(app, ["rollout", "rollback", "--help"], env={"COLUMNS": "200"}).output
    assert "previous" in out and "again" in out


def test_repo_is_consistent_after_models_promote(settings, store, registry, predlog) -> None:
    ctl = _ctl(settings, store, registry, predlog)
    ctl.promote_version("2", actor="cli", reason="manual promotion")
    dep = RolloutStore(store, ROLLOUT_MACHINE).deployment("fraud")
    assert dep is not None and (dep.champion_version, dep.previous_version) == ("2", "1")
    assert registry.aliases == {"champion": 2, "previous": 1}
    [event] = store.events(kind="deployment.promoted")
    assert event.actor == "cli" and event.reason == "manual promotion"
