"""The Dockerfile and its build context. Docker cannot run here, so the tests read the files and
check that the commands they run are the project's real entry points."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mloop.cli.main import app
from mloop.config import load_settings
from mloop.deploy import DeployOptions, generate
from mloop.deploy.lock import freeze_closure


@pytest.fixture
def project(project_dir: Path) -> Path:
    (project_dir / "mloop.yaml").write_text(
        "project: fraud\nmodel: {name: fraud}\nstore: {url: 'postgresql+psycopg://u:pw@db/x'}\n"
        "serving: {workers: 3}\n"
    )
    return project_dir


def _files(project: Path, **options: object) -> dict[str, str]:
    generate("docker", load_settings(project / "mloop.yaml"), project, DeployOptions(**options))
    return {p.name: p.read_text() for p in project.iterdir() if p.is_file()}


def test_dockerfile_is_slim_pinned_non_root_and_health_checked(project: Path) -> None:
    dockerfile = _files(project)["Dockerfile"]
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert froms and all("-slim" in f for f in froms)
    assert re.search(r"pip install -c /tmp/constraints\.txt \"\$\{MLOOP_PACKAGE\}\"", dockerfile)
    assert re.search(r"^COPY constraints\.txt ", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert "HEALTHCHECK" in dockerfile and "http://127.0.0.1:8000/health" in dockerfile
    assert dockerfile.index("USER") < dockerfile.index("ENTRYPOINT")


def test_lock_pins_every_dependency(project: Path) -> None:
    lock = _files(project)["constraints.txt"]
    pins = [line for line in lock.splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s=]+", p) for p in pins)
    names = {p.split("==")[0].lower() for p in pins}
    assert {"mlflow", "fastapi", "psycopg"} <= names
    assert "mloop" not in names


def test_project_lock_wins(project: Path) -> None:
    (project / "constraints.txt").write_text("numpy==2.0.0\n")
    assert _files(project)["constraints.txt"] == "numpy==2.0.0\n"


def test_freeze_closure_follows_extras() -> None:
    pins = freeze_closure("mloop", ("postgres",))
    assert "psycopg" in {k.lower() for k in pins}
    assert "psycopg" not in {k.lower() for k in freeze_closure("mloop", ())}


def test_image_config_holds_no_secrets_and_listens_on_all_interfaces(project: Path) -> None:
    files = _files(project)
    assert "pw@" not in files["mloop.image.yaml"]
    image_settings = load_settings(project / "mloop.image.yaml", env={})
    assert image_settings.serving.host == "0.0.0.0" and image_settings.store.url is None
    ignore = files[".dockerignore"].splitlines()
    assert ignore[1] == "**" and "!mloop.image.yaml" in ignore and "!mloop.yaml" not in ignore


def test_entrypoint_is_valid_shell_and_requires_a_tracking_server(project: Path) -> None:
    script = project / "mloop-entrypoint.sh"
    _files(project)
    assert script.stat().st_mode & 0o111
    sh = shutil.which("sh")
    assert sh is not None
    assert subprocess.run([sh, "-n", str(script)], check=False).returncode == 0
    done = subprocess.run(
        [sh, str(script), "true"],
        env={"PATH": "/usr/bin:/bin", "MLOOP_HOME": str(project / "h")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 64 and "MLOOP_TRACKING__URI" in done.stderr
    done = subprocess.run(
        [sh, str(script), "echo", "started"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "MLOOP_HOME": str(project / "h"), "MLOOP_TRACKING__URI": "x"},
    )
    assert done.returncode == 0 and done.stdout.strip() == "started"


def test_baked_image_needs_a_registered_model(project: Path) -> None:
    from mloop.errors import DeployError

    with pytest.raises(DeployError, match="nothing to bake"):
        _files(project, model_source="baked")


def _cmd_json(dockerfile: str) -> list[str]:
    import json

    line = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert line
    return list(json.loads(line.group(1)))


def test_cmd_is_a_real_mloop_serve_invocation(project: Path) -> None:
    cmd = _cmd_json(_files(project)["Dockerfile"])
    assert cmd[:2] == ["mloop", "serve"] and cmd[cmd.index("--workers") + 1] == "3"
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in (o for o in cmd[2:] if o.startswith("--")):
        assert option in result.output, f"`mloop serve` has no {option} option"
