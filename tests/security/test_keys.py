"""Who may write: keys per role (predict, feedback, read, admin) on every route, rotation, and wiring.

The attacks (issue 11): with mloop bound beyond loopback, anyone could predict, send labels that steer
monitoring and rollouts, and read the contract and reference data; ``mloop deploy`` dropped the only
key there was and exposed ``/predict`` and ``/feedback`` through the Ingress. Each test sends what an
attacker would and asserts it is refused.
"""

from __future__ import annotations

import contextlib
import hmac
from pathlib import Path
from typing import Any

import pytest
import yaml
from keyed_app import RECORD, served

from mloop.config import load_settings
from mloop.config.settings import ServingSettings, Settings
from mloop.deploy import DeployOptions, generate
from mloop.errors import ConfigError, Unauthorized
from mloop.server import auth
from mloop.server.auth import KeyRing, bind_warning

pytestmark = pytest.mark.anyio

KEYS = {
    "predict": ["predict-key-0001"],
    "feedback": ["feedback-key-0001"],
    "read": ["read-key-0000001"],
    "admin": ["admin-key-000001"],
}
FEEDBACK_BODY = {"prediction_id": "0" * 32, "label": 1}
# (method, path, json body, role)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/predict", {"features": RECORD}, "predict"),
    ("POST", "/invocations", {"dataframe_records": [RECORD]}, "predict"),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": k, "shape": [1], "datatype": "BYTES", "data": [v]} for k, v in RECORD.items()]},
        "predict",
    ),
    ("POST", "/feedback", FEEDBACK_BODY, "feedback"),
    ("GET", "/v2/models/toy", None, "read"),
    ("GET", "/openapi.json", None, "read"),
    ("GET", "/docs", None, "read"),
    ("GET", "/admin/status", None, "read"),
    ("POST", "/admin/reload", None, "admin"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOOP_ADMIN_TOKEN", raising=False)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _call(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if method == "GET":
        return await client.get(path, headers=headers)
    return await client.post(path, json=body, headers=headers)


async def test_every_route_needs_its_role_key_and_no_other(tmp_path: Path) -> None:
    async with served(tmp_path, keys=KEYS) as s:
        for method, path, body, role in ROUTES:
            none = await _call(s.client, method, path, body, {})
            assert none.status_code == 401, (path, none.text)
            assert none.headers["www-authenticate"] == "Bearer"
            for other in ("predict", "feedback", "read"):
                if other == role or (role == "read" and other == "admin"):
                    continue
                wrong = await _call(s.client, method, path, body, _bearer(KEYS[other][0]))
                assert wrong.status_code == 401, (path, other, wrong.text)
            forged = await _call(s.client, method, path, body, _bearer(KEYS[role][0] + "x"))
            assert forged.status_code == 401, path
            right = await _call(s.client, method, path, body, _bearer(KEYS[role][0]))
            assert right.status_code not in (401, 403), (path, right.text)
            admin = await _call(s.client, method, path, body, _bearer(KEYS["admin"][0]))
            assert admin.status_code not in (401, 403), (path, admin.text)


async def test_the_refusal_never_echoes_the_key_sent(tmp_path: Path) -> None:
    async with served(tmp_path, keys=KEYS) as s:
        r = await s.client.post("/predict", json={"features": RECORD}, headers=_bearer("guess-k3y-123456"))
        assert r.status_code == 401 and "guess-k3y" not in r.text
        assert "MLOOP_SERVING__KEYS__PREDICT" in r.json()["message"]


async def test_probes_and_metrics_stay_open_with_every_key_set(tmp_path: Path) -> None:
    async with served(tmp_path, keys=KEYS) as s:
        for path in ("/health", "/ready", "/metrics", "/v2/health/ready"):
            assert (await s.client.get(path)).status_code == 200, path


async def test_without_keys_routes_are_open_but_admin_is_disabled(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        assert (await s.client.post("/predict", json={"features": RECORD})).status_code == 200
        assert (await s.client.get("/openapi.json")).status_code == 200
        assert (await s.client.post("/admin/reload", headers=_bearer("anything"))).status_code == 403
        assert (await s.client.get("/admin/status")).status_code == 403


async def test_several_keys_per_role_rotate_without_downtime(tmp_path: Path) -> None:
    old, new = "old-predict-key-1", "new-predict-key-2"
    async with served(tmp_path, keys={"predict": [old, new]}) as s:
        for key in (old, new):
            r = await s.client.post("/predict", json={"features": RECORD}, headers=_bearer(key))
            assert r.status_code == 200
    async with served(tmp_path, keys={"predict": [new]}) as s:  # the old key is retired
        r = await s.client.post("/predict", json={"features": RECORD}, headers=_bearer(old))
        assert r.status_code == 401


def test_every_accepted_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = [f"key-number-{i:06d}" for i in range(4)]
    guard = KeyRing({"predict": keys}).guard("predict")
    assert guard is not None

    class Req:
        def __init__(self, key: str) -> None:
            self.scope = {"headers": [(b"authorization", f"Bearer {key}".encode())]}

    for given in (keys[0], keys[3], "k", "a-much-longer-wrong-key-than-any" * 4):
        calls.clear()
        with contextlib.suppress(Unauthorized):
            guard(Req(given))
        # One comparison per key, of fixed-size digests: neither the position of the match nor the
        # length of the key sent changes the work done.
        assert calls == [64] * len(keys), given


def test_keys_come_from_the_environment_verbatim_and_several_at_once() -> None:
    env = {"MLOOP_SERVING__KEYS__PREDICT": "0123,1e5", "MLOOP_SERVING__KEYS__ADMIN": "0x1f"}
    settings = load_settings(env=env)
    assert settings.serving.keys.predict == ["0123", "1e5"]
    assert settings.serving.keys.admin == ["0x1f"]


def test_keys_come_from_files_of_a_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "feedback").write_text("fb-key-one\nfb-key-two\n\n")
    (tmp_path / "admin").write_text("adm-key\n")
    ring = KeyRing.from_settings(ServingSettings(keys={"dir": str(tmp_path)}))
    assert ring.roles == ["feedback", "admin"]
    with pytest.raises(ConfigError, match="not a directory"):
        KeyRing.from_settings(ServingSettings(keys={"dir": str(tmp_path / "missing")}))


def test_a_key_with_spaces_or_control_characters_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"MLOOP_SERVING__KEYS__READ": "two words"})
    assert "two words" not in str(err.value)


