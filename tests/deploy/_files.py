"""Paths and loaders shared by the deploy/ tests (no network, no Docker)."""

from __future__ import annotations

import importlib
import json
import os
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sluicegate.json"

# The metric families /metrics exposes (the contract of issue 10), with their labels. Histograms
# are queried through their _bucket/_sum/_count series.
COUNTERS: dict[str, set[str]] = {
    "sluicegate_requests_total": {"route", "variant", "status"},
    "sluicegate_upstream_errors_total": {"provider", "outcome"},
    "sluicegate_guard_failures_total": {"route", "variant", "taxonomy", "severity"},
    "sluicegate_fallbacks_total": {"route"},
    "sluicegate_retries_total": {"route"},
    "sluicegate_recorder_written_total": set(),
    "sluicegate_recorder_spilled_total": set(),
    "sluicegate_recorder_dropped_total": set(),
    "sluicegate_scoring_dropped_total": set(),
    "sluicegate_scored_total": {"scorer"},
    "sluicegate_judge_cost_usd_total": set(),
    "sluicegate_cache_requests_total": {"result"},
}
HISTOGRAMS: dict[str, set[str]] = {
    "sluicegate_request_duration_seconds": {"route", "variant"},
    "sluicegate_time_to_first_token_seconds": {"route", "variant"},
    "sluicegate_upstream_duration_seconds": {"provider"},
}
GAUGES: dict[str, set[str]] = {
    "sluicegate_recorder_buffered": set(),
    "sluicegate_scoring_queue_depth": set(),
    "sluicegate_scoring_queue_lag": set(),
    "sluicegate_canary_stage_percent": {"route"},
    "sluicegate_success_rate": {"route", "variant", "metric"},
    "sluicegate_outcomes": {"route", "variant", "metric"},
}
# labels Prometheus adds to every scraped series (deploy/prometheus.yml adds `component`)
TARGET_LABELS = {"job", "instance", "component"}


def series_labels() -> dict[str, set[str]]:
    """Every series name a query may use -> the labels it carries."""
    out = {**COUNTERS, **GAUGES}
    for name, labels in HISTOGRAMS.items():
        out[f"{name}_bucket"] = labels | {"le"}
        out[f"{name}_sum"] = set(labels)
        out[f"{name}_count"] = set(labels)
    return {name: labels | TARGET_LABELS for name, labels in out.items()}


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


@cache
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) of every resource in deploy/k8s (kustomization.yaml aside)."""
    return [(path.name, doc) for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def command_args(service: dict[str, Any]) -> list[str]:
    """A compose service's command as a list of words."""
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(word) for word in command]


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in args."""
    for i, word in enumerate(args):
        if word == name and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(name + "="):
            return word[len(name) + 1:]
    return None


def host_port(url_or_target: str) -> tuple[str, int]:
    """`http://host:port/...` or `host:port` -> (host, port)."""
    m = re.match(r"^(?:[a-z]+://)?([^/:]+):(\d+)", url_or_target)
    assert m, f"no host:port in {url_or_target!r}"
    return m.group(1), int(m.group(2))


def require(module: str) -> ModuleType:
    """A validator package of deploy/requirements-validate.txt: skipped locally when it is missing,
    a failure in CI (CI=true), where the manifests must really be validated."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        reason = f"{module} is not installed: pip install -r deploy/requirements-validate.txt"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} — CI=true: the deploy/ manifests must be validated", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
