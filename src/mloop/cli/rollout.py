"""``mloop rollout start|status|promote|rollback|abort``: drive rollouts from the command line.

Thin: each command builds a :class:`~mloop.rollout.RolloutController` for the project and prints the
rollout it returns. ``status --watch`` also drives the rollout (one analysis per ``rollout.refresh_s``)
until it ends, for setups where no serving process does (``rollout.auto_advance: false``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mloop.cli.project import ConfigOpt

if TYPE_CHECKING:
    from mloop.rollout import RolloutController
    from mloop.store.rollouts import Rollout

__all__ = ["register"]

rollout_app = typer.Typer(
    help="Roll a new version out: canary steps, A/B test, shadow or direct; promote, roll back, abort.",
    no_args_is_help=True,
)

IdOpt = Annotated[int | None, typer.Option("--id", help="Rollout id (default: the active, else latest one).")]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who does this (recorded in the event).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the event).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the rollout as JSON.")]


def _controller(config: Path | None, model: str | None = None) -> RolloutController:
    from mloop.cli.project import settings_from_cli
    from mloop.rollout import RolloutController

    return RolloutController(settings_from_cli(config), model_name=model)


def _note(text: str) -> None:
    from mloop.cli.main import console

    console.print(text, markup=False, highlight=False)


def _steps_total(r: Rollout) -> int | None:
    steps = (r.config or {}).get("steps") if r.strategy == "canary" else None
    return len(steps) if isinstance(steps, list) and steps else None


def _step_text(r: Rollout) -> str:
    """``step 2 of 4``: the same number as ``step_number`` in ``--json`` (``step`` there counts from 0)."""
    total = _steps_total(r)
    return f"step {r.step + 1}" + (f" of {total}" if total else "")


def _as_dict(r: Rollout) -> dict[str, Any]:
    """The rollout as JSON, with ``step_number`` (and ``steps_total``) as the text prints them."""
    data = r.to_dict()
    data["step_number"] = r.step + 1
    data["steps_total"] = _steps_total(r)
    return data


def _show(r: Rollout, as_json: bool) -> None:
    from rich.table import Table

    from mloop.cli import fmt
    from mloop.cli.main import console

    if as_json:
        console.print_json(json.dumps(_as_dict(r), default=str))
        return
    colour = {
        "promoted": "green",
        "promoted_unverified": "yellow",
        "rolled_back": "red",
        "aborted": "yellow",
    }.get(r.state, "cyan")
    console.print(
        f"Rollout [bold]#{r.id}[/] of {r.model_name}: {r.strategy} v{r.candidate_version} against "
        f"v{r.baseline_version} — [{colour}]{r.state}[/] ({_step_text(r)})",
        highlight=False,
    )
    console.print(f"  {r.reason}", markup=False, highlight=False)
    table = Table("arm", "version", "traffic", box=None)
    for a in r.arms:
        share = f"copy of {a.share:.0%}" if a.shadow else f"{a.weight:.0%}"
        table.add_row(a.arm, f"v{a.version}", share)
    console.print(table)
    analysis = r.analysis or {}
    checks = analysis.get("checks") or []
    if checks:
        t = Table("check", "value", "threshold", "result", "detail", box=None)
        for c in checks:
            status = c.get("status") or {True: "passed", False: "failed", None: "not_evaluated"}[c["passed"]]
            result = {
                "passed": "[green]pass[/]",
                "failed": "[red]FAIL[/]",
                "inconclusive": "[yellow]inconclusive[/]",
            }.get(status, "[dim]not evaluated[/]")
            t.add_row(c["name"], fmt.num(c["value"]), fmt.num(c["threshold"]), result, c["detail"])
        console.print(t)
    if "verdict" in analysis and "comparisons" in analysis:
        console.print(f"  A/B: {analysis['verdict']}", markup=False, highlight=False)
        for c in analysis["comparisons"]:
            console.print(
                f"  {c['arm']} vs champion on {c['metric']}: n={fmt.num(c['n_challenger'])}/"
                f"{fmt.num(c['n_champion'])} (min {fmt.num(c['min_sample_size'])}), effect "
                f"{fmt.num(c['effect'])}, CI {fmt.interval(c.get('ci'))}, p={fmt.num(c['p_value'], 3)}",
                markup=False,
                highlight=False,
            )
    if "agreement_rate" in analysis:
        console.print(
            f"  shadow: agreement {fmt.pct(analysis['agreement_rate'])} over "
            f"{fmt.num(analysis['compared'])} requests, "
            f"latency ratio {fmt.num(analysis['latency_ratio'], 3)}",
            markup=False,
            highlight=False,
        )


def start(
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", "-s", help="canary | ab | shadow | direct (default: rollout.strategy)."),
    ] = None,
    version: Annotated[
        list[str] | None,
        typer.Option("--version", "-V", help="Version to roll out (default @challenger); repeat for A/B."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="A/B weights, champion first: e.g. 50,50.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    actor: ActorOpt = "cli",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Start a rollout of a new version."""
    from mloop.errors import ConfigError

    parsed = None
    if weights:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError as exc:
            raise ConfigError(
                f"--weights must be comma-separated numbers like 50,50; got {weights!r}."
            ) from exc
    ctl = _controller(config, model)
    try:
        r = ctl.start(strategy=strategy, versions=version or None, weights=parsed, actor=actor, reason=reason)
    finally:
        ctl.close()
    _show(r, as_json)