async def test_the_deprecated_api_key_still_guards_predict_and_feedback(tmp_path: Path) -> None:
    async with served(tmp_path, api_key="legacy-key-12345") as s:
        assert (await s.client.post("/predict", json={"features": RECORD})).status_code == 401
        old = await s.client.post(
            "/predict", json={"features": RECORD}, headers={"X-API-Key": "legacy-key-12345"}
        )
        assert old.status_code == 200
        bearer = await s.client.post(
            "/predict", json={"features": RECORD}, headers=_bearer("legacy-key-12345")
        )
        assert bearer.status_code == 200
        assert (await s.client.post("/feedback", json=FEEDBACK_BODY)).status_code == 401


def test_binding_beyond_loopback_without_a_feedback_key_warns() -> None:
    bare = Settings()
    assert bind_warning(bare, "127.0.0.1") is None and bind_warning(bare, "::1") is None
    warning = bind_warning(bare, "0.0.0.0")
    assert warning is not None and "MLOOP_SERVING__KEYS__FEEDBACK" in warning
    keyed = Settings(serving=ServingSettings(keys={"feedback": ["f-key-0000000001"]}))
    assert bind_warning(keyed, "0.0.0.0") is None


def test_mloop_serve_prints_the_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from mloop.cli.main import app

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    (tmp_path / "mloop.yaml").write_text("project: p\n")
    monkeypatch.chdir(tmp_path)
    for name in ("MLOOP_SERVING__KEYS__FEEDBACK", "MLOOP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    out = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"]).output
    assert "no feedback" in out and "MLOOP_SERVING__KEYS__FEEDBACK" in out
    monkeypatch.setenv("MLOOP_SERVING__KEYS__FEEDBACK", "f-key-0000000001")
    assert "no feedback" not in CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"]).output


# -- deployment ----------------------------------------------------------------------------------
def _project(tmp_path: Path) -> Settings:
    (tmp_path / "mloop.yaml").write_text(
        "project: fraud\nmodel: {name: fraud}\n"
        "serving: {admin_token: plain-admin, api_key: plain-key, keys: {predict: [plain-predict]}}\n"
    )
    return load_settings(tmp_path / "mloop.yaml")


def _env_of(manifest: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    pods = [d["spec"]["template"]["spec"] for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
    return {e["name"]: e for pod in pods for c in pod["containers"] for e in c.get("env", [])}


@pytest.mark.parametrize("target", ["k8s", "helm"])
def test_deploy_wires_every_key_from_the_secret_and_never_writes_one(tmp_path: Path, target: str) -> None:
    settings = _project(tmp_path)
    written = generate(target, settings, tmp_path / "out", DeployOptions())
    text = "\n".join(p.read_text() for p in written if p.is_file())
    for secret in ("plain-admin", "plain-key", "plain-predict"):
        assert secret not in text
    if target == "k8s":
        env = _env_of((tmp_path / "out" / "deployment.yaml").read_text())
        for role in ("PREDICT", "FEEDBACK", "READ", "ADMIN"):
            ref = env[f"MLOOP_SERVING__KEYS__{role}"]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == f"{role.lower()}-keys"
            # Behind the Ingress the pods do not start without the keys that guard it.
            assert ref["optional"] is (role == "ADMIN")


def test_an_ingress_fronts_only_pods_that_require_keys_unless_public(tmp_path: Path) -> None:
    settings = _project(tmp_path)

    def refs(out: str, **options: Any) -> tuple[dict[str, bool], bool]:
        written = generate("k8s", settings, tmp_path / out, DeployOptions(**options))
        env = _env_of((tmp_path / out / "deployment.yaml").read_text())
        optional = {
            role: env[f"MLOOP_SERVING__KEYS__{role.upper()}"]["valueFrom"]["secretKeyRef"]["optional"]
            for role in ("predict", "feedback", "read", "admin")
        }
        return optional, any(p.name == "ingress.yaml" for p in written)

    # Default: an Ingress, and pods that do not start without the keys guarding what it exposes.
    assert refs("default") == ({"predict": False, "feedback": False, "read": False, "admin": True}, True)
    # --public: the Ingress fronts pods that may run open, because the user said so.
    assert refs("public", public=True) == ({r: True for r in ("predict", "feedback", "read", "admin")}, True)
    # --no-ingress: nothing is exposed; keys stay optional (in-cluster callers).
    assert refs("internal", ingress=False) == (
        {r: True for r in ("predict", "feedback", "read", "admin")},
        False,
    )


def test_deploy_cli_takes_public_and_no_ingress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mloop.cli.main import app

    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["deploy", "k8s", "--public", "--out", "pub"])
    assert result.exit_code == 0, result.output
    assert "optional: true" in (tmp_path / "pub" / "deployment.yaml").read_text()
    result = CliRunner().invoke(app, ["deploy", "k8s", "--no-ingress", "--out", "int"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "int" / "ingress.yaml").exists()
