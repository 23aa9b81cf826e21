"""docs/deploy.md ("Deploy to Kubernetes") followed as a new user would: every `mloop` command exists,
and every file a later command uses was written by an earlier `mloop deploy` command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from mloop.cli.main import app

DOC = Path(__file__).resolve().parents[3] / "docs" / "deploy.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    lines: list[str] = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        lines += [
            ln.split(" #")[0].strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")
        ]
    return lines


def test_doc_commands_run_in_order(project_dir: Path) -> None:
    (project_dir / "mloop.yaml").write_text("project: fraud\nmodel: {name: fraud}\n")
    runner = CliRunner()
    ran = 0
    for line in _commands():
        words = shlex.split(line, comments=True)
        env = {}  # `VAR=value mloop deploy …`: the variables of that one command, as a shell sets them
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if words[:2] == ["mloop", "deploy"]:
            result = runner.invoke(app, words[1:], env=env or None)
            assert result.exit_code == 0, f"{line}\n{result.output}"
            ran += 1
        elif words and words[0] == "mloop":
            sub = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
            result = runner.invoke(app, [*sub, "--help"])
            assert result.exit_code == 0, f"{line}\n{result.output}"
        # Paths that kubectl/helm/docker/promtool read must exist by the time they run.
        for word in words[1:]:
            if word.startswith(("deploy/", "./")) or word in {"."}:
                assert (project_dir / word).exists(), f"{line!r} uses {word}, which no earlier step wrote"
    assert ran >= 5
