"""The OpenAPI 3.1 description of Sluicegate's own HTTP endpoints, served at `GET /openapi.json`.

Built once, as a plain dict (no dependency). Request bodies name the fields Sluicegate itself checks
(`proxy/server/_request.py`: `model`, `messages` / `prompt` / `input`, `stream`; the feedback and
review APIs check every field) and the OpenAI fields it forwards; anything else a caller sends is
forwarded upstream unchanged, so the inference bodies stay open (`additionalProperties: true`).
Every error is OpenAI's shape, `{"error": {"message", "type", "param", "code"}}` — an upstream's
own 4xx passes through unchanged, and is that shape when the upstream speaks OpenAI's API.

The fuzz suite (`tests/fuzz/`) runs schemathesis against this description: keep it in step with
the routes in `_app.py`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["OPENAPI", "OPENAPI_JSON", "build_openapi", "openapi_json"]

_JSON = "application/json"
_SSE = "text/event-stream"


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(_ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ref(_ERROR_RESPONSES[code], "responses") for code in codes}


# status -> the name of its entry under components/responses
_ERROR_RESPONSES = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "408": "RequestTimeout",
    "409": "IdempotencyConflict",
    "413": "PayloadTooLarge",
    "422": "GuardBlocked",
    "429": "RateLimited",
    "431": "HeadersTooLarge",
    "502": "BadGateway",
    "503": "ServiceUnavailable",
    "504": "GatewayTimeout",
}

_ANY_JSON: dict[str, Any] = {}  # any JSON value (a JSON Schema that accepts everything)

# --------------------------------------------------------------------------- schemas

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "OpenAI's error shape; the message says what to fix and never holds a key.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"], "description": "the request field at fault, if one is"},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "description": "One chat message (OpenAI's shape); forwarded as sent.",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}},
                                  {"type": "null"}]},
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "refusal": {"type": ["string", "null"]},
        },
        "additionalProperties": True,
    },
    "Tool": {
        "type": "object",
        "description": "A declared tool; the `tool_params` guard checks tool calls against `parameters`.",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["function", "custom"]},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object", "description": "a JSON Schema (2020-12)"},
                    "strict": {"type": "boolean"},
                },
            },
            "custom": {"type": "object"},
        },
        "additionalProperties": True,
    },
    "ResponseFormat": {
        "type": "object",
        "description": "Structured output; the `json_schema` guard validates the answer against it.",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
            "json_schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "schema": {"type": "object"},
                               "strict": {"type": "boolean"}},
            },
        },
    },
    "StreamOptions": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
        "additionalProperties": True,
    },
    "Metadata": {
        "type": "object",
        "description": ("The app's metadata. Sluicegate's own keys (the `x-sluicegate-*` header names) are "
                        "read and removed; the others are forwarded unless the provider sets "
                        "`forward_metadata: false`."),
        "additionalProperties": True,
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "description": "the route's name (GET /v1/models lists them)",
                      "examples": ["support-bot"]},
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            "stream": {"type": "boolean"},
            "stream_options": _ref("StreamOptions"),
            "user": {"type": "string", "description": "end-user id; a default sticky key"},
            "metadata": _ref("Metadata"),
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "n": {"type": "integer", "minimum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            "seed": {"type": "integer"},
            "presence_penalty": {"type": "number"},
            "frequency_penalty": {"type": "number"},
            "logit_bias": {"type": "object", "additionalProperties": {"type": "number"}},
            "logprobs": {"type": "boolean"},
            "top_logprobs": {"type": "integer", "minimum": 0},
            "tools": {"type": "array", "items": _ref("Tool")},
            "tool_choice": {"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]},
                                      {"type": "object"}]},
            "parallel_tool_calls": {"type": "boolean"},
            "functions": {"type": "array", "items": {"type": "object"}},
            "function_call": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "response_format": _ref("ResponseFormat"),
            "reasoning_effort": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "description": "the route's name", "examples": ["support-bot"]},
            "prompt": {"anyOf": [{"type": "string"}, {"type": "array"}],
                       "description": "a string, or an array of strings or token arrays"},
            "stream": {"type": "boolean"},
            "stream_options": _ref("StreamOptions"),
            "user": {"type": "string"},
            "metadata": _ref("Metadata"),
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "n": {"type": "integer", "minimum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            "seed": {"type": "integer"},
            "echo": {"type": "boolean"},
            "suffix": {"type": ["string", "null"]},
        },
        "additionalProperties": True,
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "description": "the route's name", "examples": ["support-bot"]},
            "input": {"anyOf": [{"type": "string"}, {"type": "array"}],
                      "description": "a string, or an array of strings or token arrays"},
            "user": {"type": "string"},
            "metadata": _ref("Metadata"),
            "dimensions": {"type": "integer", "minimum": 1},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        },
        "additionalProperties": True,
    },
    "StreamEvent": {
        "type": "object",
        "description": ("One server-sent event of a stream (`\"stream\": true`), relayed as the upstream sent it: "
                        "`data: {chunk}` events, then `data: [DONE]`. An upstream that breaks the stream after it "
                        "started ends it with `data: {\"error\": {...}}` (OpenAI's error shape)."),
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": "a chunk as JSON, `[DONE]`, or an error object as JSON"},
            "event": {"type": "string"},
            "id": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                       "total_tokens": {"type": "integer"}},
        "additionalProperties": True,
    },
    "ChatCompletion": {
        "type": "object",
        "description": "The upstream's answer, relayed as it came (the `model` is the pinned snapshot).",
        "required": ["choices"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "object": {"type": "string", "const": "chat.completion"},
            "created": {"type": ["integer", "null"]},
            "model": {"type": ["string", "null"]},
            "choices": {"type": "array", "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "message": {"type": "object"},
                               "finish_reason": {"type": ["string", "null"]}},
            }},
            "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]},
            "system_fingerprint": {"type": ["string", "null"]},
        },
        "additionalProperties": True,
    },
    "Completion": {
        "type": "object",
        "required": ["choices"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "object": {"type": "string", "const": "text_completion"},
            "model": {"type": ["string", "null"]},
            "choices": {"type": "array", "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "text": {"type": "string"},
                               "finish_reason": {"type": ["string", "null"]}},
            }},
            "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]},
        },
        "additionalProperties": True,
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "object": {"type": "string", "const": "list"},
            "data": {"type": "array", "items": {
                "type": "object",
                "properties": {"object": {"type": "string"}, "index": {"type": "integer"},
                               "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}},
                                                       {"type": "string"}]}},
            }},
            "model": {"type": ["string", "null"]},
            "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]},
        },
        "additionalProperties": True,
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "const": "list"},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {"id": {"type": "string", "description": "a route name"},
                               "object": {"type": "string", "const": "model"},
                               "created": {"type": "integer"},
                               "owned_by": {"type": "string"}},
            }},
        },
    },
    "FeedbackRequest": {
        "type": "object",
        "description": ("One outcome. Exactly one of `request_id` / `episode_id`, as the metric's `level` "
                        "says (`inference` -> request_id, `episode` -> episode_id)."),
        "required": ["metric"],
        "properties": {
            "request_id": {"type": "string", "minLength": 1,
                           "description": "the x-sluicegate-request-id response header"},
            "episode_id": {"type": "string", "minLength": 1, "description": "the x-sluicegate-episode header sent"},
            "metric": {"type": "string", "minLength": 1, "description": "a metric of the policy's `metrics:`",
                       "examples": ["task_success"]},
            "value": {"type": ["boolean", "number"], "description": "true/false for boolean metrics, a number "
                                                                   "for float metrics"},
            "source": {"type": "string", "minLength": 1},
            "note": {"type": "string", "minLength": 1},
            "idempotency_key": {"type": "string", "minLength": 1,
                                "description": ("scoped to (caller, request or episode, metric): repeating it with "
                                                "the same content stores the outcome once; other content is a 409")},
        },
        "additionalProperties": False,
    },
    "FeedbackAccepted": {
        "type": "object",
        "required": ["object", "id", "metric", "status", "verified"],
        "properties": {
            "object": {"type": "string", "const": "feedback"},
            "id": {"type": "string"},
            "metric": {"type": "string"},
            "request_id": {"type": "string"},
            "episode_id": {"type": "string"},
            "status": {"type": "string", "const": "accepted"},
            "verified": {"type": "boolean", "description": "false: the store could not be asked just then"},
            "idempotent_replay": {"type": "boolean", "description": ("true: a repeat of an idempotency key's "
                                                                     "first outcome, answered as then, not stored "
                                                                     "again (header idempotent-replayed: true)")},
        },
    },
    "FeedbackBatchResult": {
        "type": "object",
        "required": ["object", "accepted", "rejected", "errors", "ids"],
        "properties": {
            "object": {"type": "string", "const": "feedback.batch"},
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "replayed": {"type": "integer", "minimum": 0, "description": "accepted items that repeated a key"},
            "ids": {"type": "array", "items": {"type": "string"}},
            "errors": {"type": "array", "items": {
                "type": "object",
                "required": ["index", "status", "error"],
                "properties": {"index": {"type": "integer"}, "status": {"type": "integer"},
                               "error": {"$ref": "#/components/schemas/Error/properties/error"}},
            }},
        },
    },
    "Report": {
        "type": "object",
        "description": "The report engine's JSON: per route and arm, every figure (see README, Reports).",
        "required": ["routes"],
        "properties": {"routes": {"type": "array", "items": {"type": "object"}}},
        "additionalProperties": True,
    },
    "ReviewItem": {
        "type": "object",
        "required": ["object", "id", "record_id", "scorer", "pending", "labels"],
        "properties": {
            "object": {"type": "string", "const": "review.item"},
            "id": {"type": "string", "description": "<record_id>:<scorer>"},
            "record_id": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
            "route": {"type": ["string", "null"]},
            "variant": {"type": ["string", "null"]},
            "scorer": {"type": "string"},
            "reason": {"type": ["string", "null"]},
            "entered_at": {"type": "number"},
            "pending": {"type": "integer"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "taxonomy": {"type": "array", "items": {"type": "object"}},
            "record": {"type": ["object", "null"]},
            "scores": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "ReviewLabelRequest": {
        "type": "object",
        "required": ["label", "reviewer"],
        "properties": {
            "label": {"type": "string", "minLength": 1, "description": "one of the scorer's labels",
                      "examples": ["pass"]},
            "taxonomy": {"type": "string", "description": "a taxonomy class (built-in or the policy's)"},
            "note": {"type": "string", "maxLength": 10000},
            "reviewer": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "additionalProperties": False,
    },
    "ReviewLabel": {
        "type": "object",
        "required": ["object", "id", "record_id", "scorer", "label", "reviewer", "status"],
        "properties": {
            "object": {"type": "string", "const": "review.label"},
            "id": {"type": "string"},
            "record_id": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
            "scorer": {"type": "string"},
            "label": {"type": "string"},
            "taxonomy": {"type": ["string", "null"]},
            "note": {"type": ["string", "null"]},
            "reviewer": {"type": "string"},
            "created_at": {"type": "number"},
            "status": {"type": "string", "enum": ["stored", "accepted"]},
            "replaced": {"type": ["object", "null"]},
        },
    },
    "ReviewAddRequest": {
        "type": "object",
        "description": "Exactly one of `record_id` (one attempt) or `request_id` (the answer the client got).",
        "properties": {
            "record_id": {"type": "string"},
            "request_id": {"type": "string"},
            "scorer": {"type": "string", "description": "a human scorer; optional when the policy has one"},
            "note": {"type": "string", "maxLength": 10000},
        },
        "additionalProperties": False,
    },
    "ReviewEntry": {
        "type": "object",
        "required": ["object", "id", "record_id", "scorer", "status"],
        "properties": {
            "object": {"type": "string", "const": "review.entry"},
            "id": {"type": "string"},
            "record_id": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
            "route": {"type": ["string", "null"]},
            "variant": {"type": ["string", "null"]},
            "scorer": {"type": "string"},
            "reason": {"type": ["string", "null"]},
            "entered_at": {"type": "number"},
            "note": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["queued", "already_queued"]},
            "pending": {"type": "boolean"},
            "label": {"type": ["object", "null"]},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded", "starting"]},
            "policy": {"type": ["object", "null"]},
            "providers": {"type": "object"},
            "store": {"type": "object", "properties": {
                "url": {"type": "string"},
                "writable": {"type": "boolean", "description": "the last write succeeded (not a ping)"},
                "failures_in_a_row": {"type": "integer"},
                "last_write_at": {"type": ["number", "null"]}, "last_failure_at": {"type": ["number", "null"]},
                "last_error": {"type": ["string", "null"]}}},
            "recorder": {"type": "object"},
            "scoring": {"type": ["object", "null"]},
            "reload": {"type": ["object", "null"]},
            "shadows": {"type": "object"},
            "cache": {"type": ["object", "null"]},
        },
        "additionalProperties": True,
    },
    "ReloadResult": {
        "type": "object",
        "required": ["object"],
        "properties": {"object": {"type": "string", "const": "policy.reload"}},
        "additionalProperties": True,
    },
}

# --------------------------------------------------------------------------- parameters and headers

_HEADER_PARAMS: dict[str, tuple[str, str]] = {
    # component name -> (header, description)
    "CorrelationId": ("x-sluicegate-correlation-id", "the app's own id for this call"),
    "RequestId": ("x-request-id", "accepted as the correlation id when x-sluicegate-correlation-id is absent"),
    "Episode": ("x-sluicegate-episode", ("a multi-call task; the default sticky key; outcomes can be reported "
                                         "per episode")),
    "User": ("x-sluicegate-user", "end-user id (also accepted: the body's `user`)"),
    "Template": ("x-sluicegate-template", "prompt template reference, e.g. support/answer@v3"),
    "RetrievalIds": ("x-sluicegate-retrieval-ids", "comma-separated ids of the documents put in the prompt"),
    "Tags": ("x-sluicegate-tags", "comma-separated tags, e.g. sensitive,vip"),
}

_PARAMETERS: dict[str, Any] = {
    name: {"name": header, "in": "header", "required": False, "description": description,
           "schema": {"type": "string"}}
    for name, (header, description) in _HEADER_PARAMS.items()
}
_PARAMETERS.update({
    "Since": {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "epoch seconds, an ISO time, or an age like 24h, within 1970..9999 (else 400, "
                             "`invalid_time`)", "examples": {"age": {"value": "24h"}}},
    "Until": {"name": "until", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "epoch seconds, an ISO time, or an age like 1h; not before `since`"},
    "ReviewScorer": {"name": "scorer", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "only entries of this human scorer"},
    "ReviewRoute": {"name": "route", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "only entries of this route"},
})

_RESPONSE_HEADERS: dict[str, Any] = {
    "x-sluicegate-request-id": {"description": "the request's id (all its attempts share it); feedback refers "
                                               "to it", "schema": {"type": "string"}},
    "x-sluicegate-route": {"description": "the route the request went to", "schema": {"type": "string"}},
    "x-sluicegate-variant": {"description": "the variant (the key in `split`) that answered",
                             "schema": {"type": "string"}},
    "x-sluicegate-guards": {"description": "`pass`, `deferred` (a stream judged after it was sent), or the "
                                           "failed guards as comma-separated guard:class pairs",
                            "schema": {"type": "string"}},
    "x-sluicegate-cache": {"description": "`hit` or `miss` on routes with an output cache",
                           "schema": {"type": "string", "enum": ["hit", "miss"]}},
}

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _error("The request is malformed: not JSON, not an object, empty, or a field is missing or "
                         "of the wrong type (`param` names it). An upstream's own 400 passes through unchanged."),
    "Unauthorized": _error("No caller key, or an unknown one (when the policy declares caller keys)."),
    "Forbidden": _error("The caller's key may not use this route or endpoint."),
    "NotFound": _error("`model` names no route (`model_not_found`), or the id names nothing served here."),
    "RequestTimeout": _error("The client took too long to send the body (`request_timeout`)."),
    "IdempotencyConflict": _error("The `idempotency_key` was already used by this caller for this request or "
                                  "episode and metric with other content (`idempotency_key_conflict`; `param` "
                                  "names a field that differs). The first outcome stays."),
    "PayloadTooLarge": _error("The body is over `server.max_body_bytes` (`request_too_large`)."),
    "HeadersTooLarge": _error("The request's headers are over the limit (`headers_too_large`)."),
    "GuardBlocked": _error("A guard whose action is `block` failed (`guard_failed`); the answer is recorded, "
                           "never returned."),
    "RateLimited": _error("Rate limited: the upstream's 429 after the last fallback, the caller key's limit "
                          "(`rate_limit_exceeded`), or the key's requests in flight at its cap "
                          "(`concurrency_limit_exceeded`).", _RETRY_AFTER),
    "BadGateway": _error("The upstream failed: unreachable (`upstream_unreachable`), a 5xx (`upstream_error`), "
                         "or a broken answer (`upstream_bad_response`); the message names the provider."),
    "ServiceUnavailable": _error("Overloaded or the store cannot be read right now; try again shortly.",
                                 _RETRY_AFTER),
    "GatewayTimeout": _error("The upstream or the route's deadline timed out (`upstream_timeout`)."),
}

_INFERENCE_ERRORS = ("400", "401", "403", "404", "408", "413", "422", "429", "431", "502", "503", "504")
_SECURITY_CALLER: list[dict[str, list[str]]] = [{"callerKey": []}, {}]
_SECURITY_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}, {}]


def _inference(summary: str, request_schema: str, answer_schema: str, streams: bool,
               operation_id: str) -> dict[str, Any]:
    ok_content: dict[str, Any] = _json_content(_ref(answer_schema))
    if streams:
        ok_content[_SSE] = {"schema": _ref("StreamEvent")}
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["inference"],
        "security": _SECURITY_CALLER,
        "parameters": [_ref(name, "parameters") for name in _HEADER_PARAMS],
        "requestBody": {"required": True, "content": _json_content(_ref(request_schema))},
        "responses": {
            "200": {"description": "The upstream's answer" + (" (JSON, or SSE with `\"stream\": true`)"
                                                              if streams else ""),
                    "headers": _RESPONSE_HEADERS, "content": ok_content},
            **_errors(*_INFERENCE_ERRORS),
        },
    }


def _get(summary: str, operation_id: str, tag: str, responses: dict[str, Any],
         parameters: list[Any] | None = None, security: list[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if security is not None:
        op["security"] = security
    return op


def _ok(description: str, schema: dict[str, Any] | None = None, status: str = "200",
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = _json_content(schema)
    if headers:
        response["headers"] = headers
    return {status: response}


_ROUTE_PARAM = {"name": "route", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "a route of the policy", "examples": {"route": {"value": "support-bot"}}}
_REVIEW_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                    "description": "a review entry id: `<record_id>:<scorer>`"}
_PENDING_HEADER = {"x-sluicegate-review-pending": {"description": "entries pending under the filters",
                                                   "schema": {"type": "string"}}}

_PATHS: dict[str, Any] = {
    "/v1/chat/completions": {"post": _inference(
        "Chat completion (streaming or not; tools; response_format)", "ChatCompletionRequest", "ChatCompletion",
        True, "createChatCompletion")},
    "/v1/completions": {"post": _inference(
        "Legacy text completion (streaming or not)", "CompletionRequest", "Completion", True,
        "createCompletion")},
    "/v1/embeddings": {"post": _inference(
        "Embeddings", "EmbeddingRequest", "EmbeddingList", False, "createEmbedding")},
    "/v1/models": {"get": _get(
        "The policy's route names, in OpenAI's list shape", "listModels", "inference",
        _ok("The routes", _ref("ModelList")), security=_SECURITY_CALLER)},
    "/v1/feedback": {"post": {
        "operationId": "createFeedback",
        "summary": "Report one downstream outcome for a request or an episode",
        "tags": ["outcomes"],
        "security": _SECURITY_CALLER,
        "requestBody": {"required": True, "content": _json_content(_ref("FeedbackRequest"))},
        "responses": {**_ok("Accepted (written through the never-blocking recorder)", _ref("FeedbackAccepted"),
                            "202"),
                      **_errors("400", "401", "403", "404", "409", "413")},
    }},
    "/v1/feedback/batch": {"post": {
        "operationId": "createFeedbackBatch",
        "summary": "Back-fill outcomes: a JSON array or JSON lines",
        "tags": ["outcomes"],
        "security": _SECURITY_CALLER,
        "requestBody": {"required": True, "content": {
            _JSON: {"schema": {"type": "array", "items": _ref("FeedbackRequest")}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one feedback object per line"}},
        }},
        "responses": {**_ok("Some (or no) items accepted; each rejected one with its index and error",
                            _ref("FeedbackBatchResult"), "202"),
                      "400": {"description": ("The body is not a JSON array nor JSON lines (Error), or every item "
                                              "was rejected (the batch result)"),
                              "content": _json_content({"anyOf": [_ref("Error"), _ref("FeedbackBatchResult")]})},
                      **_errors("401", "403")},
    }},
    "/v1/reports": {"get": _get(
        "The report over every route", "getReports", "reports",
        {**_ok("The report", _ref("Report")), **_errors("400", "401", "403")},
        [_ref("Since", "parameters"), _ref("Until", "parameters")], _SECURITY_ADMIN)},
    "/v1/reports/{route}": {"get": _get(
        "The report of one route", "getRouteReport", "reports",
        {**_ok("The report", _ref("Report")), **_errors("400", "401", "403", "404")},
        [_ROUTE_PARAM, _ref("Since", "parameters"), _ref("Until", "parameters")], _SECURITY_ADMIN)},
    "/v1/review/next": {"get": _get(
        "The oldest pending review entry, with the record as stored", "nextReview", "review",
        {**_ok("The next entry", _ref("ReviewItem"), headers=_PENDING_HEADER),
         "204": {"description": "Nothing pending under the filters", "headers": _PENDING_HEADER},
         **_errors("400", "401", "403", "503")},
        [_ref("ReviewScorer", "parameters"), _ref("ReviewRoute", "parameters"),
         {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
          "description": "an entry id: skip to the entries queued after it"}], _SECURITY_ADMIN)},
    "/v1/review/{id}": {"post": {
        "operationId": "labelReview",
        "summary": "Label a review entry (labelling again replaces the label)",
        "tags": ["review"],
        "security": _SECURITY_ADMIN,
        "parameters": [_REVIEW_ID_PARAM],
        "requestBody": {"required": True, "content": _json_content(_ref("ReviewLabelRequest"))},
        "responses": {**_ok("Labelled", _ref("ReviewLabel")), **_errors("400", "401", "403", "404", "413", "503")},
    }},
    "/v1/review": {"post": {
        "operationId": "addReview",
        "summary": "Queue a record (or the answer a request got) for human review",
        "tags": ["review"],
        "security": _SECURITY_ADMIN,
        "requestBody": {"required": True, "content": _json_content(_ref("ReviewAddRequest"))},
        "responses": {**_ok("Already queued", _ref("ReviewEntry")), **_ok("Queued", _ref("ReviewEntry"), "201"),
                      **_errors("400", "401", "403", "404", "413", "503")},
    }},
    "/review": {"get": _get(
        "The review page (HTML)", "reviewPage", "review",
        {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
         **_errors("400", "401", "403", "503")},
        [_ref("ReviewScorer", "parameters"), _ref("ReviewRoute", "parameters")], _SECURITY_ADMIN)},
    "/healthz": {"get": _get("Liveness: the process is up", "healthz", "operations",
                             _ok("Up", _ref("Health")), security=[])},
    "/readyz": {"get": _get(
        "Readiness with detail: policy, pools, store (degraded when it cannot be written), scoring, reload",
        "readyz", "operations",
        {**_ok("Ready (or degraded: requests keep flowing)", _ref("Readiness")),
         "503": {"description": "Starting: no policy loaded yet", "content": _json_content(_ref("Readiness"))}},
        security=[])},
    "/metrics": {"get": _get(
        "Prometheus metrics", "metrics", "operations",
        {"200": {"description": "The Prometheus text exposition format",
                 "content": {"text/plain": {"schema": {"type": "string"}}}}}, security=[])},
    "/admin/reload": {"post": {
        "operationId": "reloadPolicy",
        "summary": "Reload the policy file; a broken policy is refused and the old one keeps serving",
        "tags": ["operations"],
        "security": _SECURITY_ADMIN,
        "responses": {**_ok("Reloaded", _ref("ReloadResult")),
                      "400": {"description": "The policy was refused (`policy_invalid`); the message lists every "
                                             "problem with file, line and key path",
                              "content": _json_content(_ref("Error"))},
                      **_errors("401", "403")},
    }},
    "/openapi.json": {"get": _get("This description", "openapi", "operations",
                                  _ok("The OpenAPI 3.1 document", {"type": "object"}), security=[])},
}


def build_openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluicegate",
            "version": "0.1.0",
            "summary": "OpenAI-compatible evaluation gateway",
            "description": (
                "An OpenAI-compatible reverse proxy that splits traffic between variants, falls back, records "
                "every attempt, runs guards and joins downstream outcomes. Every error is OpenAI's shape, "
                "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`. Request headers "
                "`x-sluicegate-*` may also be sent inside the body's `metadata` object."),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "this gateway"}],
        "tags": [
            {"name": "inference", "description": "The OpenAI API, routed by `model` (a route name)"},
            {"name": "outcomes", "description": "Downstream outcomes (the feedback API)"},
            {"name": "reports", "description": "Per-variant reports"},
            {"name": "review", "description": "The human review queue"},
            {"name": "operations", "description": "Health, readiness, metrics, reload"},
        ],
        "security": _SECURITY_CALLER,
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "parameters": _PARAMETERS,
            "responses": _RESPONSES,
            "securitySchemes": {
                "callerKey": {"type": "http", "scheme": "bearer", "description": (
                    "A caller key declared in the policy (stored there as a hash). Never forwarded upstream. "
                    "Optional while the policy declares no keys.")},
                "adminKey": {"type": "http", "scheme": "bearer", "description": (
                    "The admin key, for /admin/*, /v1/reports, /v1/review and the review page. Optional while "
                    "the policy declares none.")},
            },
        },
    }


OPENAPI: dict[str, Any] = build_openapi()
OPENAPI_JSON: bytes = orjson.dumps(OPENAPI)


async def openapi_json(request: Request) -> Response:
    """`GET /openapi.json`: the description above."""
    return Response(OPENAPI_JSON, media_type="application/json")
