"""What a route's capture mode keeps of a request and of its answer.

| mode        | request                                               | answer                                           |
| ----------- | ----------------------------------------------------- | ------------------------------------------------ |
| `full`      | the body as sent upstream                             | the body as received (embeddings: no vectors)    |
| `redacted`  | PII/secrets masked in messages/prompt/input/suffix,   | PII/secrets masked in every string of each       |
|             | user, metadata; tool JSON schemas kept as they are    | choice (content, refusal, tool call arguments);  |
|             |                                                       | logprobs dropped (their tokens spell the text)   |
| `refs_only` | no text at all: per message role, chars, bytes,       | per choice: finish reason, role, chars, bytes,   |
|             | sha256, part counts; tool count; totals               | sha256, tool call count; usage, model, ids       |

In `refs_only` the record's `template_ref` and `retrieval_ids` (from request headers) carry what
the text was made of; `request_hash` (always the hash of the full request) finds identical inputs.

Embedding vectors are never kept, in any mode: only their count and dimensions.

`full` returns the body itself (no copy): the caller must not mutate it after handing it over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import orjson

from proxy.records._redact import redact_value

__all__ = [
    "CAPTURE_MODES",
    "ENDPOINTS",
    "capture_request",
    "capture_response",
    "extract_params",
    "request_hash",
]

CAPTURE_MODES = ("full", "redacted", "refs_only")
ENDPOINTS = ("chat.completions", "completions", "embeddings")

# Request fields holding prompt text (redacted in `redacted`, summarised in `refs_only`).
_REQUEST_TEXT_FIELDS = ("messages", "prompt", "input", "suffix")
# Request fields that may hold PII and are redacted too in `redacted` (dropped in `refs_only`).
_REQUEST_PII_FIELDS = ("user", "metadata")

_SCALAR_PARAMS = (
    "temperature", "top_p", "seed", "max_tokens", "max_completion_tokens", "n", "stop",
    "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "tool_choice",
    "parallel_tool_calls", "reasoning_effort",
)


def _check_mode(mode: str) -> None:
    if mode not in CAPTURE_MODES:
        raise ValueError(f"unknown capture mode {mode!r}: expected one of {', '.join(CAPTURE_MODES)}")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def request_hash(body: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys) of the full request as sent upstream."""
    return _sha256_hex(_canonical(body))


