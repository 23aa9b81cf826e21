"""The image `mloop deploy docker` generates builds from the project and serves a model from a
tracking server; its health check is unhealthy while the model cannot be loaded.

Opt-in (building an image takes minutes): MLOOP_DOCKER_TESTS=1, and a Docker engine that answers
`docker info`. No image is pulled: the base image is MLOOP_DOCKER_BASE_IMAGE, else `mloop-base:bookworm`,
built here once from Debian packages with debootstrap (python3, python3-venv, python-is-python3; the
host's CA bundle is copied in so that pip inside the build trusts what the host trusts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.processes import free_port, server, wait_http

# Building the image (and, the first time, its base) takes longer than the suite's default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

BASE_IMAGE = os.environ.get("MLOOP_DOCKER_BASE_IMAGE", "mloop-base:bookworm")
IMAGE = "mloop-e2e:test"
MLOOP = str(Path(sys.executable).parent / "mloop")
_ARTIFACTS: dict[str, Path] = {}
"""Tracking server URL -> the directory only that server reads its artifacts from."""


def _docker_or_skip() -> None:
    if os.environ.get("MLOOP_DOCKER_TESTS") != "1":
        pytest.skip("building images is opt-in: set MLOOP_DOCKER_TESTS=1")
    if shutil.which("docker") is None:
        pytest.skip("no docker command")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.skip(f"the Docker engine does not answer: {info.stderr.strip()[:200]}")


def _ensure_base_image(work: Path) -> None:
    probe = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False)
    if probe.returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        pytest.skip(
            f"no base image {BASE_IMAGE} and no debootstrap to build one (apt-get install debootstrap)"
        )
    rootfs = work / "rootfs"
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python-is-python3,ca-certificates",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [
            "docker",
            "import",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            "-",
            BASE_IMAGE,
        ],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
        timeout=600,
    )
    tar.wait()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _docker_or_skip()
    work = tmp_path_factory.mktemp("mlflow")

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{work / 'mlflow.db'}",
            "--artifacts-destination",
            str(work / "artifacts"),
            "--workers",
            "1",
        ]

    with server(command, work, ready_path="/health", timeout=120) as mlflow_server:
        _ARTIFACTS[mlflow_server.url] = work / "artifacts"
        yield mlflow_server.url


@pytest.fixture(scope="module")
def image(tracking_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("image")
    _ensure_base_image(work)
    project = work / "fraud"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    env["MLOOP_TRACKING__URI"] = tracking_server
    run = {"env": env, "capture_output": True, "text": True, "timeout": 900, "check": False}
    done = subprocess.run([MLOOP, "init", str(project), "--rows", "2000"], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([MLOOP, "train", "--config", str(project / "mloop.yaml")], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [MLOOP, "deploy", "docker", "--image", IMAGE, "--config", str(project / "mloop.yaml")], **run
    )
    assert done.returncode == 0, done.stdout + done.stderr
    build = subprocess.run(
        ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE, "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    yield IMAGE


def _run_container(image: str, tracking: str, port: int) -> str:
    done = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/lib/mloop:uid=10001,gid=10001",
            "-e",
            f"MLOOP_TRACKING__URI={tracking}",
            image,
            "mloop",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _health_check(container: str, port: int) -> int:
    """Run the image's own HEALTHCHECK command inside the container (at the port this test uses)."""
    inspect = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    test = json.loads(inspect.stdout)
    assert test[0] == "CMD" and "/ready" in test[-1]
    command = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in test[1:]]
    return subprocess.run(
        ["docker", "exec", container, *command], capture_output=True, check=False
    ).returncode


def test_image_serves_the_model_from_the_tracking_server(image: str, tracking_server: str) -> None:
    port = free_port()
    container = _run_container(image, tracking_server, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=240)
        assert _health_check(container, port) == 0
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert metrics.status_code == 200 and "mloop_model_info{" in metrics.text
        # The image carries the project's code but none of its data.
        listing = subprocess.run(
            ["docker", "exec", container, "ls", "/app"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert "train.py" in listing and "mloop.yaml" in listing and "data" not in listing
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def test_health_check_fails_while_the_model_cannot_load(image: str, tracking_server: str) -> None:
    port = free_port()
    # The registered version's files are gone from the server: the server process runs and /health
    # answers, but the model cannot load, so /ready and the image's health check must fail.
    artifacts = _ARTIFACTS[tracking_server]
    hidden = artifacts.with_name("artifacts-hidden")
    artifacts.rename(hidden)
    artifacts.mkdir()
    container = _run_container(image, tracking_server, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code != 200
        assert _health_check(container, port) != 0
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        artifacts.rmdir()
        hidden.rename(artifacts)


def test_report_image_size(image: str) -> None:
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    print(f"\nimage {image}: {size / 1e6:.0f} MB")
    assert size > 0
