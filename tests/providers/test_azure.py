"""Azure OpenAI: deployment URLs, api-version, the api-key header (and never a bearer token)."""

from __future__ import annotations

import httpx
import orjson

from proxy.config._models import Provider
from proxy.providers import AzureOpenAIAdapter, UpstreamCall, build_provider

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


async def test_azure_calls_the_deployment_url_with_api_version_and_api_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    config = Provider(kind="azure", base_url="https://res.openai.azure.com", api_key="azure-secret-key",
                      api_version="2024-06-01")
    adapter = build_provider("az", config, httpx.MockTransport(handler))
    assert isinstance(adapter, AzureOpenAIAdapter) and adapter.kind == "azure"
    body = {"model": "prod-gpt4o", "messages": [{"role": "user", "content": "hi"}]}
    reply = await adapter.send(UpstreamCall("chat.completions", body))
    await adapter.close()
    request, = seen
    assert request.url.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert request.url.params["api-version"] == "2024-06-01"
    assert request.headers["api-key"] == "azure-secret-key"
    assert "authorization" not in request.headers
    assert orjson.loads(request.content) == body
    assert reply.data["choices"][0]["message"]["content"] == "hi"


async def test_azure_defaults_the_api_version_and_quotes_the_deployment() -> None:
    seen: list[httpx.Request] = []
    adapter = build_provider("az", Provider(kind="azure", base_url="https://res.openai.azure.com"),
                             httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json=ANSWER)))
    await adapter.send(UpstreamCall("embeddings", {"model": "emb/deploy", "input": "x"}))
    await adapter.close()
    assert seen[0].url.raw_path.decode().startswith("/openai/deployments/emb%2Fdeploy/embeddings?api-version=")
    assert seen[0].url.params["api-version"] == AzureOpenAIAdapter.DEFAULT_API_VERSION


async def test_an_azure_variant_through_the_gateway_against_the_mocks_azure_mode(tmp_path) -> None:
    from proxy.config import parse_policy
    from proxy.mock_upstream import create_app as create_mock
    from proxy.server import Settings, create_app

    policy = parse_policy("""
providers:
  az: {kind: azure, base_url: "http://mock.test", api_key: azure-test-key-1, api_version: "2024-06-01"}
models:
  prod: {provider: az, model: gpt-4o-deploy}
routes:
  bot: {model: prod, capture: full}
""")
    mock = create_mock()
    app = create_app(Settings(policy=policy, store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"az": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            r = await client.post("/v1/chat/completions", json={"model": "bot",
                                                                "messages": [{"role": "user", "content": "hi"}]})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock), base_url="http://mock.test") as c:
            sent, = (await c.get("/_mock/requests")).json()["data"]
        gw = app.state.gateway
        await gw.recorder.flush()
        record, = await gw.store.query_records()
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert sent["path"] == "/openai/deployments/gpt-4o-deploy/chat/completions"
    assert record["provider"] == "az" and record["model_requested"] == "gpt-4o-deploy"
    assert "azure-test-key-1" not in str(record)
