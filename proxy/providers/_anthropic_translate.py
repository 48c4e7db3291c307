"""Translate OpenAI chat-completions traffic to Anthropic's Messages API and back. Pure: no I/O.

The request path speaks OpenAI's wire format only; an Anthropic adapter calls these functions on the
way out (`to_anthropic`) and on the way back (`from_anthropic`, `StreamTranslator`,
`error_to_openai`). Nothing here sends a request or reads a clock except through the `clock` argument.

Request translation (`to_anthropic`)
------------------------------------
* ``system`` / ``developer`` messages, wherever they appear, are hoisted and joined with a blank
  line into Anthropic's top-level ``system`` (their position in the conversation is lost).
* Every other message becomes a turn whose ``content`` is a list of blocks; consecutive turns of the
  same role are merged (Anthropic requires user/assistant alternation). ``role: tool`` messages
  become ``tool_result`` blocks of a user turn, and inside a merged user turn every ``tool_result``
  block is moved first (Anthropic rejects text before tool results). Empty text is left out, and a
  message left with no block at all is dropped.
* Content parts: ``text``; ``image_url`` (http(s) URL -> ``url`` source, ``data:<type>;base64,``
  URL -> ``base64`` source; ``detail`` is dropped); an assistant ``refusal`` part becomes text.
  Audio, file and any other part raise `UnsupportedParameter`.
* ``max_completion_tokens`` (or else ``max_tokens``, or else ``default_max_tokens``) ->
  ``max_tokens``; ``temperature`` must lie in Anthropic's 0..1 (OpenAI allows up to 2: a value above
  1 raises rather than being silently clamped); ``top_p`` is passed; ``stop`` (string or list) ->
  ``stop_sequences``; ``stream: true`` -> ``stream: true``; ``user`` -> ``metadata.user_id``.
* ``tools`` (function tools) -> ``{name, description, input_schema}`` (``strict`` is dropped);
  ``tool_choice`` auto / none / required / named -> ``{"type": "auto" | "none" | "any" | "tool"}``;
  ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use: true`` on the tool choice.
  Without tools, ``tool_choice`` auto/none and ``parallel_tool_calls`` are dropped.
* Assistant ``tool_calls`` -> ``tool_use`` blocks whose ``input`` is the parsed ``arguments``
  (an empty string means ``{}``; anything that is not a JSON object raises `TranslationError`
  naming the call).
* ``response_format: json_schema`` -> an extra tool named after the schema whose ``input_schema`` is
  the schema, and a tool choice that makes the model call it: ``{"type": "tool", "name": <schema>,
  "disable_parallel_tool_use": true}`` when the request has no tools (or ``tool_choice: none``), or
  ``{"type": "any"}`` when it has tools and lets the model call them (the model then either calls one
  of the tools or answers through the schema tool). The returned `Translation` names that tool so the
  response and stream translators turn its input back into ``message.content`` JSON text. ``strict``
  is dropped: Anthropic does not guarantee the input matches the schema.
* ``response_format: json_object`` raises `UnsupportedParameter`: Anthropic has no JSON mode, and a
  schema-less tool would be a guess; use ``json_schema``.
* Dropped because harmless (documented in `DROPPED_PARAMS`): ``metadata`` (OpenAI's stored-completion
  tags; Anthropic's ``metadata`` only takes ``user_id``), ``store``, ``service_tier``,
  ``prompt_cache_key``, ``stream_options`` (its ``include_usage`` goes into `Translation`), and
  ``model`` (replaced by the ``model`` argument). Message ``name`` fields are dropped too.
* Raising `UnsupportedParameter` unless they hold their default (see `UNSUPPORTED_PARAMS`): ``n``
  > 1, ``logprobs``, ``top_logprobs``, ``logit_bias``, ``presence_penalty``, ``frequency_penalty``,
  ``seed``, ``audio``, ``modalities`` other than text, ``prediction``, ``reasoning_effort``,
  ``verbosity``, ``web_search_options``, and the deprecated ``functions`` / ``function_call``.
  Any parameter not listed anywhere raises too: nothing is silently lost. A ``null`` value counts as
  absent for every parameter.
* Not checked here (Anthropic answers with a 400): newer models that refuse ``temperature`` together
  with ``top_p``, whitespace-only stop sequences, trailing whitespace in a final assistant (prefill)
  turn, image media types beyond what the model accepts.

Response translation (`from_anthropic`, `StreamTranslator`)
-----------------------------------------------------------
* ``id`` = ``"chatcmpl-" + <Anthropic message id>`` (kept whole so logs correlate), ``model`` = the
  model Anthropic reports, one choice. Text blocks are joined; ``tool_use`` blocks become
  ``tool_calls`` (arguments = ``json.dumps(input)``, whose ``", "`` / ``": "`` spacing is also what
  Anthropic streams); the structured-output tool's input becomes the content instead. ``thinking``,
  ``redacted_thinking`` and any other block type are dropped.
* ``stop_reason`` -> ``finish_reason``: end_turn, stop_sequence, pause_turn -> stop; max_tokens,
  model_context_window_exceeded -> length; tool_use -> tool_calls (stop when the only tool called was
  the structured-output tool); refusal -> content_filter; anything else -> stop.
* ``usage``: prompt_tokens = input + cache_read + cache_creation tokens; completion_tokens = output
  tokens; ``prompt_tokens_details.cached_tokens`` = cache_read and
  ``prompt_tokens_details.cache_write_tokens`` = cache_creation (both are fields of OpenAI's own
  usage schema, so no private key is needed to keep Anthropic's cache accounting).

Errors (`error_to_openai`, `StreamError`)
-----------------------------------------
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` becomes OpenAI's
``{"error": {"message", "type", "param": null, "code": <Anthropic error type>}}``. The status is kept,
except Anthropic's non-standard 529 (overloaded), which becomes 503: every HTTP client and proxy knows
503 means "busy, retry later", and ``code: "overloaded_error"`` keeps the distinction.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from proxy.providers._scrub import mask_key_like
from proxy.providers._upstream_error import describe_body, safe_identifier

__all__ = [
    "DROPPED_PARAMS",
    "UNSUPPORTED_PARAMS",
    "StreamError",
    "StreamTranslator",
    "Translation",
    "TranslationError",
    "UnsupportedParameter",
    "MalformedResponse",
    "error_to_openai",
    "from_anthropic",
    "to_anthropic",
]

JSON = dict[str, Any]


# --- errors -------------------------------------------------------------------------------

class TranslationError(ValueError):
    """The OpenAI request cannot be translated as sent (malformed). `param` names where."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedParameter(TranslationError):
    """A request parameter (or value) that Anthropic's Messages API has no equivalent for."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message, param=param)


class MalformedResponse(ValueError):
    """Anthropic answered with something that is not a Messages API message."""


class StreamError(Exception):
    """An ``error`` event inside an Anthropic stream (or a stream that breaks the protocol).

    `type` is Anthropic's error type (e.g. ``overloaded_error``); `status` is the HTTP status an
    equivalent non-streamed error would have had after `error_to_openai` (529 -> 503).
    """

    def __init__(self, type: str, message: str) -> None:  # noqa: A002 - mirrors Anthropic's field
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    @property
    def status(self) -> int:
        return _STATUS_BY_ERROR_TYPE.get(self.type, 502)

    def to_openai(self) -> JSON:
        """The OpenAI error body for this error, e.g. to send as the stream's last event."""
        return _openai_error(self.message, self.type, self.status)


