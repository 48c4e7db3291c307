"""What `/readyz` and `/metrics` show to someone without an admin key.

Both are unauthenticated (probes and Prometheus' annotation-based scrapes carry no key), and their
full versions name the policy file, the store's and queue's URLs, error texts with paths, and the
providers. Details are shown to whoever may use the admin endpoints: an admin key, or anyone on an
open gateway without admin keys (whose admin endpoints are open too; its Host check keeps
rebinding pages out). Everyone else gets:

- `/readyz`: the same document with figures and flags only — every string is dropped (paths,
  URLs, provider kinds, error messages) except the status and the policy's version and route
  names; the `providers` section (keyed by provider name) is left out.
- `/metrics`: every series, with the `provider` label's value replaced by `hidden` (series that
  differed only by provider are summed, so the counts stay whole). Routes and variants are
  kept. Prometheus sees everything with `authorization: {credentials: <admin key>}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.requests import Request

__all__ = ["HIDDEN", "public_metrics", "public_readiness", "shows_details"]

HIDDEN = "hidden"
HIDDEN_LABELS = ("provider",)
_KEPT_STRINGS = frozenset({"status", "version", "previous", "serving"})  # /readyz strings that name nothing
_LEFT_OUT = frozenset({"providers"})


def shows_details(request: Request) -> bool:
    gateway = getattr(request.app.state, "gateway", None)
    return gateway is not None and gateway.auth.is_admin(request.headers)


# --------------------------------------------------------------------------- /readyz


def public_readiness(body: dict[str, Any]) -> dict[str, Any]:
    """The readiness document with figures and flags only (see the module's docstring)."""
    out = _figures(body)
    policy = body.get("policy")
    if isinstance(policy, dict):
        out["policy"] = {"version": policy.get("version"), "routes": policy.get("routes")}
    return out


def _figures(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _figures(v, k) for k, v in value.items() if k not in _LEFT_OUT and _kept(v, k)}
    if isinstance(value, list):
        return [_figures(v) for v in value if _kept(v, None)]
    return value


def _kept(value: Any, key: str | None) -> bool:
    return not isinstance(value, str) or key in _KEPT_STRINGS


# --------------------------------------------------------------------------- /metrics


def public_metrics(exposition: bytes) -> bytes:
    """The Prometheus text with every `provider` label value replaced by `hidden` (summed)."""
    families = list(text_string_to_metric_families(exposition.decode()))
    if not any(label in sample.labels for family in families for sample in family.samples for label in HIDDEN_LABELS):
        return exposition
    return generate_latest(_Families([_hidden(family) for family in families]))  # type: ignore[arg-type]


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _hidden(family: Metric) -> Metric:
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in family.samples:
        labels = {k: (HIDDEN if k in HIDDEN_LABELS else v) for k, v in sample.labels.items()}
        key = (sample.name, tuple(labels.items()))
        if key not in merged:
            merged[key] = sample.value
        elif sample.name.endswith("_created"):
            merged[key] = min(merged[key], sample.value)  # the earliest series' start
        else:
            merged[key] += sample.value  # counters, histogram buckets, sums and counts add up
    out = Metric(family.name, family.documentation, family.type, family.unit)
    out.samples = [Sample(name, dict(labels), value) for (name, labels), value in merged.items()]
    return out