def extract_params(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters of a request, for the record's `params` (only those present).

    `response_format` keeps its type, and for a JSON schema its name, `strict` and the sha256 of
    the canonical schema; `tool_names` lists the names of the tools (and legacy functions).
    """
    params: dict[str, Any] = {}
    for key in _SCALAR_PARAMS:
        value = body.get(key)
        if value is not None:
            params[key] = value
    rf = body.get("response_format")
    if isinstance(rf, dict):
        kept: dict[str, Any] = {"type": rf.get("type")}
        js = rf.get("json_schema")
        if isinstance(js, dict):
            if js.get("name") is not None:
                kept["schema_name"] = js.get("name")
            if js.get("strict") is not None:
                kept["strict"] = js.get("strict")
            if js.get("schema") is not None:
                kept["schema_sha256"] = _sha256_hex(_canonical(js.get("schema")))
        params["response_format"] = kept
    elif rf is not None:
        params["response_format"] = {"type": str(rf)}
    names: list[str] = []
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
            if name is not None:
                names.append(name)
    for fn in body.get("functions") or ():
        if isinstance(fn, dict) and fn.get("name") is not None:
            names.append(fn["name"])
    if names:
        params["tool_names"] = names
    return params


# --- refs_only summaries -----------------------------------------------------------------------


def _text_ref(text: str) -> dict[str, Any]:
    raw = text.encode("utf-8", "surrogatepass")
    return {"chars": len(text), "bytes": len(raw), "sha256": _sha256_hex(raw)}


def _value_ref(value: Any) -> dict[str, Any]:
    """Summary of prompt/input-like values: a string, a list of strings, token arrays, or parts."""
    if isinstance(value, str):
        return {"count": 1, **_text_ref(value)}
    if isinstance(value, list):
        chars = nbytes = tokens = 0
        for item in value:
            if isinstance(item, str):
                chars += len(item)
                nbytes += len(item.encode("utf-8", "surrogatepass"))
            elif isinstance(item, int):
                tokens += 1
            elif isinstance(item, list):
                tokens += len(item)
        out: dict[str, Any] = {"count": len(value), "chars": chars, "bytes": nbytes,
                               "sha256": _sha256_hex(_canonical(value))}
        if tokens:
            out["tokens"] = tokens
        return out
    if value is None:
        return {"count": 0}
    return {"count": 1, "sha256": _sha256_hex(_canonical(value))}


def _content_ref(content: Any) -> dict[str, Any]:
    """Sizes and hash of a message's content: a string or a list of typed parts."""
    if content is None:
        return {"chars": 0, "bytes": 0}
    if isinstance(content, str):
        return _text_ref(content)
    if isinstance(content, list):
        chars = nbytes = 0
        types: list[str] = []
        for part in content:
            if isinstance(part, dict):
                ptype = part.get("type")
                types.append(ptype if ptype in _KNOWN_PART_TYPES else "other")
                text = part.get("text") if ptype in ("text", "input_text", "output_text") else None
                if isinstance(text, str):
                    chars += len(text)
                    nbytes += len(text.encode("utf-8", "surrogatepass"))
            else:
                types.append("other")
        return {"chars": chars, "bytes": nbytes, "sha256": _sha256_hex(_canonical(content)),
                "parts": len(content), "part_types": types}
    return {"sha256": _sha256_hex(_canonical(content))}


_KNOWN_PART_TYPES = frozenset({
    "text", "image_url", "input_audio", "file", "refusal", "input_text", "output_text",
    "input_image", "input_file",
})
_KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _tool_calls_ref(tool_calls: Any) -> dict[str, Any] | None:
    if not isinstance(tool_calls, list) or not tool_calls:
        return None
    args: list[str] = []
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, dict) else None
        a = fn.get("arguments") if isinstance(fn, dict) else None
        args.append(a if isinstance(a, str) else orjson.dumps(a).decode())
    joined = "\n".join(args)
    return {"count": len(tool_calls), **_text_ref(joined)}