# --- parameter tables ---------------------------------------------------------------------

DROPPED_PARAMS: Mapping[str, str] = {
    "model": "replaced by the model the route pins",
    "metadata": "OpenAI stored-completion tags; Anthropic's metadata only accepts user_id",
    "store": "OpenAI stored completions; nothing to store at Anthropic",
    "service_tier": "OpenAI's tiers do not map onto Anthropic's",
    "prompt_cache_key": "an OpenAI cache-routing hint; Anthropic caches by cache_control",
    "stream_options": "include_usage is kept in Translation; the rest is OpenAI-only",
}

# param -> (the values that mean "not used", why it cannot be translated otherwise)
UNSUPPORTED_PARAMS: Mapping[str, tuple[tuple[Any, ...], str]] = {
    "n": ((1,), "Anthropic returns one choice per request; send n separate requests"),
    "logprobs": ((False,), "Anthropic does not return log probabilities"),
    "top_logprobs": ((0,), "Anthropic does not return log probabilities"),
    "logit_bias": (({},), "Anthropic has no logit bias"),
    "presence_penalty": ((0,), "Anthropic has no presence penalty"),
    "frequency_penalty": ((0,), "Anthropic has no frequency penalty"),
    "seed": ((), "Anthropic has no sampling seed"),
    "audio": ((), "Anthropic does not produce audio"),
    "modalities": ((["text"],), "Anthropic only produces text"),
    "prediction": ((), "Anthropic has no predicted outputs"),
    "reasoning_effort": ((), "not translated to Anthropic's extended thinking"),
    "verbosity": ((), "Anthropic has no verbosity setting"),
    "web_search_options": ((), "Anthropic's web search is a server tool, not translated"),
    "functions": ((), "deprecated: use tools"),
    "function_call": ((), "deprecated: use tool_choice"),
}

