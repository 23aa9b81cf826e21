"""Kubernetes manifests and the Helm chart: schema-valid for Kubernetes 1.30, and what the issue asks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_helm_subset import HelmSubset
from referencing import Registry, Resource

from mloop.config import Settings, load_settings
from mloop.deploy import (
    KUBERNETES_VERSION,
    MANIFESTS,
    DeployOptions,
    build_values,
    generate,
    render_manifests,
)
from mloop.deploy.values import SECRET_KEYS

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator CRDs: not in the Kubernetes schemas


@pytest.fixture
def settings(project_dir: Path) -> Settings:
    (project_dir / "mloop.yaml").write_text(
        "project: Fraud_Scoring\n"
        "model: {name: fraud, target: is_fraud}\n"
        "gates: {thresholds: {roc_auc: 0.8}}\n"
        "store: {url: 'postgresql+psycopg://u:secret@db/mloop'}\n"
        "serving: {workers: 2, admin_token: hunter2}\n"
    )
    return load_settings(project_dir / "mloop.yaml")


def _docs(files: dict[str, str]) -> list[dict[str, Any]]:
    return [d for text in files.values() for d in yaml.safe_load_all(text) if d]


def _by_kind(
    docs: list[dict[str, Any]], kind: str, component: str | None = None, name: str | None = None
) -> dict[str, Any]:
    for d in docs:
        labels = d["metadata"].get("labels", {})
        if (
            d["kind"] == kind
            and (component is None or labels.get("app.kubernetes.io/component") == component)
            and (name is None or d["metadata"]["name"] == name)
        ):
            return d
    raise AssertionError(f"no {kind} ({component}) in {[d['kind'] for d in docs]}")


_SCHEMAS = Path(__file__).parent / "crd_schemas"


def _crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator for ``kind`` from the schemas written from the Prometheus Operator's API reference."""
    schemas = {json.loads(p.read_text())["$id"]: json.loads(p.read_text()) for p in _SCHEMAS.glob("*.json")}
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in schemas.items()
    )
    schema = schemas[f"https://mloop.invalid/crd/{kind.lower()}.json"]
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            _crd_validator(doc["kind"]).validate(doc)
            continue
        # strict: unknown fields are errors too
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_validates_against_kubernetes_schema(settings: Settings) -> None:
    docs = _docs(render_manifests(build_values(settings, DeployOptions(target_rps=25))))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    _validate(docs)
    with_jobs = _docs(render_manifests(build_values(settings, DeployOptions(training_jobs=True))))
    assert {"Role", "RoleBinding"} <= {d["kind"] for d in with_jobs}
    _validate(with_jobs)
    # The training Job template the loop creates Jobs from is a valid Job too.
    job = yaml.safe_load(
        _by_kind(with_jobs, "ConfigMap", None, "fraud-scoring-training-job")["data"]["job.yaml"]
    )
    assert job["kind"] == "Job" and job["metadata"]["generateName"] == "fraud-scoring-train-"
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_crd_schemas_catch_a_misspelt_or_mistyped_field(settings: Settings, kind: str) -> None:
    doc = _by_kind(_docs(render_manifests(build_values(settings, DeployOptions()))), kind)
    validator = _crd_validator(kind)
    validator.validate(doc)
    if kind == "ServiceMonitor":
        doc["spec"]["endpoints"][0]["interval"] = "15 seconds"
    else:
        doc["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)


def test_schema_validation_catches_a_broken_manifest(settings: Settings) -> None:
    # Guards the test above against validating nothing: a wrong type must be refused.
    deployment = _by_kind(
        _docs(render_manifests(build_values(settings, DeployOptions()))), "Deployment", "server"
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_server_pods_probe_limit_drain_and_run_unprivileged(settings: Settings) -> None:
    values = build_values(settings, DeployOptions(drain_seconds=30))
    docs = _docs(render_manifests(values))
    pod = _by_kind(docs, "Deployment", "server")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 30
    assert container["args"][:2] == ["mloop", "serve"]
    assert container["args"][container["args"].index("--workers") + 1] == "2"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/mloop", "/etc/mloop"} <= mounts  # writable dirs despite a read-only root


def test_urls_come_from_the_secret_and_never_from_the_configmap(settings: Settings, tmp_path: Path) -> None:
    docs = _docs(render_manifests(build_values(settings, DeployOptions(secret_name="fraud-db"))))
    config_text = _by_kind(docs, "ConfigMap")["data"]["mloop.yaml"]
    assert "secret" not in config_text and "hunter2" not in config_text
    env = {
        e["name"]: e
        for e in _by_kind(docs, "Deployment", "server")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for key, (name, optional) in SECRET_KEYS.items():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref["optional"]) == ("fraud-db", key, optional)
    assert env["MLOOP_STORE__URL"]["valueFrom"]["secretKeyRef"]["optional"] is False
    # The ConfigMap is a valid mloop.yaml for the pods.
    (tmp_path / "mloop.yaml").write_text(config_text)
    in_pod = load_settings(tmp_path / "mloop.yaml", env={})
    assert (in_pod.model.name, in_pod.serving.host, in_pod.home) == ("fraud", "0.0.0.0", "/var/lib/mloop")


def test_autoscaler_uses_cpu_and_optionally_requests_per_second(settings: Settings) -> None:
    plain = _by_kind(
        _docs(render_manifests(build_values(settings, DeployOptions()))), "HorizontalPodAutoscaler"
    )
    assert [m["type"] for m in plain["spec"]["metrics"]] == ["Resource"]
    rps = _by_kind(
        _docs(render_manifests(build_values(settings, DeployOptions(target_rps=25)))),
        "HorizontalPodAutoscaler",
    )
    assert [m["type"] for m in rps["spec"]["metrics"]] == ["Resource", "Pods"]
    assert rps["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "25"


def test_ingress_has_tls_and_the_loop_runs_as_leader_and_standby(settings: Settings) -> None:
    docs = _docs(render_manifests(build_values(settings, DeployOptions(host="fraud.acme.io"))))
    ingress = _by_kind(docs, "Ingress")
    assert ingress["spec"]["tls"][0]["hosts"] == ["fraud.acme.io"]
    assert ingress["spec"]["tls"][0]["secretName"] == "fraud-scoring-tls"
    loop = _by_kind(docs, "Deployment", "loop")
    # Two replicas: the store's lease elects the leader, the other waits as a standby.
    assert loop["spec"]["replicas"] == 2 and loop["spec"]["strategy"]["type"] == "RollingUpdate"
    assert loop["spec"]["template"]["spec"]["containers"][0]["args"] == ["mloop", "run", "--no-serve"]
    rule_names = {r["alert"] for g in _by_kind(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert {"MloopHighErrorRate", "MloopLatencySLOBreach", "MloopDataDrift", "MloopLoopStalled"} <= rule_names


def test_disabled_parts_are_left_out(settings: Settings) -> None:
    values = build_values(settings, DeployOptions())
    values["ingress"]["enabled"] = False
    values["loop"]["enabled"] = False
    values["autoscaling"]["enabled"] = False
    files = render_manifests(values)
    assert "ingress.yaml" not in files and "loop.yaml" not in files and "hpa.yaml" not in files
    deployment = _by_kind(_docs(files), "Deployment", "server")
    assert deployment["spec"]["replicas"] == values["replicaCount"]
    _validate(_docs(files))


# ---- Helm ----------------------------------------------------------------------------------------
def _chart(settings: Settings, out: Path, options: DeployOptions) -> Path:
    generate("helm", settings, out, options)
    return out / "fraud-scoring"


def test_chart_values_yaml_renders_the_same_manifests(settings: Settings, tmp_path: Path) -> None:
    options = DeployOptions(target_rps=25)
    chart = _chart(settings, tmp_path, options)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    expected = build_values(settings, options)
    assert expected.pop("manifests") == {"name": "fraud-scoring", "namespace": "default"}
    assert values == expected and values["fullnameOverride"] == ""
    values["fullnameOverride"] = "fraud-scoring"
    _validate(_docs(render_manifests(values)))


@pytest.mark.parametrize(
    "toggle",
    [
        None,
        "ingress.enabled",
        "autoscaling.enabled",
        "loop.enabled",
        "trainingJob.enabled",
        "networkPolicy.enabled",
    ],
)
def test_helm_templates_render_to_valid_manifests(
    settings: Settings, tmp_path: Path, toggle: str | None
) -> None:
    chart = _chart(settings, tmp_path, DeployOptions(target_rps=25))
    values = yaml.safe_load((chart / "values.yaml").read_text())
    if toggle:
        section, key = toggle.split(".")
        values[section][key] = not values[section][key]
    helm = HelmSubset(chart, values, release="rel", namespace="ml")
    rendered = {name: helm.render(name) for name in MANIFESTS}
    docs = _docs(rendered)
    _validate(docs)
    # Same objects as the plain manifests named "rel" in "ml", apart from Helm's own labels and the
    # config checksum.
    plain = _docs(render_manifests({**values, "manifests": {"name": "rel", "namespace": "ml"}}))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        (d["kind"], d["metadata"]["name"]) for d in plain
    ]
    for ours, theirs in zip(docs, plain, strict=True):
        assert ours.get("spec", {}).get("selector") == theirs.get("spec", {}).get("selector")
        if ours["kind"] == "Deployment":
            a, b = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
            assert a == b


def test_chart_metadata_and_helpers(settings: Settings, tmp_path: Path) -> None:
    chart = _chart(settings, tmp_path, DeployOptions())
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "fraud-scoring" and meta["type"] == "application"
    helpers = (chart / "templates" / "_helpers.tpl").read_text()
    for name in ("mloop.fullname", "mloop.selectorLabels", "mloop.labels"):
        assert f'define "{name}"' in helpers
    assert '{{- define "mloop.fullname" -}}' in helpers and "{{- end -}}" in helpers


def test_helm_names_objects_after_the_release_and_puts_them_in_its_namespace(
    settings: Settings, tmp_path: Path
) -> None:
    chart = _chart(settings, tmp_path, DeployOptions(training_jobs=True))
    values = yaml.safe_load((chart / "values.yaml").read_text())
    names: dict[str, set[tuple[str, str]]] = {}
    for release in ("blue", "green"):
        docs = _docs({n: HelmSubset(chart, values, release, "team-a").render(n) for n in MANIFESTS})
        assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}
        names[release] = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert all(name.startswith(release) for _, name in names[release])
    assert not names["blue"] & names["green"], "two releases of one chart must not collide"
    values["fullnameOverride"] = "fraud"
    docs = _docs({n: HelmSubset(chart, values, "blue").render(n) for n in MANIFESTS})
    assert {d["metadata"]["name"].split("-")[0] for d in docs} == {"fraud"}


def test_every_object_has_the_namespace(settings: Settings) -> None:
    docs = _docs(
        render_manifests(build_values(settings, DeployOptions(namespace="ml-prod", training_jobs=True)))
    )
    assert {d["metadata"].get("namespace") for d in docs} == {"ml-prod"}
    binding = _by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "ml-prod"
    with pytest.raises(ValueError, match="namespace"):
        DeployOptions(namespace="Not_A_Namespace")


def test_service_accounts_allow_the_loop_only_to_create_get_and_watch_jobs(settings: Settings) -> None:
    docs = _docs(render_manifests(build_values(settings, DeployOptions(training_jobs=True))))
    server = _by_kind(docs, "Deployment", "server")["spec"]["template"]["spec"]
    loop = _by_kind(docs, "Deployment", "loop")["spec"]["template"]["spec"]
    assert (server["serviceAccountName"], server["automountServiceAccountToken"]) == ("fraud-scoring", False)
    assert (loop["serviceAccountName"], loop["automountServiceAccountToken"]) == ("fraud-scoring-loop", True)
    role = _by_kind(docs, "Role")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "watch"]}
    ]
    binding = _by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["fraud-scoring-loop"]
    env = {e["name"]: e for e in loop["containers"][0]["env"]}
    assert env["MLOOP_TRAINING_JOB_TEMPLATE"]["value"] == "/etc/mloop/job/job.yaml"
    assert env["MLOOP_CONTROL__RETRAIN_DATA"]["value"] == "source"  # what a Job's pod can read
    assert env["MLOOP_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # Without training Jobs the loop has no token and no Role exists.
    docs = _docs(render_manifests(build_values(settings, DeployOptions())))
    assert (
        _by_kind(docs, "Deployment", "loop")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )
    assert not {"Role", "RoleBinding"} & {d["kind"] for d in docs}


def test_every_pod_runs_in_cluster_mode_with_pull_secrets_spread_and_extra_env(settings: Settings) -> None:
    values = build_values(settings, DeployOptions(training_jobs=True, image_pull_secrets=["regcred"]))
    values["extraEnv"] = [{"name": "MLOOP_PREDICTION_LOG__RETENTION_DAYS", "value": "30"}]
    docs = _docs(render_manifests(values))
    job = yaml.safe_load(_by_kind(docs, "ConfigMap", None, "fraud-scoring-training-job")["data"]["job.yaml"])
    pods = [
        _by_kind(docs, "Deployment", "server")["spec"]["template"]["spec"],
        _by_kind(docs, "Deployment", "loop")["spec"]["template"]["spec"],
        job["spec"]["template"]["spec"],
    ]
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MLOOP_CLUSTER"] == "1"
        assert env["MLOOP_PREDICTION_LOG__RETENTION_DAYS"] == "30"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    for pod in pods[:2]:
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        component = pod["containers"][0]["name"]
        assert all(
            c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component for c in spread
        )
    _validate(docs)


def test_network_policy_admits_only_the_http_port(settings: Settings) -> None:
    values = build_values(settings, DeployOptions())
    policy = _by_kind(_docs(render_manifests(values)), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "mloop",
        "app.kubernetes.io/instance": "fraud-scoring",
    }
    values["networkPolicy"]["from"] = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    policy = _by_kind(_docs(render_manifests(values)), "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == values["networkPolicy"]["from"]
    _validate([policy])
