"""The Docker Compose demo, checked without a container daemon.

The file is validated against the Compose Specification schema that Docker Compose v2 uses
(vendored in tests/deploy/schemas, see its README), then the cross-references that
``docker compose config`` would resolve are checked here: mounts, volumes, secrets,
depends_on, and the wiring between ainode, Redis, Orthanc and OHIF.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.deploy.kits import COMPOSE, REDIS_CONF, REPO, SCHEMAS, config, load_yaml, tool

COMPOSE_FILE = COMPOSE / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def test_compose_file_matches_the_compose_spec(
    validator: jsonschema.Draft202012Validator, compose: dict[str, Any]
) -> None:
    assert _errors(validator, compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["ainode"].update(helthcheck={"test": ["NONE"]}),
        lambda c: c["services"]["redis"].update(restart=["always"]),
        lambda c: c["services"]["worker"]["depends_on"]["redis"].update(condition="healthy"),
    ],
    ids=["misspelt-key", "wrong-type", "bad-enum"],
)
def test_schema_catches_mistakes(
    validator: jsonschema.Draft202012Validator, compose: dict[str, Any], breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert _errors(validator, broken) != []


def _docker_compose() -> list[str] | None:
    docker = tool("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=30
    )
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_when_available() -> None:
    compose_cli = _docker_compose()
    if compose_cli is None:
        pytest.skip("no `docker compose` here; the schema and cross-reference tests stand in")
    proc = subprocess.run(
        [*compose_cli, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_demo_has_every_part(compose: dict[str, Any]) -> None:
    assert {"ainode", "redis", "worker", "orthanc", "ohif"} <= set(compose["services"])
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_bind_mounts_and_build_inputs_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).is_file(), f"{name}: {source} missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: secret {secret} not declared"
        if "build" in svc:
            context = (COMPOSE / svc["build"]["context"]).resolve()
            assert context == REPO
            assert (context / svc["build"]["dockerfile"]).is_file()
    for secret in compose["secrets"].values():
        assert (COMPOSE / secret["file"]).is_file()


def test_dependencies_wait_for_real_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                check = services[dep].get("healthcheck", {})
                assert check and not check.get("disable"), f"{dep} has no health check"


def test_node_service(compose: dict[str, Any]) -> None:
    node = compose["services"]["ainode"]
    cfg = config("compose")
    assert node["command"] == ["serve", "--config", "/etc/ainode/ainode.yaml"]
    assert "./ainode.yaml:/etc/ainode/ainode.yaml:ro" in node["volumes"]
    assert f"ainode-data:{cfg.node.data_dir}" in node["volumes"]
    published = {p.rsplit(":", 1)[1]: p for p in node["ports"]}
    assert set(published) == {str(cfg.node.dicom_port), str(cfg.node.http_port)}
    assert all(p.startswith("127.0.0.1:") for p in published.values())
    assert f"127.0.0.1:{cfg.node.http_port}/api/health" in " ".join(node["healthcheck"]["test"])
    assert cfg.auth.token_file == Path("/run/secrets") / node["secrets"][0]
    assert node["read_only"] is True and node["cap_drop"] == ["ALL"]


def test_worker_service(compose: dict[str, Any]) -> None:
    cfg = config("compose")
    for name in ("worker", "worker-gpu"):
        worker = compose["services"][name]
        command = worker["command"]
        assert command[:3] == ["worker", "--config", "/etc/ainode/ainode.yaml"]
        assert command[3] == "--device" and re.fullmatch(r"cpu|cuda:\d+", command[4])
        assert "ainode-data" not in " ".join(worker["volumes"])  # no shared disk
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert grace >= cfg.inference.job_timeout_seconds + 30
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]


def test_redis_service_persists_with_the_shipped_config(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    mount = next(v for v in redis["volumes"] if v.endswith(":ro"))
    source, target, _ = mount.split(":")
    assert (COMPOSE / source).resolve() == REDIS_CONF
    assert redis["command"][:2] == ["redis-server", target]
    assert "redis-data:/data" in redis["volumes"]
    queue = urlsplit(config("compose").queue)
    assert queue.hostname == "redis" and queue.port == 6379


def test_results_go_to_orthanc_which_knows_ainode(compose: dict[str, Any]) -> None:
    cfg = config("compose")
    orthanc = compose["services"]["orthanc"]
    env = orthanc["environment"]
    assert env["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    assert orthanc["image"].startswith("orthancteam/orthanc:")
    dest = cfg.destinations["orthanc"]
    assert urlsplit(dest.url).hostname == "orthanc"  # type: ignore[union-attr]
    aet, host, port = json.loads(env["ORTHANC__DICOM_MODALITIES"])["ainode"]
    assert (aet, host, port) == (cfg.node.ae_title, "ainode", cfg.node.dicom_port)


def test_ohif_reads_orthanc_dicomweb_through_its_own_origin(compose: dict[str, Any]) -> None:
    ohif = compose["services"]["ohif"]
    assert ohif["image"].startswith("ohif/app:")
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in ohif["volumes"])
    assert mounts["./ohif/default.conf.template"] == "/usr/src/default.conf.template"
    nginx = (COMPOSE / "ohif" / "default.conf.template").read_text(encoding="utf-8")
    app_config_path = mounts["./ohif/app-config.js"]
    assert re.search(r"location = /app-config\.js \{\s*alias " + re.escape(app_config_path), nginx)
    assert re.search(r"location /dicom-web/ \{\s*proxy_pass http://orthanc:8042/dicom-web/;", nginx)
    assert "listen ${PORT}" in nginx  # the image's entrypoint substitutes PORT
    app_config = (COMPOSE / "ohif" / "app-config.js").read_text(encoding="utf-8")
    assert "qidoRoot: '/dicom-web'" in app_config and "wadoRoot: '/dicom-web'" in app_config
    assert "dataSourcesModule.dicomweb" in app_config