_TRANSLATED_PARAMS = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "user",
})

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> OpenAI error type (OpenAI clients act on the status; the type informs)
_ERROR_TYPES: Mapping[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "billing_error": "insufficient_quota",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "timeout_error": "server_error",
    "overloaded_error": "server_error",
}

# Anthropic error type -> the status it comes with (529 already turned into 503)
_STATUS_BY_ERROR_TYPE: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 503,
}


# --- the request --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Translation:
    """What the response side must know about how a request was translated.

    structured_output_tool: the name of the tool standing in for ``response_format: json_schema``;
        its input is the answer, to be returned as ``message.content`` JSON text, not a tool call.
    include_usage: the client asked for ``stream_options.include_usage`` (a final usage chunk).
    stream: the client asked for a stream.
    """

    structured_output_tool: str | None = None
    include_usage: bool = False
    stream: bool = False


def to_anthropic(body: Mapping[str, Any], *, model: str,
                 default_max_tokens: int = 4096) -> tuple[JSON, Translation]:
    """An OpenAI chat-completions request body as an Anthropic Messages request body.

    Raises `UnsupportedParameter` for a parameter Anthropic cannot honour and `TranslationError` for
    a malformed request; both are `ValueError`s with `.param` naming the culprit.
    """
    params = {k: v for k, v in body.items() if v is not None}
    for name, value in params.items():
        if name in _TRANSLATED_PARAMS or name in DROPPED_PARAMS:
            continue
        if name in UNSUPPORTED_PARAMS:
            defaults, why = UNSUPPORTED_PARAMS[name]
            if not any(_same(value, d) for d in defaults):
                raise UnsupportedParameter(name, f"'{name}' is not supported by Anthropic models: {why}")
            continue
        raise UnsupportedParameter(name, f"'{name}' is not a parameter the Anthropic translation knows")

    system, turns = _translate_messages(params.get("messages"))
    out: JSON = {"model": model, "max_tokens": _max_tokens(params, default_max_tokens), "messages": turns}
    if system:
        out["system"] = system

    if "temperature" in params:
        t = params["temperature"]
        if not _is_number(t):
            raise TranslationError("'temperature' must be a number", param="temperature")
        if not 0 <= t <= 1:
            raise UnsupportedParameter("temperature", f"'temperature' is {t}, but Anthropic models accept "
                                       "0 to 1 (OpenAI's 0 to 2 scale does not map onto it); send 0..1")
        out["temperature"] = t
    if "top_p" in params:
        p = params["top_p"]
        if not _is_number(p) or not 0 <= p <= 1:
            raise TranslationError("'top_p' must be a number from 0 to 1", param="top_p")
        out["top_p"] = p
    if "stop" in params:
        stops = _stop_sequences(params["stop"])
        if stops:
            out["stop_sequences"] = stops

    tools, tool_choice, structured = _tools(params)
    if tools:
        out["tools"] = tools
    if tool_choice is not None:
        out["tool_choice"] = tool_choice

    if "user" in params:
        if not isinstance(params["user"], str):
            raise TranslationError("'user' must be a string", param="user")
        out["metadata"] = {"user_id": params["user"]}

    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise TranslationError("'stream' must be a boolean", param="stream")
    if stream:
        out["stream"] = True
    options = params.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise TranslationError("'stream_options' must be an object", param="stream_options")
    include_usage = options.get("include_usage") is True
    return out, Translation(structured_output_tool=structured, include_usage=include_usage, stream=stream)


