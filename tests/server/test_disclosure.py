"""What unauthenticated `/readyz` and `/metrics` reveal (issue 17, finding 10): without an admin key
no policy path, no store path, no provider name — checked against the names in this test's own
policy — while the figures stay (a readiness probe and Prometheus keep working), and the counts
of the public `/metrics` add up to the detailed ones. With an admin key, the details."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.keys import hash_key
from tests.server._sites import running_site

ADMIN_KEY = "sk-disclosure-admin-0123456789"
CALLER_KEY = "sk-disclosure-caller-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CALLER = {"authorization": f"Bearer {CALLER_KEY}"}
PROVIDERS = ("zephyr-upstream-4417", "quokka-backup-9921")
POLICY = f"""
providers:
  {PROVIDERS[0]}: {{kind: openai, base_url: "{{mock}}"}}
  {PROVIDERS[1]}: {{kind: openai, base_url: "{{mock}}"}}
models:
  main: {{provider: {PROVIDERS[0]}, model: gpt-mock-prod}}
  spare: {{provider: {PROVIDERS[1]}, model: gpt-mock-candidate}}
routes:
  bot: {{model: main}}
  other: {{model: spare}}
auth:
  keys:
    app: {{hash: "{hash_key(CALLER_KEY)}"}}
  admin_keys: ["{hash_key(ADMIN_KEY)}"]
"""
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def _secrets(site, tmp_path: Path) -> list[str]:
    """What must not be shown without an admin key: the provider names, the policy file's path, the
    store's path, the upstream's host."""
    return [*PROVIDERS, str(site.policy_path), str(tmp_path), "mock.test", "policy.yaml", "store.db"]


def _leaks(body: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in body]


async def _traffic(site) -> None:
    for route in ("bot", "other", "bot"):
        response = await site.client.post("/v1/chat/completions", json={"model": route, **CHAT}, headers=CALLER)
        assert response.status_code == 200, response.text


async def test_readyz_without_an_admin_key_names_nothing(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=POLICY, seeded=False, providers=PROVIDERS) as site:
        await _traffic(site)
        await site.gateway.recorder.flush()
        secrets = _secrets(site, tmp_path)
        for headers in ({}, CALLER, {"authorization": "Bearer sk-wrong"}):
            response = await site.client.get("/readyz", headers=headers)
            assert response.status_code == 200
            assert not _leaks(response.text, secrets), (headers, _leaks(response.text, secrets))
            public = response.json()
            assert public["status"] == "ready" and public["policy"]["routes"] == ["bot", "other"]
            assert public["policy"]["version"] == site.gateway.policy.version
            assert public["store"]["writable"] is True and public["recorder"]["written"] == 3  # figures stay
            assert "providers" not in public
        detailed = (await site.client.get("/readyz", headers=ADMIN)).json()
        assert set(detailed["providers"]) == set(PROVIDERS)
        assert detailed["policy"]["source"] == str(site.policy_path) and str(tmp_path) in detailed["store"]["url"]


async def test_a_refused_reload_does_not_show_its_path_without_an_admin_key(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=POLICY, seeded=False, providers=PROVIDERS) as site:
        good = site.policy_path.read_text()
        site.policy_path.write_text(good + "\nnot_a_section: {x: 1}\n")
        assert (await site.client.post("/admin/reload", headers=ADMIN)).status_code == 400
        public = (await site.client.get("/readyz")).json()
        assert public["reload"]["ok"] is False and "error" not in public["reload"]
        assert not _leaks(str(public), _secrets(site, tmp_path))
        detailed = (await site.client.get("/readyz", headers=ADMIN)).json()
        assert str(site.policy_path) in detailed["reload"]["error"]


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


async def test_metrics_without_an_admin_key_hide_providers_and_keep_the_counts(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=POLICY, seeded=False, providers=PROVIDERS) as site:
        await _traffic(site)
        secrets = _secrets(site, tmp_path)
        detailed = (await site.client.get("/metrics", headers=ADMIN)).text
        assert all(f'provider="{name}"' in detailed for name in PROVIDERS)
        for headers in ({}, CALLER):
            public = await site.client.get("/metrics", headers=headers)
            assert public.status_code == 200 and public.headers["content-type"].startswith("text/plain")
            assert not _leaks(public.text, secrets), _leaks(public.text, secrets)
            assert 'provider="hidden"' in public.text and 'route="bot"' in public.text
            counts = _samples(public.text, "sluicegate_upstream_duration_seconds_count")
            assert counts == {(("provider", "hidden"),): 3.0}  # 2 + 1: summed, not lost
            # everything without a provider label is the same as with the admin key
            for name in ("sluicegate_requests_total", "sluicegate_request_duration_seconds_count"):
                assert _samples(public.text, name) == _samples(detailed, name), name
        buckets = _samples(public.text, "sluicegate_upstream_duration_seconds_bucket")
        per_provider = _samples(detailed, "sluicegate_upstream_duration_seconds_bucket")
        for labels, value in buckets.items():
            le = dict(labels)["le"]
            assert value == sum(v for k, v in per_provider.items() if dict(k)["le"] == le), le
        assert not re.search(r"_created\{[^}]*provider=\"(?!hidden)", public.text)


OPEN = f"""
providers:
  {PROVIDERS[0]}: {{kind: openai, base_url: "{{mock}}"}}
models:
  main: {{provider: {PROVIDERS[0]}, model: gpt-mock-prod}}
routes:
  bot: {{model: main}}
"""


async def test_an_open_gateway_without_admin_keys_shows_the_details(tmp_path: Path) -> None:
    """Its admin endpoints are open too (and its Host check keeps rebinding pages out): documented."""
    async with running_site(tmp_path, policy_text=OPEN, seeded=False, providers=PROVIDERS[:1]) as site:
        ready = (await site.client.get("/readyz")).json()
        assert list(ready["providers"]) == [PROVIDERS[0]]
        assert (await site.client.get("/readyz", headers={"host": "evil.example"})).status_code == 421


async def test_keys_without_admin_keys_show_no_details_to_anyone(tmp_path: Path) -> None:
    policy = POLICY.replace(f'  admin_keys: ["{hash_key(ADMIN_KEY)}"]\n', "")
    async with running_site(tmp_path, policy_text=policy, seeded=False, providers=PROVIDERS) as site:
        await _traffic(site)
        for path in ("/readyz", "/metrics"):
            for headers in ({}, CALLER, ADMIN):
                body = (await site.client.get(path, headers=headers)).text
                assert not _leaks(body, _secrets(site, tmp_path)), (path, headers)


def test_the_compose_prometheus_scrapes_with_an_admin_key_of_the_deploy_policy() -> None:
    """deploy/: the Grafana dashboard groups by provider, so Prometheus must see the detailed /metrics."""
    import yaml

    from proxy.config import load_policy

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    job = next(j for j in yaml.safe_load((deploy / "prometheus.yml").read_text())["scrape_configs"]
               if j["job_name"] == "sluicegate")
    assert job["authorization"]["type"] == "Bearer"
    policy = load_policy(deploy / "policy.yaml")
    assert hash_key(job["authorization"]["credentials"]) in policy.auth.admin_keys
