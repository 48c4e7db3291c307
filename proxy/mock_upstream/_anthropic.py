"""Anthropic Messages mode of the mock upstream: `POST /v1/messages` answered like Anthropic's API.

A client points an Anthropic SDK (or its own HTTP code) at `http://host:port` and posts to
`/v1/messages`. The same per-model behaviour as the OpenAI mode applies (`MockModel`: reply text,
served model, latency, chunks, chunk delay, tool-call defects, judge / bad-answer knobs, faults), and
the request is recorded in `/_mock/requests` (with its path) exactly as it was sent.

Request checks, in this order (each an Anthropic error body
`{"type": "error", "error": {"type", "message"}, "request_id"}` with a `request-id` header):

- no (or an empty) `x-api-key` header -> 401 `authentication_error`; `Authorization` is not accepted;
- no `anthropic-version` header -> 400 `invalid_request_error`; a value other than `2023-06-01` /
  `2023-01-01` -> 400 as well;
- the body is not a JSON object, a top-level field Anthropic does not know (`n`, `stop`,
  `response_format`, `presence_penalty`, ... i.e. an OpenAI field passed through) -> 400
  "`<field>: Extra inputs are not permitted`";
- `model` / `max_tokens` / `messages` missing or mistyped, `max_tokens` < 1, a message with role
  `system` (Anthropic takes a top-level `system`), `temperature` / `top_p` outside 0..1, a malformed
  `tools` / `tool_choice` / `stop_sequences` / `system` -> 400 `invalid_request_error`;
- a bad `x-mock-*` header -> 400 `invalid_request_error`.

The answer. The text is the OpenAI mode's (`reply`, `bad_answer_rate`, `judge_error_rate`), computed
from the Anthropic request turned into chat messages (`system` first). Tools: every custom tool
(`{"name", "description", "input_schema"}`, optional `"type": "custom"`; server tools are ignored) is
a candidate; `tool_choice` `auto` (or none given) and `any` call the first tool (`tool_calls: all`
calls every tool unless `disable_parallel_tool_use`), `{"type": "tool", "name": X}` always calls X,
`none` answers with text. Each call is a `tool_use` block `{"type": "tool_use", "id": "toolu_...",
"name", "input"}` whose input validates against `input_schema` (synthesised like the OpenAI mode's
arguments), with `stop_reason` `tool_use`. `tool_call_fault` / `tool_call_fault_rate` apply as in
the OpenAI mode; `bad_json` cannot be an object, so a non-streamed `input` is then
`{"INVALID_JSON": "<the broken text>"}` while a stream's `partial_json` pieces join to the broken
text itself. Structured output (`output_config.format` or the beta `output_format`, `{"type":
"json_schema", "schema"}`) makes the text a JSON document valid against the schema (`json_fault`
applies). `max_tokens` cuts the text (`stop_reason` `max_tokens`); the first of `stop_sequences` found
in the text cuts it before the sequence (`stop_reason` `stop_sequence`, `stop_sequence` set);
otherwise `end_turn`. `usage` is `{"input_tokens", "output_tokens", "cache_read_input_tokens": 0,
"cache_creation_input_tokens": 0}`. `model` is the model's `served_model`, else the requested one.

Streaming (`"stream": true`), with `event:` lines, after `latency_ms` and `chunk_delay_ms` between
two events: `message_start` (the message with empty `content`, `stop_reason` null, usage with the
input tokens and `output_tokens: 1`), then per block `content_block_start` (text `""` / tool_use with
`input: {}`), a `ping` after the first block start, `content_block_delta`s (`text_delta` pieces of the
text, or an empty then `chunks` non-empty `input_json_delta.partial_json` pieces of the input JSON),
`content_block_stop`; then `message_delta` (`stop_reason`, `stop_sequence`, `usage.output_tokens`) and
`message_stop`. The text deltas / partial_json pieces join to exactly the non-streamed result of the
same request.

Faults (`fault` in the model's config, or the `x-mock-fault` header), mapped onto Anthropic's API:

- `http_429`: 429 `rate_limit_error` with `retry-after` (whole seconds, rounded up from the model's
  `retry_after`) and `anthropic-ratelimit-requests-{limit,remaining,reset}` headers;
- `http_500`: 500 `api_error`;
- `http_503` and `overloaded`: 529 `overloaded_error` (Anthropic's "overloaded");
- `http_400`: 400 `invalid_request_error`;
- `error_event_mid_stream`: a stream sends 200 and half its events, then
  `event: error` / `{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`
  and ends (no `message_delta` / `message_stop`); a non-streamed request gets the 529 instead;
- `timeout`: no answer until the client goes away (at most 300 s);
- `reset`: the headers, half the body (JSON or events), then the connection is cut;
- `reset_mid_stream`: a stream sends half its events and is cut (non-streamed: as `reset`);
- `malformed_json` / `malformed_sse`: non-streamed, 200 with the JSON body cut in half; streamed, one
  garbage (non-JSON) event in the middle of an otherwise complete stream.

The OpenAI endpoints play the two Anthropic-flavoured faults as a 503 (`overloaded`, and
`error_event_mid_stream` without a stream) and as a `data: {"error": {...}}` chunk ending a
half-sent stream (`error_event_mid_stream`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy.mock_upstream._answer import BadRequest, _truncate, chat_answer, count_tokens
from proxy.mock_upstream._behaviour import Behaviour, HeaderError, header_overrides
from proxy.mock_upstream._faults import ResetResponse, malformed_json_response, wait_for_disconnect
from proxy.mock_upstream._state import MockState
from proxy.mock_upstream._stream import paced, split

__all__ = [
    "API_VERSIONS",
    "AnthropicMessage",
    "ERROR_EVENT",
    "GARBAGE_EVENT",
    "messages_endpoint",
    "message_answer",
    "message_doc",
    "message_events",
]

API_VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
# top-level fields of a Messages request; anything else is rejected like Anthropic does
_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
    "context_management", "output_format", "output_config",
})
_JSON = "application/json"
_SSE = "text/event-stream"
ERROR_EVENT = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
               b"\n\n")
GARBAGE_EVENT = b'event: content_block_delta\ndata: {"type": "content_block_delta", this is not json\n\n'
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


class _Invalid(Exception):
    """A request Anthropic would reject (an `invalid_request_error` unless `type_` says otherwise)."""

    def __init__(self, message: str, status: int = 400, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type_ = type_


# --- errors ---------------------------------------------------------------------------------

def error_response(status: int, type_: str, message: str, request_id: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON,
                    headers={"request-id": request_id, **(headers or {})})


def _overloaded(request_id: str, fault: str) -> Response:
    return error_response(529, "overloaded_error", f"Overloaded (mock fault {fault})", request_id)


def http_fault(fault: str, retry_after: float, request_id: str, stream: bool) -> Response | None:
    """The error response of a fault answered with an HTTP error, or None for another fault."""
    if fault == "http_429":
        reset = datetime.now(UTC) + timedelta(seconds=retry_after)
        headers = {
            "retry-after": str(max(0, math.ceil(retry_after))),
            "anthropic-ratelimit-requests-limit": "60",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return error_response(429, "rate_limit_error", "This request would exceed the rate limit for your "
                              "organization of 60 requests per minute. (mock fault http_429)", request_id, headers)
    if fault == "http_500":
        return error_response(500, "api_error", "Internal server error (mock fault http_500)", request_id)
    if fault in ("http_503", "overloaded") or (fault == "error_event_mid_stream" and not stream):
        return _overloaded(request_id, fault)
    if fault == "http_400":
        return error_response(400, "invalid_request_error", "Invalid request (mock fault http_400)", request_id)
    return None


# --- request validation and translation -------------------------------------------------------

def _check_headers(request: Request) -> None:
    if not request.headers.get("x-api-key", "").strip():
        raise _Invalid("x-api-key header is required", 401, "authentication_error")
    version = request.headers.get("anthropic-version")
    if version is None:
        raise _Invalid("anthropic-version: header is required")
    if version.strip() not in API_VERSIONS:
        raise _Invalid(f"anthropic-version: invalid version {version!r}; use one of {', '.join(sorted(API_VERSIONS))}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _block_text(block: Any) -> str:
    """The text a content block carries (text blocks, and the content of tool_result blocks)."""
    if not isinstance(block, Mapping):
        return ""
    if isinstance(block.get("text"), str):
        return block["text"]
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_block_text(b) for b in content) if t)
    return ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise _Invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _Invalid("messages: Input should be a valid list")
    if not messages:
        raise _Invalid("messages: at least one message is required")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        if isinstance(system, list) and not all(isinstance(b, Mapping) and b.get("type") == "text"
                                                and isinstance(b.get("text"), str) for b in system):
            raise _Invalid("system: Input should be a valid string or a list of text blocks")
        if not isinstance(system, (str, list)):
            raise _Invalid("system: Input should be a valid string or a list of text blocks")
        out.append({"role": "system", "content": _content_text(system)})
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise _Invalid(f"messages.{i}: Input should be a valid dictionary")
        role = m.get("role")
        if role == "system":
            raise _Invalid('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                           'parameter, not "system" as an input message role.')
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                    raise _Invalid(f"messages.{i}.content.{j}: Input should be a valid content block with a type")
        elif not isinstance(content, str):
            raise _Invalid(f"messages.{i}.content: Input should be a valid string or list of content blocks")
        out.append({"role": role, "content": _content_text(content)})
    return out


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _Invalid("tools: Input should be a valid list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, Mapping):
            raise _Invalid(f"tools.{i}: Input should be a valid dictionary")
        if t.get("type") not in (None, "custom"):
            continue  # a server tool (web search, bash, ...): the mock never calls it
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise _Invalid(f"tools.{i}.custom.name: Field required")
        schema = t.get("input_schema")
        if not isinstance(schema, Mapping):
            raise _Invalid(f"tools.{i}.custom.input_schema: Field required")
        out.append({"type": "function", "function": {"name": t["name"], "parameters": schema}})
    return out


def _tool_choice(body: Mapping[str, Any], tools: list[dict[str, Any]]) -> tuple[Any, bool]:
    """The OpenAI-style tool_choice (None: the mock's default) and whether parallel calls are allowed."""
    choice = body.get("tool_choice")
    if choice is None:
        return None, True
    if not isinstance(choice, Mapping) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _Invalid("tool_choice: Input tag should be one of 'auto', 'any', 'tool', 'none'")
    parallel = choice.get("disable_parallel_tool_use") is not True
    kind = choice["type"]
    if kind == "none":
        return "none", parallel
    if kind == "any":
        return "required", parallel
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _Invalid("tool_choice.tool.name: Field required")
        if name not in {t["function"]["name"] for t in tools}:
            raise _Invalid(f"tool_choice: tool {name!r} is not in tools")
        return {"type": "function", "function": {"name": name}}, parallel
    return "auto", parallel


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt: Any = None
    config = body.get("output_config")
    if isinstance(config, Mapping):
        fmt = config.get("format")
    if fmt is None:
        fmt = body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), Mapping):
        raise _Invalid("output_config.format: expected {\"type\": \"json_schema\", \"schema\": {...}}")
    return fmt["schema"]


