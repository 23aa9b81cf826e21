"""The Dockerfile and its build context. Docker cannot run here, so the tests read the files and
check that the commands they run are the project's real entry points."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and "-slim" in base.group(1)
    assert re.search(r"pip install -c /tmp/constraints\.txt \"\$\{MLOOP_PACKAGE\}\"", dockerfile)
    assert re.search(r"^COPY constraints\.txt ", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    # /ready fails while the model is not loaded; /health would call such a server healthy.
    assert "HEALTHCHECK" in dockerfile and "http://127.0.0.1:8000/ready" in dockerfile
    assert "/health'" not in dockerfile
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
    assert "**" in ignore and "!mloop.image.yaml" in ignore and "!mloop.yaml" not in ignore
    assert ignore.index("**") < ignore.index("!mloop.image.yaml")


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


def test_no_line_needs_a_registry_besides_the_base_image(project: Path) -> None:
    dockerfile = _files(project)["Dockerfile"]
    assert not re.search(r"^#\s*syntax=", dockerfile, re.M | re.I)
    assert "COPY --chmod" not in dockerfile  # BuildKit-only: the classic builder must build it too
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE=python:\$\{PYTHON_VERSION\}-slim-bookworm$", dockerfile, re.M)
    assert dockerfile.index("ARG BASE_IMAGE") < dockerfile.index("FROM ")


def test_pip_is_pinned(project: Path) -> None:
    from importlib import metadata

    dockerfile = _files(project)["Dockerfile"]
    assert f"ARG PIP_VERSION={metadata.version('pip')}" in dockerfile
    assert 'pip install "pip==${PIP_VERSION}"' in dockerfile
    assert "--upgrade" not in dockerfile


def test_a_development_checkout_ships_its_wheel(project: Path) -> None:
    import zipfile

    from mloop.deploy.wheel import source_checkout

    assert source_checkout() is not None, "the tests run from an editable checkout"
    files = _files(project)
    wheels = list((project / "wheels").glob("mloop-*.whl"))
    assert len(wheels) == 1
    name = wheels[0].name
    with zipfile.ZipFile(wheels[0]) as whl:
        assert "mloop/deploy/templates/docker/Dockerfile.j2" in whl.namelist()
    dockerfile, ignore = files["Dockerfile"], files[".dockerignore"].splitlines()
    assert f"COPY wheels/{name} /tmp/wheels/{name}" in dockerfile
    assert f'ARG MLOOP_PACKAGE="mloop[postgres] @ file:///tmp/wheels/{name}"' in dockerfile
    assert f"!wheels/{name}" in ignore
    # An explicit requirement wins and no wheel goes in.
    other = _files(project, mloop_package="mloop[postgres]==9.9.9")
    assert "COPY wheels/" not in other["Dockerfile"] and "!wheels/" not in other[".dockerignore"]
    assert 'ARG MLOOP_PACKAGE="mloop[postgres]==9.9.9"' in other["Dockerfile"]


def test_a_released_mloop_installs_from_the_index(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mloop
    from mloop.deploy import wheel

    monkeypatch.setattr(wheel, "source_checkout", lambda: None)
    monkeypatch.setattr(sys.modules["mloop.deploy.generate"], "source_checkout", lambda: None)
    dockerfile = _files(project)["Dockerfile"]
    assert f'ARG MLOOP_PACKAGE="mloop[postgres]=={mloop.__version__}"' in dockerfile
    assert not (project / "wheels").exists()


def test_the_image_carries_the_project_code_but_not_its_data(project: Path) -> None:
    (project / "train.py").write_text("def build(task, seed, **params): ...\n")
    (project / "features").mkdir()
    (project / "features" / "__init__.py").write_text("")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text("a,b\n1,2\n")
    (project / "tests").mkdir()
    (project / "tests" / "__init__.py").write_text("")
    (project / "notes.txt").write_text("x")
    files = _files(project)
    dockerfile, ignore = files["Dockerfile"], files[".dockerignore"].splitlines()
    assert "COPY train.py /app/train.py" in dockerfile
    assert "COPY features/ /app/features/" in dockerfile
    assert "!train.py" in ignore and "!features/**" in ignore
    for kept_out in ("data", "tests", "notes.txt", ".mloop"):
        assert not any(line.startswith(f"!{kept_out}") for line in ignore)
        assert f"COPY {kept_out}" not in dockerfile


def test_the_image_drops_mlflows_server_but_nothing_mloop_needs(project: Path) -> None:
    from mloop.deploy.docker import server_only_distributions
    from mloop.deploy.lock import freeze_closure

    removed = {name.lower() for name in server_only_distributions()}
    assert {"mlflow", "flask", "gunicorn"} <= removed
    kept = {name.lower() for name in freeze_closure("mloop", ("postgres",), skip=frozenset({"mlflow"}))}
    kept |= {name.lower() for name in freeze_closure("mlflow-skinny", ())}
    assert not removed & kept, removed & kept
    dockerfile = _files(project)["Dockerfile"]
    assert "pip uninstall -y " in dockerfile and "--force-reinstall" in dockerfile
    assert "mlflow-tracing mlflow-skinny" in dockerfile and "import mloop.cli.main" in dockerfile
    # With training Jobs the loop needs the Kubernetes client, and keeps what it requires.
    jobs = _files(project, training_jobs=True)["Dockerfile"]
    assert "mloop[postgres,kubernetes]" in jobs
    assert "aiohttp " not in jobs.split("pip uninstall -y ", 1)[1].split("\\", 1)[0] + " "
