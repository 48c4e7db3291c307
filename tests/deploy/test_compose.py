"""deploy/docker-compose.yml against the compose-spec JSON schema (the copy check-jsonschema ships, so
offline), `docker compose config` when a Docker client with compose is installed, and the wiring:
start order, the replicas behind nginx, Prometheus targets, mounted files, the sample policy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy._files import (
    COMPOSE,
    DEPLOY,
    ROOT,
    command_args,
    compose,
    host_port,
    option,
    require,
)

GATEWAYS = ("proxy-1", "proxy-2")
QUEUE = "redis://redis:6379/0"


def _compose_spec() -> dict[str, Any]:
    vendor = require("check_jsonschema.builtin_schemas.vendor")
    return json.loads(files(vendor).joinpath("compose-spec.json").read_text())


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = _compose_spec()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_the_schema_rejects_a_misspelt_key() -> None:
    schema = _compose_spec()
    broken = {**compose(), "services": {**compose()["services"], "nginx": {**compose()["services"]["nginx"], "dependson": ["x"]}}}
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], check=False, capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config() -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("no Docker client with compose here: `docker compose config` not run (schema checked instead)")
    env = {**os.environ, "POSTGRES_PASSWORD": "test0password"}
    out = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], check=False, capture_output=True, text=True,
                         timeout=60, env=env, cwd=DEPLOY)
    assert out.returncode == 0, out.stderr


def test_services() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "mock-upstream", "migrate", *GATEWAYS, "worker", "nginx",
                             "prometheus", "grafana"}
    assert re.fullmatch(r"postgres:16(\.\d+)*(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", services["redis"]["image"])
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: a fixed name prevents --scale"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    ours = {name for name, s in services.items() if s["image"].startswith("sluicegate:")}
    assert ours == {"mock-upstream", "migrate", *GATEWAYS, "worker"}
    assert len({services[name]["image"] for name in ours}) == 1
    assert all(services[name]["build"]["context"] == ".." for name in ours)
    assert (DEPLOY / services["migrate"]["build"]["context"] / services["migrate"]["build"]["dockerfile"]).is_file()


def test_migrate_runs_first_then_replicas_and_worker() -> None:
    services = compose()["services"]
    assert command_args(services["migrate"]) == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in (*GATEWAYS, "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


def test_replicas_and_worker_share_the_store_and_the_queue() -> None:
    services = compose()["services"]
    stores = {services[name]["environment"]["SLUICEGATE_STORE"] for name in ("migrate", *GATEWAYS, "worker")}
    assert len(stores) == 1 and next(iter(stores)).startswith("postgresql://sluicegate:")
    assert "@postgres:5432/sluicegate" in next(iter(stores))
    for name in GATEWAYS:
        args = command_args(services[name])
        assert args[0] == "serve"
        assert option(args, "--policy") == "/etc/sluicegate/policy.yaml"
        assert option(args, "--host") == "0.0.0.0" and option(args, "--port") == "8080"
        assert option(args, "--queue") == QUEUE and option(args, "--scoring") == "external"
        assert "--watch-policy" in args
    worker = command_args(services["worker"])
    assert worker[0] == "worker" and option(worker, "--queue") == QUEUE
    assert option(worker, "--policy") == "/etc/sluicegate/policy.yaml"
    assert services["worker"]["healthcheck"] == {"disable": True}  # the image's check is for `serve`


def _gateway_ports() -> dict[str, int]:
    services = compose()["services"]
    return {name: int(option(command_args(s), "--port") or 0) for name, s in services.items()
            if command_args(s)[:1] == ["serve"]}


def test_nginx_balances_both_replicas_and_streams() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream\s+sluicegate\s*\{([^}]*)\}", conf)
    assert upstream
    servers = {host_port(s) for s in re.findall(r"^\s*server\s+(\S+?)(?:\s|;)", upstream.group(1), re.MULTILINE)}
    assert servers == {(name, port) for name, port in _gateway_ports().items()}
    assert "least_conn" not in upstream.group(1) and "ip_hash" not in upstream.group(1)  # round robin
    assert re.search(r"^\s*proxy_buffering\s+off;", conf, re.MULTILINE)
    read_timeout = re.search(r"^\s*proxy_read_timeout\s+(\d+)s;", conf, re.MULTILINE)
    assert read_timeout and int(read_timeout.group(1)) >= 300
    assert re.search(r"^\s*proxy_http_version\s+1\.1;", conf, re.MULTILINE)
    nginx = compose()["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    listen = re.search(r"^\s*listen\s+(\d+);", conf, re.MULTILINE)
    assert listen and any(p.endswith(f":{listen.group(1)}") for p in nginx["ports"])
    for name in GATEWAYS:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"


def test_nginx_config_syntax() -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed: `nginx -t` not run")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        conf = (DEPLOY / "nginx.conf").read_text()
        for i, name in enumerate(GATEWAYS):  # compose's service names do not resolve here
            conf = conf.replace(f"server {name}:", f"server 127.0.0.{i + 1}:")
        (Path(tmp) / "logs").mkdir()
        (Path(tmp) / "nginx.conf").write_text(conf)
        out = subprocess.run(["nginx", "-t", "-p", tmp, "-c", f"{tmp}/nginx.conf", "-e", "stderr"],
                             check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_prometheus_scrapes_every_replica_by_service_name() -> None:
    import yaml

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    services = compose()["services"]
    targets = {host_port(t) for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"] if not t.startswith("localhost:")}
    assert {host for host, _ in targets} <= set(services)
    worker = services["worker"]["command"]
    assert "--metrics-port=9100" in worker and "--metrics-host=0.0.0.0" in worker
    assert targets == {*_gateway_ports().items(), ("worker", 9100)}  # every replica, and the worker's metrics port
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sluicegate")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_mounted_files_exist_and_volumes_are_declared() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, volume)
            else:
                assert source in doc["volumes"], (name, volume)
    # each replica spills to its own volume (the working directory /data)
    data = {next(v.split(":")[0] for v in doc["services"][n]["volumes"] if v.endswith(":/data")) for n in GATEWAYS}
    assert len(data) == len(GATEWAYS)


def test_env_example_names_every_variable_compose_reads() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    example = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", (DEPLOY / ".env.example").read_text(), re.MULTILINE))
    assert used == set(example), used ^ set(example)
    assert "POSTGRES_PASSWORD" in required
    assert all(value == "" for value in example.values()), "no secret values in the example"
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_sample_policy_loads_and_its_upstream_is_a_service() -> None:
    out = subprocess.run([sys.executable, "-m", "proxy", "check", str(DEPLOY / "policy.yaml")],
                         check=False, capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "OPENAI_API_KEY": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    default = re.search(r"\$\{SLUICEGATE_UPSTREAM:-([^}]+)\}", (DEPLOY / "policy.yaml").read_text())
    assert default
    host, port = host_port(default.group(1))
    mock = compose()["services"][host]
    args = command_args(mock)
    assert args[0] == "mock-upstream" and int(option(args, "--port") or 0) == port
    assert mock["environment"]["SLUICEGATE_HEALTHCHECK_URL"].startswith(f"http://127.0.0.1:{port}/")


def test_mock_upstream_config_loads() -> None:
    from proxy.mock_upstream import load_config

    config = load_config(str(DEPLOY / "mock-upstream.yaml"))
    policy_models = set(re.findall(r"model: ([\w-]+)", (DEPLOY / "policy.yaml").read_text()))
    assert set(config.models) <= policy_models
    assert config.models["mock-judge"].judge_error_rate is not None
