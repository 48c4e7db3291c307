"""Routes of the mock upstream: the OpenAI endpoints, Anthropic's `/v1/messages` (`_anthropic.py`), faults applied
around them, and the `/_mock` control API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.mock_upstream._anthropic import messages_endpoint
from proxy.mock_upstream._answer import BadRequest, chat_answer, completion_answers
from proxy.mock_upstream._behaviour import Behaviour, HeaderError, header_overrides
from proxy.mock_upstream._config import MockConfig, MockModel
from proxy.mock_upstream._embeddings import embedding_response
from proxy.mock_upstream._faults import (
    ResetResponse,
    error_response,
    http_fault,
    malformed_json_response,
    quiet_injected_resets,
    wait_for_disconnect,
)
from proxy.mock_upstream._shapes import Meta, chat_completion, error_body, model_object, text_completion
from proxy.mock_upstream._state import MockState
from proxy.mock_upstream._stream import GARBAGE_EVENT, chat_events, completion_events, paced

__all__ = ["create_app"]

_JSON = "application/json"
_SSE = "text/event-stream"
# fault `error_event_mid_stream` in the OpenAI mode: the error chunk OpenAI sends when a stream fails
_ERROR_EVENT = b"data: " + error_body("The server had an error while processing your request. "
                                      "(mock fault error_event_mid_stream)", "server_error") + b"\n\n"


def _openai_fault(fault: str, stream: bool) -> str:
    """The Anthropic-flavoured faults as the OpenAI mode plays them (an overload is a 503 there)."""
    if fault == "overloaded" or (fault == "error_event_mid_stream" and not stream):
        return "http_503"
    return fault


def _json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, headers=headers, media_type=_JSON)


def _bad_request(message: str, param: str | None = None, code: str | None = None) -> Response:
    return error_response(400, message, "invalid_request_error", param, code)


class _Handlers:
    def __init__(self, state: MockState) -> None:
        self.state = state

    # --- OpenAI endpoints ---------------------------------------------------------------
    async def list_models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [model_object(n) for n in self.state.config.models]})

    async def get_model(self, request: Request) -> Response:
        return _json(model_object(request.path_params["model"]))

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def embeddings(self, request: Request) -> Response:
        return await self._generate(request, "embedding")

    async def azure(self, request: Request) -> Response:
        """Azure OpenAI's deployment URLs: `api-version` and an `api-key` header are required; the
        rest is the OpenAI mode (the body's `model` names the deployment)."""
        if not request.query_params.get("api-version"):
            return _bad_request("Missing required query parameter 'api-version'. (mock upstream, Azure mode)",
                                "api-version")
        if not request.headers.get("api-key"):
            return error_response(401, "Access denied due to missing subscription key. (mock upstream, Azure mode)",
                                  "invalid_request_error", code="401")
        kind = {"chat/completions": "chat", "completions": "completion", "embeddings": "embedding"}
        return await self._generate(request, kind[request.path_params["operation"]])

    async def messages(self, request: Request) -> Response:  # Anthropic Messages mode (_anthropic.py)
        return await messages_endpoint(self.state, request)

    async def _generate(self, request: Request, kind: str) -> Response:
        state = self.state
        raw = await request.body()
        scope = request.scope
        path: str = scope["path"]
        query: str = scope["query_string"].decode("latin-1")
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            state.record(request.method, path, query, dict(request.headers), None, None,
                         body_text=raw.decode("utf-8", "replace"))
            return _bad_request("We could not parse the JSON body of your request. (mock upstream)")
        model = body.get("model") if isinstance(body, dict) else None
        model = model if isinstance(model, str) and model else None
        state.record(request.method, path, query, dict(request.headers), body, model)
        if not isinstance(body, dict):
            return _bad_request("The request body must be a JSON object.")
        if model is None:
            return _bad_request("you must provide a model parameter", "model")

        try:
            overrides = header_overrides(request.headers.raw)
        except HeaderError as exc:
            return _bad_request(str(exc), exc.header, "invalid_mock_header")
        header_fault = overrides.pop("fault", None)
        b = state.behaviour(model).with_overrides(overrides)
        fault = header_fault if isinstance(header_fault, str) else state.take_fault(model, b)
        if fault != "none":
            state.faults[fault] += 1
        if fault == "timeout":
            await wait_for_disconnect(request)
        if b.latency_ms > 0:
            await asyncio.sleep(b.latency_ms / 1000)
        failed = http_fault(_openai_fault(fault, kind != "embedding" and body.get("stream") is True), b.retry_after)
        if failed is not None:
            return failed

        served = b.served_model or model
        try:
            if kind == "embedding":
                doc = embedding_response(body, model, served, b.embedding_dims)
                return self._finish_json(doc, fault)
            rid = state.next_id()
            meta = Meta(("chatcmpl-" if kind == "chat" else "cmpl-") + rid, int(time.time()), served,
                        b.system_fingerprint)
            stream = body.get("stream") is True
            opts = body.get("stream_options")
            include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
            if kind == "chat":
                answer = chat_answer(body, b, model, state.next_id)
                if stream:
                    events = chat_events(answer, meta, pieces=b.chunks, include_usage=include_usage)
                    return self._finish_stream(events, b, fault, rid)
                return self._finish_json(chat_completion(answer, meta), fault, rid)
            texts, p_tokens, c_tokens = completion_answers(body, b, model)
            if stream:
                events = completion_events(texts, p_tokens, c_tokens, meta, pieces=b.chunks,
                                           include_usage=include_usage)
                return self._finish_stream(events, b, fault, rid)
            return self._finish_json(text_completion(texts, p_tokens, c_tokens, meta), fault, rid)
        except BadRequest as exc:
            return _bad_request(exc.message, exc.param)

    @staticmethod
    def _finish_json(doc: dict[str, Any], fault: str, request_id: str | None = None) -> Response:
        body = orjson.dumps(doc)
        if fault in ("reset", "reset_mid_stream"):
            return ResetResponse(body, _JSON)
        if fault in ("malformed_json", "malformed_sse"):
            return malformed_json_response(body)
        headers = {"x-request-id": f"req_{request_id}"} if request_id else None
        return Response(body, headers=headers, media_type=_JSON)

    @staticmethod
    def _finish_stream(events: list[bytes], b: Behaviour, fault: str, request_id: str) -> Response:
        if fault == "reset":
            return ResetResponse(b"".join(events), _SSE)
        cut_after: int | None = None
        if fault == "reset_mid_stream":
            cut_after = min(max(2, len(events) // 2), len(events) - 1)
        elif fault == "error_event_mid_stream":
            events = [*events[: min(max(2, len(events) // 2), len(events) - 1)], _ERROR_EVENT]
        elif fault in ("malformed_sse", "malformed_json"):
            events = list(events)
            events.insert(max(1, len(events) // 2), GARBAGE_EVENT)
        return StreamingResponse(paced(events, b.chunk_delay_ms / 1000, cut_after=cut_after), media_type=_SSE,
                                 headers={"cache-control": "no-cache", "x-request-id": f"req_{request_id}"})

    # --- control API ----------------------------------------------------------------------
    async def get_requests(self, request: Request) -> Response:
        data = list(self.state.requests)
        path = request.query_params.get("path")
        model = request.query_params.get("model")
        if path:
            data = [r for r in data if r["path"] == path]
        if model:
            data = [r for r in data if r["model"] == model]
        return _json({"object": "list", "data": data})

    async def clear_requests(self, request: Request) -> Response:
        n = len(self.state.requests)
        self.state.requests.clear()
        return _json({"deleted": n})

    async def list_mock_models(self, request: Request) -> Response:
        cfg = self.state.config
        return _json({"default": cfg.default.model_dump(mode="json", exclude_unset=True),
                      "models": {k: v.model_dump(mode="json", exclude_unset=True) for k, v in cfg.models.items()}})

    async def _model_from_body(self, request: Request) -> MockModel | Response:
        raw = await request.body()
        try:
            return MockModel.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            return _bad_request(f"invalid MockModel: {exc}")

    async def get_mock_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        return _json(self.state.config.effective(name).model_dump(mode="json"))

    async def put_mock_model(self, request: Request) -> Response:
        m = await self._model_from_body(request)
        if isinstance(m, Response):
            return m
        name = request.path_params["name"]
        self.state.set_model(name, m)
        return _json({"name": name, "model": m.model_dump(mode="json", exclude_unset=True)})

    async def delete_mock_model(self, request: Request) -> Response:
        return _json({"deleted": self.state.delete_model(request.path_params["name"])})

    async def put_default(self, request: Request) -> Response:
        m = await self._model_from_body(request)
        if isinstance(m, Response):
            return m
        self.state.set_default(m)
        return _json({"default": m.model_dump(mode="json", exclude_unset=True)})

    async def stats(self, request: Request) -> Response:
        return _json(self.state.stats())

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return _json({"reset": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return error_response(404, f"Unknown request URL: {request.method} {request.url.path}. (mock upstream)",
                              "invalid_request_error", code="unknown_url")
    if status == 405:
        return error_response(405, f"Method {request.method} not allowed on {request.url.path}. (mock upstream)",
                              "invalid_request_error", code="method_not_allowed")
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(status, str(detail), "invalid_request_error")


def create_app(config: MockConfig | None = None) -> Starlette:
    """The mock upstream as an ASGI app (serve it with uvicorn, or call it via `httpx.ASGITransport`).

    Each app has its own state (models, request log, stats, fault counters); `app.state.mock` holds it.
    Creating an app adds a filter to the "uvicorn.error" logger that drops the tracebacks of the
    connection cuts the mock injects on purpose.
    """
    quiet_injected_resets()
    state = MockState(config if config is not None else MockConfig())
    h = _Handlers(state)
    routes = [
        Route("/v1/models", h.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", h.get_model, methods=["GET"]),
        Route("/v1/chat/completions", h.chat_completions, methods=["POST"]),
        Route("/v1/completions", h.completions, methods=["POST"]),
        Route("/v1/embeddings", h.embeddings, methods=["POST"]),
        Route("/v1/messages", h.messages, methods=["POST"]),
        Route("/openai/deployments/{deployment}/{operation:path}", h.azure, methods=["POST"]),
        Route("/_mock/requests", h.get_requests, methods=["GET"]),
        Route("/_mock/requests", h.clear_requests, methods=["DELETE"]),
        Route("/_mock/models", h.list_mock_models, methods=["GET"]),
        Route("/_mock/models/{name:path}", h.get_mock_model, methods=["GET"]),
        Route("/_mock/models/{name:path}", h.put_mock_model, methods=["PUT"]),
        Route("/_mock/models/{name:path}", h.delete_mock_model, methods=["DELETE"]),
        Route("/_mock/default", h.put_default, methods=["PUT"]),
        Route("/_mock/stats", h.stats, methods=["GET"]),
        Route("/_mock/reset", h.reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
    app.state.mock = state
    return app
