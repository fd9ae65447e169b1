"""The Kubernetes manifests, checked without a cluster.

Every object is validated with ``kubernetes-validate`` (PyPI; it ships the upstream OpenAPI
schemas, used offline) in strict mode, which refuses unknown fields, against the oldest and the
newest Kubernetes minor versions we claim.  When ``kubectl`` is installed, the kustomization is
also rendered with ``kubectl kustomize`` (offline) and the rendered objects validated.
"""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from tests.deploy.kits import KUBERNETES, config, load_yaml, load_yaml_all, tool

#: Kubernetes minor versions the manifests are validated against (oldest supported, newest).
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def _kustomization() -> dict[str, Any]:
    data = load_yaml(KUBERNETES / "kustomization.yaml")
    assert isinstance(data, dict)
    return data


@functools.cache
def _load_objects() -> tuple[dict[str, Any], ...]:
    names = _kustomization()["resources"]
    return tuple(obj for name in names for obj in load_yaml_all(KUBERNETES / name))


def _objects() -> list[dict[str, Any]]:
    """Every object of the kustomization's resources (fresh copies: tests may change them)."""
    return copy.deepcopy(list(_load_objects()))


def _find(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_matches_the_kubernetes_schema(version: str) -> None:
    objects = _objects()
    assert len(objects) >= 8
    for obj in objects:
        _validate(obj, version)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda sts: sts["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),
        lambda sts: sts["spec"].update(replicas="one"),
        lambda sts: sts["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ],
    ids=["misspelt-field", "wrong-type", "missing-required"],
)
def test_validator_catches_mistakes(breakage: Any) -> None:
    broken = copy.deepcopy(_find("StatefulSet", "ainode"))
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, VERSIONS[-1])


def test_kustomize_build_renders_valid_objects(tmp_path: Path) -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the per-file validation above stands in")
    proc = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in YAML(typ="safe", pure=True).load_all(proc.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in rendered)
    assert "StatefulSet/ainode" in kinds and "Deployment/ainode-worker" in kinds
    assert any(k.startswith("ConfigMap/ainode-config-") for k in kinds)  # hashed name
    for obj in rendered:
        assert obj["metadata"].get("namespace", "ainode") == "ainode"
        _validate(obj, VERSIONS[-1])
    # the generated ConfigMap carries the config file verbatim
    (cm,) = [d for d in rendered if d["metadata"]["name"].startswith("ainode-config-")]
    copy_path = tmp_path / "ainode.yaml"
    copy_path.write_text(cm["data"]["ainode.yaml"], encoding="utf-8")
    from node.config import load_config

    assert load_config(copy_path) == config("kubernetes")


def test_kustomization_inputs_exist() -> None:
    kz = _kustomization()
    for name in kz["resources"]:
        assert (KUBERNETES / name).is_file(), name
    for generator in kz["configMapGenerator"]:
        for entry in generator["files"]:
            assert (KUBERNETES / entry.split("=", 1)[1]).is_file(), entry


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    pod = obj["spec"]["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


@pytest.mark.parametrize(
    ("kind", "name"),
    [("StatefulSet", "ainode"), ("Deployment", "ainode-worker"), ("StatefulSet", "redis")],
)
def test_pods_are_locked_down(kind: str, name: str) -> None:
    pod = _pod(_find(kind, name))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert "memory" in container["resources"]["limits"]


def test_node_statefulset_probes_health_and_keeps_its_data() -> None:
    cfg = config("kubernetes")
    sts = _find("StatefulSet", "ainode")
    (container,) = _pod(sts)["containers"]
    assert container["args"] == ["serve", "--config", "/etc/ainode/ainode.yaml"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dicom": cfg.node.dicom_port, "http": cfg.node.http_port}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/health", "port": "http"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(cfg.node.data_dir)
    assert sts["spec"]["replicas"] == 1  # the single durable point
    token_mount = Path(mounts["token"])
    assert cfg.auth.token_file == token_mount / "token"
    assert _find("Secret", "ainode-token")["stringData"].keys() == {"token"}


def test_services_expose_dicom_and_http() -> None:
    cfg = config("kubernetes")
    for name in ("ainode", "ainode-headless"):
        ports = {p["name"]: p["port"] for p in _find("Service", name)["spec"]["ports"]}
        assert ports == {"dicom": cfg.node.dicom_port, "http": cfg.node.http_port}
    assert _find("StatefulSet", "ainode")["spec"]["serviceName"] == "ainode-headless"


def test_workers_request_gpus_on_gpu_nodes() -> None:
    cfg = config("kubernetes")
    pod = _pod(_find("Deployment", "ainode-worker"))
    (container,) = pod["containers"]
    assert container["args"][:3] == ["worker", "--config", "/etc/ainode/ainode.yaml"]
    assert container["args"][3:] == ["--device", "cuda:0"]  # each pod sees its one GPU as 0
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["terminationGracePeriodSeconds"] >= cfg.inference.job_timeout_seconds + 30
    assert not any(v.get("persistentVolumeClaim") for v in pod["volumes"])  # stateless


def test_redis_statefulset_persists_aof_on_a_volume() -> None:
    sts = _find("StatefulSet", "redis")
    (container,) = _pod(sts)["containers"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    data_dir = container["args"][container["args"].index("--dir") + 1]
    assert mounts[claim["metadata"]["name"]] == data_dir
    assert container["args"][0] == f"{mounts['config']}/redis.conf"
    generated = {g["name"]: g["files"] for g in _kustomization()["configMapGenerator"]}
    assert generated["redis-config"] == ["redis.conf=config/redis.conf"]
    assert "appendonly yes" in (KUBERNETES / "config" / "redis.conf").read_text(encoding="utf-8")
    queue = urlsplit(config("kubernetes").queue)
    assert queue.hostname == "redis" and queue.port == 6379
    ports = {p["name"]: p["port"] for p in _find("Service", "redis")["spec"]["ports"]}
    assert ports == {"redis": 6379}
