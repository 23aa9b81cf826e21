"""Kubernetes manifests and the Helm chart: schema-valid for Kubernetes 1.30, and what the issue asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_helm_subset import HelmSubset

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


def _by_kind(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    for d in docs:
        labels = d["metadata"].get("labels", {})
        if d["kind"] == kind and (
            component is None or labels.get("app.kubernetes.io/component") == component
        ):
            return d
    raise AssertionError(f"no {kind} ({component}) in {[d['kind'] for d in docs]}")


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["metadata"]["name"] and isinstance(doc["spec"], dict)
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
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "Service",
            "ServiceMonitor",
        ]
    )
    _validate(docs)


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


def test_ingress_has_tls_and_the_loop_is_a_single_replica(settings: Settings) -> None:
    docs = _docs(render_manifests(build_values(settings, DeployOptions(host="fraud.acme.io"))))
    ingress = _by_kind(docs, "Ingress")
    assert ingress["spec"]["tls"][0]["hosts"] == ["fraud.acme.io"]
    assert ingress["spec"]["tls"][0]["secretName"] == "fraud-scoring-tls"
    loop = _by_kind(docs, "Deployment", "loop")
    assert loop["spec"]["replicas"] == 1 and loop["spec"]["strategy"]["type"] == "Recreate"
    assert loop["spec"]["template"]["spec"]["containers"][0]["args"] == ["mloop", "run"]
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
    assert values == build_values(settings, options)
    _validate(_docs(render_manifests(values)))


@pytest.mark.parametrize("toggle", [None, "ingress.enabled", "autoscaling.enabled", "loop.enabled"])
def test_helm_templates_render_to_valid_manifests(
    settings: Settings, tmp_path: Path, toggle: str | None
) -> None:
    chart = _chart(settings, tmp_path, DeployOptions(target_rps=25))
    values = yaml.safe_load((chart / "values.yaml").read_text())
    if toggle:
        section, key = toggle.split(".")
        values[section][key] = False
    helm = HelmSubset(chart, values)
    rendered = {name: helm.render(name) for name in MANIFESTS}
    docs = _docs(rendered)
    _validate(docs)
    # Same objects as the plain manifests, apart from Helm's own labels and the config checksum.
    plain = _docs(render_manifests(values))
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