@dataclass(slots=True)
class _Request:
    model: str
    max_tokens: int
    stream: bool
    stop_sequences: list[str]
    chat: dict[str, Any]  # the request as an OpenAI chat body, for the shared answer logic


def _parse(body: Any) -> _Request:
    if not isinstance(body, dict):
        raise _Invalid("The request body must be a JSON object.")
    for key in body:
        if key not in _FIELDS:
            raise _Invalid(f"{key}: Extra inputs are not permitted")
    model = body.get("model")
    if model is None:
        raise _Invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _Invalid("model: Input should be a valid non-empty string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _Invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _Invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _Invalid("max_tokens: Input should be greater than or equal to 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _Invalid("stream: Input should be a valid boolean")
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if v is not None and (not _is_number(v) or not 0 <= v <= 1):
            raise _Invalid(f"{key}: range: 0..1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _Invalid("top_k: Input should be a non-negative integer")
    stops = body.get("stop_sequences")
    if stops is None:
        stops = []
    elif not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _Invalid("stop_sequences: Input should be a valid list of non-empty strings")

    chat: dict[str, Any] = {"messages": _messages(body)}
    tools = _tools(body)
    choice, parallel = _tool_choice(body, tools)
    if tools:
        chat["tools"] = tools
        chat["parallel_tool_calls"] = parallel
    if choice is not None:
        chat["tool_choice"] = choice
    schema = _output_schema(body)
    if schema is not None:
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    return _Request(model, max_tokens, stream, stops, chat)


# --- the answer -------------------------------------------------------------------------------

@dataclass(slots=True)
class AnthropicMessage:
    """What the mock answers to one Messages request, before it is shaped as JSON or events."""

    blocks: list[dict[str, Any]] = field(default_factory=list)  # as in the final `content`
    partial_json: dict[int, str] = field(default_factory=dict)  # block index -> streamed input JSON text
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def _tool_input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"INVALID_JSON": arguments}


def message_answer(req: _Request, b: Behaviour, new_id: Callable[[], str]) -> AnthropicMessage:
    """The answer to a parsed request (raises `BadRequest` via the shared answer logic)."""
    answer = chat_answer(req.chat, b, req.model, new_id)  # no max_tokens in `chat`: cut here, after stops
    msg = AnthropicMessage(input_tokens=answer.prompt_tokens)
    if answer.tool_calls:
        for call in answer.tool_calls:
            msg.partial_json[len(msg.blocks)] = call.arguments
            msg.blocks.append({"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"),
                               "name": call.name, "input": _tool_input(call.arguments)})
        msg.stop_reason = "tool_use"
        msg.output_tokens = answer.completion_tokens
        return msg
    text = answer.content or ""
    stop_at: tuple[int, str] | None = None
    for s in req.stop_sequences:
        pos = text.find(s)
        if pos >= 0 and (stop_at is None or pos < stop_at[0]):
            stop_at = (pos, s)
    if stop_at is not None:
        text = text[: stop_at[0]]
    text, cut = _truncate(text, req.max_tokens)
    if cut:
        msg.stop_reason = "max_tokens"
    elif stop_at is not None:
        msg.stop_reason, msg.stop_sequence = "stop_sequence", stop_at[1]
    else:
        msg.stop_reason = _STOP_REASONS.get(answer.finish_reason, "end_turn")
    if text:
        msg.blocks.append({"type": "text", "text": text})
    msg.output_tokens = max(count_tokens(text), 1)
    return msg


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def message_doc(msg: AnthropicMessage, id_: str, model: str) -> dict[str, Any]:
    return {"id": id_, "type": "message", "role": "assistant", "model": model, "content": msg.blocks,
            "stop_reason": msg.stop_reason, "stop_sequence": msg.stop_sequence,
            "usage": _usage(msg.input_tokens, msg.output_tokens)}


