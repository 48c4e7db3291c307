"""The policy the end-to-end tests serve: one route per behaviour under test."""

from __future__ import annotations

FAULTS = ("http_500", "http_503", "http_429", "timeout", "reset", "malformed_json")


def e2e_policy(dead_port: int, capture: str = "full") -> str:
    fault_providers = "\n".join(
        f"  mock_{fault}: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}', "
        f"read_timeout: 1.5, headers: {{x-mock-fault: {fault}}}}}" for fault in FAULTS)
    fault_models = "\n".join(f"  broken_{fault}: {{provider: mock_{fault}, model: gpt-mock-broken}}" for fault in FAULTS)
    fault_routes = "\n".join(
        f"  fb-{fault}: {{model: broken_{fault}, fallbacks: [prod], capture: {capture}}}\n"
        f"  nofb-{fault}: {{model: broken_{fault}, capture: {capture}}}" for fault in FAULTS)
    return f"""
providers:
  mock: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}', read_timeout: 5}}
  slow: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}',
          headers: {{x-mock-chunk-delay-ms: '250', x-mock-chunks: '5'}}}}
  cutter: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}',
            headers: {{x-mock-fault: reset_mid_stream}}}}
  http400: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}',
             headers: {{x-mock-fault: http_400}}}}
  dead: {{kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1', api_key: '${{TEST_PROVIDER_KEY}}',
          connect_timeout: 1}}
{fault_providers}

models:
  prod: {{provider: mock, model: gpt-mock-prod, params: {{temperature: 0}}}}
  candidate: {{provider: mock, model: gpt-mock-candidate}}
  slow: {{provider: slow, model: gpt-mock-slow}}
  cutter: {{provider: cutter, model: gpt-mock-cut}}
  rejecting: {{provider: http400, model: gpt-mock-400}}
  unreachable: {{provider: dead, model: gpt-nowhere}}
{fault_models}

routes:
  support-bot:
    split: {{prod: 90, candidate: 10}}
    sticky_by: [header:x-sluicegate-episode, body:user]
    fallbacks: [prod]
    capture: {capture}
  embed: {{model: prod, capture: {capture}}}
  slow-stream: {{model: slow, capture: {capture}}}
  cut-stream: {{model: cutter, capture: {capture}}}
  rejects: {{model: rejecting, capture: {capture}}}
  fb-dead: {{model: unreachable, fallbacks: [prod], capture: {capture}}}
  nofb-dead: {{model: unreachable, capture: {capture}}}
{fault_routes}
"""