def _message_ref(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        return {"role": "other", **_content_ref(msg)}
    role = msg.get("role")
    out: dict[str, Any] = {"role": role if role in _KNOWN_ROLES else "other"}
    out.update(_content_ref(msg.get("content")))
    tc = _tool_calls_ref(msg.get("tool_calls"))
    if tc is not None:
        out["tool_calls"] = tc
    refusal = msg.get("refusal")
    if isinstance(refusal, str):
        out["refusal"] = _text_ref(refusal)
    return out


def _request_refs(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": body.get("model")}
    if "stream" in body:
        out["stream"] = bool(body.get("stream"))
    messages = body.get("messages")
    if isinstance(messages, list):
        refs = [_message_ref(m) for m in messages]
        out["messages"] = refs
        out["messages_count"] = len(refs)
        out["chars"] = sum(r.get("chars", 0) for r in refs)
        out["bytes"] = sum(r.get("bytes", 0) for r in refs)
        out["sha256"] = _sha256_hex(_canonical(messages))
    for key in ("prompt", "input", "suffix"):
        if key in body:
            out[key] = _value_ref(body[key])
    tools = body.get("tools")
    functions = body.get("functions")
    n_tools = (len(tools) if isinstance(tools, list) else 0) + (len(functions) if isinstance(functions, list) else 0)
    if n_tools:
        out["tools_count"] = n_tools
    return out


# --- requests --------------------------------------------------------------------------------


def capture_request(body: dict[str, Any] | None, mode: str) -> dict[str, Any] | None:
    """What the record keeps of a request body under capture `mode` (None for no body)."""
    _check_mode(mode)
    if body is None:
        return None
    if mode == "full":
        return body
    if mode == "redacted":
        out = dict(body)
        for key in (*_REQUEST_TEXT_FIELDS, *_REQUEST_PII_FIELDS):
            if key in out:
                out[key] = redact_value(out[key])
        return out
    return _request_refs(body)


# --- responses -------------------------------------------------------------------------------


def _embedding_dims(vec: Any) -> int | None:
    if isinstance(vec, list):
        return len(vec)
    if isinstance(vec, str):  # encoding_format=base64: little-endian float32s
        try:
            return len(base64.b64decode(vec, validate=False)) // 4
        except (binascii.Error, ValueError):
            return None
    return None


def _embeddings_summary(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    items = data if isinstance(data, list) else []
    dims = None
    for item in items:
        if isinstance(item, dict):
            dims = _embedding_dims(item.get("embedding"))
            if dims is not None:
                break
    out: dict[str, Any] = {"object": body.get("object"), "model": body.get("model"),
                           "count": len(items), "dimensions": dims}
    if "usage" in body:
        out["usage"] = body.get("usage")
    return out


_RESPONSE_META = ("id", "object", "created", "model", "system_fingerprint", "service_tier", "usage")


_ENUM_LIKE = re.compile(r"[a-z0-9_.]{1,64}")


def _error_refs(err: Any) -> dict[str, Any]:
    if not isinstance(err, dict):
        return {"error": _value_ref(err) if isinstance(err, str) else {}}
    out: dict[str, Any] = {}
    for key in ("type", "code"):
        value = err.get(key)
        if value is None or isinstance(value, (int, float, bool)) or (
                isinstance(value, str) and _ENUM_LIKE.fullmatch(value)):
            out[key] = value  # provider enums such as "invalid_request_error"
        else:
            out[key] = _text_ref(str(value))  # anything else may echo input: keep no text
    message = err.get("message")
    if isinstance(message, str):
        out["message"] = _text_ref(message)
    return {"error": out}


def _response_refs(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    out: dict[str, Any] = {k: body[k] for k in _RESPONSE_META if k in body}
    if "error" in body:
        out.update(_error_refs(body["error"]))
    choices = body.get("choices")
    if isinstance(choices, list):
        refs: list[dict[str, Any]] = []
        for ch in choices:
            if not isinstance(ch, dict):
                refs.append({"other": True})
                continue
            ref: dict[str, Any] = {"index": ch.get("index"), "finish_reason": ch.get("finish_reason")}
            if endpoint == "completions" or "text" in ch:
                text = ch.get("text")
                ref.update(_text_ref(text) if isinstance(text, str) else {"chars": 0, "bytes": 0})
            else:
                ref.update(_message_ref(ch.get("message")))
            refs.append(ref)
        out["choices"] = refs
    return out


def _response_redacted(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    choices = body.get("choices")
    if isinstance(choices, list):
        new_choices = []
        for ch in choices:
            if not isinstance(ch, dict):
                new_choices.append(redact_value(ch))
                continue
            c = dict(ch)
            for key in ("message", "text", "delta"):
                if key in c:
                    c[key] = redact_value(c[key])
            if c.get("logprobs") is not None:
                c["logprobs"] = None  # the tokens spell out the text; masking tokens one by one misses PII
            new_choices.append(c)
        out["choices"] = new_choices
    if "error" in body:
        out["error"] = redact_value(body["error"])
    return out


def capture_response(body: dict[str, Any] | None, mode: str, endpoint: str) -> dict[str, Any] | None:
    """What the record keeps of a response body under capture `mode` (None for no body).

    `endpoint` is chat.completions | completions | embeddings. For a streamed answer pass the
    assembled body (the same shape as the non-streamed one).
    """
    _check_mode(mode)
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    if body is None:
        return None
    if endpoint == "embeddings" and "error" not in body:
        return _embeddings_summary(body)
    if mode == "full":
        return body
    if mode == "redacted":
        return _response_redacted(body)
    return _response_refs(body, endpoint)
