"""The OpenAPI schema matches behaviour: schemathesis, every check, against a real `mloop serve`.

A small project is trained, served with an admin key, and schemathesis (its CLI, in a subprocess)
generates valid and invalid requests for every route from ``/openapi.json``: no server error, no
undocumented status or content type, no body that breaks its documented schema, and requests the
schema forbids are refused. Bounded by ``--max-examples`` and a fixed seed, so it runs in a couple of
minutes and a failure replays.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.processes import mloop_server

ADMIN_KEY = "schemathesis-admin-key"
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
    "schemathesis"
)
# Where a rule spans fields, JSON Schema cannot state it and a schema-valid request may still be
# refused with 422 (tests/security/test_openapi_contract.py covers those rules): a V2 tensor's shape
# against its data, dataframe_split rows against its columns, a label against the classes of the
# version that made the prediction (and labels of one id that fail in different ways), and a
# version number sent as 3.0 (JSON Schema counts it as an integer; the admin API takes integers).
# /invocations and the V2 routes answer such refusals with their protocol's 400 (MLflow's and
# KServe's status), /predict and /feedback with mloop's 422.
CONFIG = """
[[operations]]
include-path-regex = "^/(invocations|v2/models/.*/infer|feedback|admin/reload)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]
"""

pytestmark = pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (dev extra)")


def _mloop(cwd: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"mloop {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("schemathesis")
    _mloop(root, "init", "demo", "--template", "fraud", "--rows", "1000")
    project = root / "demo"
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    config.write_text(text.replace("model:\n", "model:\n  params: {n_estimators: 20}\n", 1))
    _mloop(project, "train")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    env["MLOOP_SERVING__KEYS__ADMIN"] = ADMIN_KEY
    with mloop_server(project, "--log-level", "warning", env=env, timeout=180) as server:
        yield server.url


def test_openapi_documents_what_the_server_answers(served: str) -> None:
    spec = httpx.get(f"{served}/openapi.json", timeout=10).json()
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    predict = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "401", "413", "422", "503"} <= set(predict)
    assert predict["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    # Routes that need a key say so (only the admin key is set here), so schemathesis' ignored_auth
    # check calls them without it and expects a refusal.
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/admin/reload"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/predict"]["post"]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served: str, tmp_path: Path) -> None:
    assert SCHEMATHESIS is not None
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            f"{served}/openapi.json",
            "--checks",
            "all",
            "-H",
            f"Authorization: Bearer {ADMIN_KEY}",
            "--max-examples",
            "10",
            "--workers",
            "2",
            "--seed",
            "20261129",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-12000:]
    summary = out[out.rfind("SUMMARY") :]
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counts is not None, summary
    assert int(counts.group(1)) > 500 and counts.group(1) == counts.group(2), summary