def status(
    rollout_id: IdOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Advance and print until the rollout ends.")
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List recent rollouts.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Show a rollout: arms, traffic, the last analysis (``--watch`` drives it to the end)."""
    from rich.table import Table

    from mloop.cli.main import console

    ctl = _controller(config, model)
    try:
        if show_all:
            rows = ctl.repo.list(ctl.model_name, limit=50)
            if as_json:
                console.print_json(json.dumps([_as_dict(r) for r in rows], default=str))
                return
            table = Table("id", "strategy", "candidate", "baseline", "state", "started", "reason")
            for r in rows:
                table.add_row(
                    str(r.id),
                    r.strategy,
                    f"v{r.candidate_version}",
                    f"v{r.baseline_version}",
                    r.state,
                    r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    r.reason,
                )
            console.print(table)
            return
        r = ctl.get(rollout_id)
        while watch and not r.terminal:
            r = ctl.advance(r.id, actor="cli:watch")
            _show(r, as_json)
            if r.terminal:
                break
            time.sleep(ctl.cfg.refresh_s)
        if not watch:
            _show(r, as_json)
    finally:
        ctl.close()


def promote(
    rollout_id: IdOpt = None,
    version: Annotated[
        str | None, typer.Option("--version", "-V", help="Arm version to promote (A/B).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    actor: ActorOpt = "cli",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Promote now: all traffic to the candidate (or the A/B winner) and move the champion alias.

    A rollout already promoted is reported as such (exit 0)."""
    ctl = _controller(config, model)
    try:
        before = ctl.get(rollout_id)
        r = ctl.promote(before.id, version=version, actor=actor, reason=reason)
    finally:
        ctl.close()
    if before.state == "promoted" and not as_json:
        _note(f"Rollout #{r.id} is already promoted (v{ctl.promoted_version(r)} is champion); nothing to do.")
        return
    if r.state == "promoting" and not as_json:
        _note(f"Rollout #{r.id} is being promoted by another process; see `mloop rollout status`.")
    _show(r, as_json)


def rollback(
    rollout_id: IdOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    actor: ActorOpt = "cli",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Roll back the active rollout (or --id); with none active, roll the deployment back.

    Rolling the deployment back swaps the `champion` and `previous` aliases: the previous champion
    serves again and the one it replaces becomes `previous` — like `cd -`, running it again rolls
    forward again. A rollout already rolled back is reported as such (exit 0)."""
    ctl = _controller(config, model)
    try:
        if rollout_id is None and ctl.current() is None:
            dep = ctl.rollback_deployment(actor=actor, reason=reason)
            _note(
                f"Champion of {dep.model_name} is back on v{dep.champion_version} "
                f"(was v{dep.previous_version}, now `previous`)."
            )
            return
        before = ctl.get(rollout_id)
        r = ctl.rollback(before.id, actor=actor, reason=reason, check="manual")
    finally:
        ctl.close()
    if before.state == "rolled_back" and not as_json:
        _note(f"Rollout #{r.id} is already rolled back (v{r.baseline_version} serves); nothing to do.")
        return
    _show(r, as_json)


def abort(
    rollout_id: IdOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    actor: ActorOpt = "cli",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Stop the rollout without judging it: the champion takes all traffic again."""
    ctl = _controller(config, model)
    try:
        before = ctl.get(rollout_id)
        r = ctl.abort(before.id, actor=actor, reason=reason)
    finally:
        ctl.close()
    if before.state == "aborted" and not as_json:
        _note(f"Rollout #{r.id} is already aborted; nothing to do.")
        return
    _show(r, as_json)


def register(app: typer.Typer) -> None:
    for fn in (start, status, promote, rollback, abort):
        rollout_app.command(fn.__name__)(fn)
    app.add_typer(rollout_app, name="rollout")