def _event(doc: dict[str, Any]) -> bytes:
    return b"event: " + doc["type"].encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def message_events(msg: AnthropicMessage, id_: str, model: str, pieces: int) -> list[bytes]:
    """The server-sent events of the streamed message."""
    start = {"id": id_, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": _usage(msg.input_tokens, 1)}
    events = [_event({"type": "message_start", "message": start})]
    for i, block in enumerate(msg.blocks):
        if block["type"] == "tool_use":
            head = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in ["", *split(msg.partial_json[i], pieces)]]
        else:
            head = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in split(block["text"], pieces)]
        events.append(_event({"type": "content_block_start", "index": i, "content_block": head}))
        if i == 0:
            events.append(_event({"type": "ping"}))
        events.extend(_event({"type": "content_block_delta", "index": i, "delta": d}) for d in deltas)
        events.append(_event({"type": "content_block_stop", "index": i}))
    if not msg.blocks:
        events.append(_event({"type": "ping"}))
    events.append(_event({"type": "message_delta",
                          "delta": {"stop_reason": msg.stop_reason, "stop_sequence": msg.stop_sequence},
                          "usage": {"output_tokens": msg.output_tokens}}))
    events.append(_event({"type": "message_stop"}))
    return events


# --- the endpoint ---------------------------------------------------------------------------