def _same(value: Any, default: Any) -> bool:
    """`value` is `default` (0 matches 0.0, but False never matches 0 nor True 1)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    return bool(value == default)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _max_tokens(params: Mapping[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        if name in params:
            value = params[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TranslationError(f"'{name}' must be a positive integer", param=name)
            return value
    return default


def _stop_sequences(stop: Any) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise TranslationError("'stop' must be a string or a list of strings", param="stop")
    return [s for s in stops if s]


def _translate_messages(messages: Any) -> tuple[str | None, list[JSON]]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("'messages' must be a non-empty list", param="messages")
    system: list[str] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TranslationError(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _system_text(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), where, role="user")
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        elif role == "function":
            raise UnsupportedParameter(f"{where}.role", f"{where}: role 'function' is deprecated; use 'tool'")
        else:
            raise TranslationError(f"{where}: unknown role {role!r}", param=f"{where}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results must come first in a user turn
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if not turns:
        raise TranslationError("'messages' needs at least one user or assistant message", param="messages")
    return ("\n\n".join(system) or None), turns


def _system_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise TranslationError(f"{where}.content[{j}]: a system message may only hold text parts",
                                       param=f"{where}.content[{j}]")
            texts.append(part["text"])
        return "\n\n".join(t for t in texts if t)
    raise TranslationError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _content_blocks(content: Any, where: str, *, role: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            if part["refusal"]:
                blocks.append({"type": "text", "text": part["refusal"]})
        elif kind == "image_url" and role != "assistant":
            blocks.append(_image_block(part.get("image_url"), at))
        elif kind in ("input_audio", "file", "image_url", "refusal"):
            raise UnsupportedParameter(at, f"{at}: a '{kind}' part is not supported in a {role} message "
                                       "sent to an Anthropic model")
        else:
            raise TranslationError(f"{at}: unknown or malformed content part", param=at)
    return blocks


def _image_block(image_url: Any, at: str) -> JSON:
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str):
        raise TranslationError(f"{at}: image_url.url must be a string", param=at)
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:"):
        header, sep, data = url[len("data:"):].partition(",")
        media_type, *flags = header.split(";")
        if not sep or "base64" not in flags:
            raise TranslationError(f"{at}: a data URL image must be base64-encoded", param=at)
        if media_type.lower() not in _IMAGE_MEDIA_TYPES:
            raise UnsupportedParameter(at, f"{at}: image type {media_type!r} is not supported by Anthropic "
                                       f"(use one of {', '.join(sorted(_IMAGE_MEDIA_TYPES))})")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type.lower(), "data": data}}
    raise TranslationError(f"{at}: image_url.url must be an http(s) URL or a base64 data URL", param=at)


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[JSON]:
    if message.get("function_call") is not None:
        raise UnsupportedParameter(f"{where}.function_call", f"{where}: 'function_call' is deprecated; use tool_calls")
    blocks = _content_blocks(message.get("content"), where, role="assistant")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if (not isinstance(function, Mapping) or call.get("type", "function") != "function"
                or not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str)):
            raise TranslationError(f"{at} must be a function call with an id and a name", param=at)
        arguments = function.get("arguments")
        label = f"tool call '{call['id']}' ({function['name']})"
        if arguments is None or arguments == "":
            parsed: Any = {}
        elif isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except ValueError:
                raise TranslationError(f"{at}: the arguments of {label} are not valid JSON; Anthropic needs "
                                       "them as an object", param=f"{at}.function.arguments") from None
        else:
            parsed = arguments
        if not isinstance(parsed, dict):
            raise TranslationError(f"{at}: the arguments of {label} must be a JSON object",
                                   param=f"{at}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": parsed})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{where}: a tool message needs a tool_call_id", param=f"{where}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        parts = _content_blocks(content, where, role="tool")
        if parts:
            block["content"] = parts
    return block


def _tools(params: Mapping[str, Any]) -> tuple[list[JSON], JSON | None, str | None]:
    """Anthropic's tools and tool choice, and the structured-output tool's name if there is one."""
    raw = params.get("tools") or []
    if not isinstance(raw, list):
        raise TranslationError("'tools' must be a list", param="tools")
    tools: list[JSON] = []
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise UnsupportedParameter(at, f"{at}: only function tools are supported for Anthropic models, "
                                       f"not {kind!r}")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise TranslationError(f"{at}: a function tool needs function.name", param=at)
        converted: JSON = {"name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(converted)
    names = {t["name"] for t in tools}

    choice = _tool_choice(params.get("tool_choice"), names)
    user_tools = bool(tools)

    structured = None
    response_format = params.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, Mapping) else None
        if kind == "json_object":
            raise UnsupportedParameter("response_format", "response_format 'json_object' is not supported for "
                                       "Anthropic models: use 'json_schema' with a schema")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise TranslationError("response_format.json_schema needs a name", param="response_format")
            structured = spec["name"]
            if structured in names:
                raise TranslationError(f"response_format.json_schema.name '{structured}' is also the name of "
                                       "a tool; rename one of them", param="response_format")
            tools.append({
                "name": structured,
                "description": spec.get("description") or "Give the final answer as this tool's input.",
                "input_schema": spec.get("schema") or {"type": "object", "properties": {}},
            })
        elif kind != "text":
            raise UnsupportedParameter("response_format", f"response_format type {kind!r} is not supported")

    if structured is not None:
        if user_tools and (choice is None or choice["type"] in ("auto", "any")):
            choice = {"type": "any"}  # call a tool, or answer through the schema tool
        elif not user_tools or choice["type"] == "none":
            choice = {"type": "tool", "name": structured, "disable_parallel_tool_use": True}
    elif not user_tools:
        if choice is not None and choice["type"] in ("any", "tool"):
            raise TranslationError("'tool_choice' asks for a tool call but no tools are given", param="tool_choice")
        choice = None

    parallel = params.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise TranslationError("'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
    if parallel is False and tools and (choice is None or choice["type"] != "none"):
        choice = {"type": "auto"} if choice is None else choice
        choice["disable_parallel_tool_use"] = True
    return tools, choice, structured


def _tool_choice(choice: Any, names: set[str]) -> JSON | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or name not in names:
            raise TranslationError(f"'tool_choice' names the function {name!r}, which is not among the tools",
                                   param="tool_choice")
        return {"type": "tool", "name": name}
    raise UnsupportedParameter("tool_choice", f"tool_choice {choice!r} is not supported for Anthropic models "
                               "(use auto, none, required or a named function)")


# --- the response -------------------------------------------------------------------------

def _finish_reason(stop_reason: Any, has_tool_calls: bool) -> str:
    reason = _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if reason == "tool_calls" and not has_tool_calls:
        return "stop"  # only the structured-output tool was called: that is the answer
    return reason


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(usage: Mapping[str, Any] | None) -> JSON:
    usage = usage or {}
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cache_read + cache_write
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }


def _arguments(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def from_anthropic(resp: Mapping[str, Any], *, request_model: str, translation: Translation,
                   clock: Callable[[], float] = time.time) -> JSON:
    """An Anthropic Messages response as an OpenAI ``chat.completion`` body.

    `request_model` stands in when the response names no model; `clock` gives ``created``.
    Raises `MalformedResponse` when `resp` is not a message.
    """
    content = resp.get("content")
    if not isinstance(content, list) or not isinstance(resp.get("id"), str):
        raise MalformedResponse("the Anthropic response is not a message (no id or no content list)")
    texts: list[str] = []
    calls: list[JSON] = []
    for block in content:
        if not isinstance(block, Mapping):
            raise MalformedResponse("the Anthropic response holds a content block that is not an object")
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use" and block.get("name") == translation.structured_output_tool:
            texts.append(_arguments(block.get("input")))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": _arguments(block.get("input"))}})
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                     "refusal": None}
    if calls:
        message["tool_calls"] = calls
    model = resp.get("model")
    return {
        "id": f"chatcmpl-{resp['id']}",
        "object": "chat.completion",
        "created": int(clock()),
        "model": model if isinstance(model, str) and model else request_model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish_reason(resp.get("stop_reason"), bool(calls))}],
        "usage": _usage(resp.get("usage")),
    }


# --- errors -------------------------------------------------------------------------------

def _openai_error(message: str, anthropic_type: str | None, status: int) -> JSON:
    if anthropic_type in _ERROR_TYPES:
        type_ = _ERROR_TYPES[anthropic_type]
    else:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": type_, "param": None, "code": anthropic_type}}


def error_to_openai(status: int, body: bytes, *, content_type: str | None = None,
                    scrub: Callable[[str], str] = mask_key_like, cut: bool = False) -> tuple[int, JSON]:
    """An Anthropic error response as (status, OpenAI error body).

    The status is kept except 529 (overloaded) -> 503. ``code`` is Anthropic's error type (None if
    the body is not Anthropic's error JSON, in which case the message describes the body and quotes
    the start of plain text, never markup). Anthropic's ``request_id``, when present, is appended to
    the message. Every text taken from the body goes through `scrub` (by default key-like tokens are
    masked; the adapter passes its provider's scrubber) before it is cut short; `cut`: the body was
    longer than what was read.
    """
    out_status = 503 if status == 529 else status
    data = None
    if not cut:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = safe_identifier(error.get("type"))
        message = error["message"]
        if isinstance(data, dict) and isinstance(data.get("request_id"), str):
            message = f"{message} (anthropic request_id {data['request_id']})"
        return out_status, _openai_error(scrub(message), kind, out_status)
    message = f"Anthropic returned status {status}"
    if body:
        message += ": " + describe_body(body, content_type, scrub, cut=cut)
    return out_status, _openai_error(message, None, out_status)


# --- the stream ---------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _Block:
    kind: str  # "text", "tool" (a tool call), "structured" (the schema tool), "ignored"
    tool_index: int = -1
    wrote_arguments: bool = False


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out.

    Call `feed` with each event's name and parsed ``data``; it returns the chunks to send (often
    none). The caller writes each as ``data: <json>`` and, once `finished`, ``data: [DONE]``.
    Tool-call indexes count ``tool_use`` blocks (the schema tool excluded), not Anthropic's block
    indexes. `usage` and `finish_reason` stay readable after the stream, whether or not the client
    asked for the usage chunk (which comes only with ``include_usage``).
    """

    def __init__(self, *, request_model: str, translation: Translation,
                 clock: Callable[[], float] = time.time) -> None:
        self.translation = translation
        self._model = request_model
        self._clock = clock
        self._id: str | None = None
        self._created = 0
        self._blocks: dict[int, _Block] = {}
        self._tool_calls = 0
        self._anthropic_usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.finished = False

    @property
    def usage(self) -> JSON:
        """The OpenAI usage so far (final once `finished`)."""
        return _usage(self._anthropic_usage)

    def feed(self, event: str | None, data: Mapping[str, Any]) -> list[JSON]:
        """Translate one event. Raises `StreamError` on an ``error`` event or a broken stream."""
        kind = data.get("type") or event
        if kind == "ping":
            return []
        if kind == "error":
            error = data.get("error") if isinstance(data.get("error"), Mapping) else {}
            raise StreamError(str(error.get("type") or "api_error"), str(error.get("message") or "stream error"))
        if kind == "message_start":
            return self._message_start(data.get("message") or {})
        if self._id is None:
            raise StreamError("api_error", f"the Anthropic stream sent '{kind}' before message_start")
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_stop":
            return self._block_stop(data)
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            self.finished = True
            if self.translation.include_usage:
                return [{"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                         "model": self._model, "choices": [], "usage": self.usage}]
            return []
        return []  # an event type added after this was written

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk: JSON = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                       "model": self._model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if self.translation.include_usage:
            chunk["usage"] = None
        return chunk

    def _message_start(self, message: Mapping[str, Any]) -> list[JSON]:
        if not isinstance(message.get("id"), str):
            raise StreamError("api_error", "the Anthropic stream's message_start has no message id")
        self._id = f"chatcmpl-{message['id']}"
        self._created = int(self._clock())
        if isinstance(message.get("model"), str) and message["model"]:
            self._model = message["model"]
        self._merge_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            self._anthropic_usage.update({k: v for k, v in usage.items() if v is not None})

    def _tool_delta(self, block: _Block, function: JSON, **extra: Any) -> JSON:
        return self._chunk({"tool_calls": [{"index": block.tool_index, **extra, "function": function}]})

    def _block_start(self, data: Mapping[str, Any]) -> list[JSON]:
        content = data.get("content_block") or {}
        index = data.get("index")
        kind = content.get("type")
        if kind == "text":
            self._blocks[index] = _Block("text")
            return [self._chunk({"content": content["text"]})] if content.get("text") else []
        if kind == "tool_use" and content.get("name") == self.translation.structured_output_tool:
            block = self._blocks[index] = _Block("structured")
            if content.get("input"):
                block.wrote_arguments = True
                return [self._chunk({"content": _arguments(content["input"])})]
            return []
        if kind == "tool_use":
            block = self._blocks[index] = _Block("tool", tool_index=self._tool_calls)
            self._tool_calls += 1
            arguments = ""
            if content.get("input"):
                arguments, block.wrote_arguments = _arguments(content["input"]), True
            return [self._tool_delta(block, {"name": content.get("name"), "arguments": arguments},
                                     id=content.get("id"), type="function")]
        self._blocks[index] = _Block("ignored")
        return []

    def _block_delta(self, data: Mapping[str, Any]) -> list[JSON]:
        block = self._blocks.get(data.get("index"))  # type: ignore[arg-type]
        delta = data.get("delta") or {}
        if block is None:
            raise StreamError("api_error", "the Anthropic stream sent a delta for a block it never started")
        if delta.get("type") == "text_delta" and block.kind == "text":
            text = delta.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if delta.get("type") == "input_json_delta" and block.kind in ("tool", "structured"):
            partial = delta.get("partial_json") or ""
            if not partial:
                return []
            block.wrote_arguments = True
            if block.kind == "structured":
                return [self._chunk({"content": partial})]
            return [self._tool_delta(block, {"arguments": partial})]
        return []  # thinking, signature, citations: not translated

    def _block_stop(self, data: Mapping[str, Any]) -> list[JSON]:
        block = self._blocks.get(data.get("index"))  # type: ignore[arg-type]
        if block is None or block.kind not in ("tool", "structured") or block.wrote_arguments:
            return []
        block.wrote_arguments = True  # no input at all: "{}", as from_anthropic writes it
        if block.kind == "structured":
            return [self._chunk({"content": "{}"})]
        return [self._tool_delta(block, {"arguments": "{}"})]

    def _message_delta(self, data: Mapping[str, Any]) -> list[JSON]:
        self._merge_usage(data.get("usage"))
        delta = data.get("delta") or {}
        if "stop_reason" not in delta or delta["stop_reason"] is None:
            return []
        self.finish_reason = _finish_reason(delta["stop_reason"], self._tool_calls > 0)
        return [self._chunk({}, self.finish_reason)]