def _finish_json(doc: dict[str, Any], fault: str, request_id: str) -> Response:
    body = orjson.dumps(doc)
    if fault in ("reset", "reset_mid_stream"):
        return ResetResponse(body, _JSON)
    if fault in ("malformed_json", "malformed_sse"):
        return malformed_json_response(body)
    return Response(body, media_type=_JSON, headers={"request-id": request_id})


def _finish_stream(events: list[bytes], b: Behaviour, fault: str, request_id: str) -> Response:
    if fault == "reset":
        return ResetResponse(b"".join(events), _SSE)
    middle = min(max(2, len(events) // 2), len(events) - 1)
    cut_after: int | None = None
    if fault == "reset_mid_stream":
        cut_after = middle
    elif fault == "error_event_mid_stream":
        events = [*events[:middle], ERROR_EVENT]
    elif fault in ("malformed_sse", "malformed_json"):
        events = [*events[:middle], GARBAGE_EVENT, *events[middle:]]
    return StreamingResponse(paced(events, b.chunk_delay_ms / 1000, cut_after=cut_after), media_type=_SSE,
                             headers={"cache-control": "no-cache", "request-id": request_id})


async def messages_endpoint(state: MockState, request: Request) -> Response:
    """`POST /v1/messages`: see the module docstring."""
    raw = await request.body()
    scope = request.scope
    path: str = scope["path"]
    query: str = scope["query_string"].decode("latin-1")
    try:
        body = orjson.loads(raw) if raw else None
        parsed = True
    except orjson.JSONDecodeError:
        body, parsed = None, False
    model = body.get("model") if isinstance(body, dict) else None
    model = model if isinstance(model, str) and model else None
    state.record(request.method, path, query, dict(request.headers), body, model,
                 body_text=None if parsed else raw.decode("utf-8", "replace"))
    rid = state.next_id()
    request_id = f"req_{rid}"
    try:
        _check_headers(request)
        if not parsed:
            raise _Invalid("There was an issue with the format or content of your request: the body is not valid JSON.")
        req = _parse(body)
        overrides = header_overrides(request.headers.raw)
    except _Invalid as exc:
        return error_response(exc.status, exc.type_, exc.message, request_id)
    except HeaderError as exc:
        return error_response(400, "invalid_request_error", str(exc), request_id)

    header_fault = overrides.pop("fault", None)
    b = state.behaviour(req.model).with_overrides(overrides)
    fault = header_fault if isinstance(header_fault, str) else state.take_fault(req.model, b)
    if fault != "none":
        state.faults[fault] += 1
    if fault == "timeout":
        await wait_for_disconnect(request)
    if b.latency_ms > 0:
        await asyncio.sleep(b.latency_ms / 1000)
    failed = http_fault(fault, b.retry_after, request_id, req.stream)
    if failed is not None:
        return failed

    try:
        msg = message_answer(req, b, state.next_id)
    except BadRequest as exc:
        return error_response(400, "invalid_request_error", exc.message, request_id)
    served = b.served_model or req.model
    message_id = f"msg_{rid}"
    if req.stream:
        return _finish_stream(message_events(msg, message_id, served, b.chunks), b, fault, request_id)
    return _finish_json(message_doc(msg, message_id, served), fault, request_id)

