"""What the mock model "says" for a request: text, tool calls, a function call or JSON, and token counts.

Deterministic: the same request and behaviour give the same answer (ids aside).
"""

from __future__ import annotations

import hashlib

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.mock_upstream._behaviour import Behaviour
from proxy.mock_upstream._judge import add_bad_marker, is_bad_answer, judge_verdict
from proxy.mock_upstream._synth import drop_required, invent_param, synthesize, violate, wrong_type

__all__ = [
    "Answer",
    "BadRequest",
    "ToolCall",
    "chat_answer",
    "completion_answers",
    "count_tokens",
    "UNKNOWN_TOOL",
]

UNKNOWN_TOOL = "mock_unknown_tool"
_TOKEN = re.compile(r"\w+|[^\w\s]")


class BadRequest(Exception):
    """The request is invalid the way OpenAI would reject it (answered with a 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Answer:
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    function_call: ToolCall | None = None  # legacy `functions`
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


def count_tokens(text: str) -> int:
    """Rough token count: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    """The first `limit` tokens of `text`, and whether anything was cut."""
    if limit <= 0:
        return "", bool(text)
    for i, m in enumerate(_TOKEN.finditer(text)):
        if i == limit:
            return text[: m.start()].rstrip(), True
    return text, False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def _prompt_tokens(messages: list[Any]) -> int:
    n = 0
    for m in messages:
        if isinstance(m, Mapping):
            n += 3 + count_tokens(_text_of(m.get("content")))
    return max(n, 1)


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _reply(b: Behaviour, model: str, last_user: str) -> str:
    if b.reply is not None:
        return b.reply.replace("{model}", model).replace("{last_user}", last_user)
    return f"Mock answer from {model}: {last_user[:80]}"


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BadRequest(f"Invalid '{key}': expected an integer >= 1.", key)
        return v
    return None


# --- tools ------------------------------------------------------------------------------

def _function_tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("Invalid 'tools': expected an array.", "tools")
    out = []
    for t in tools:
        if isinstance(t, Mapping) and t.get("type") == "function":
            fn = t.get("function")
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise BadRequest("Invalid 'tools': a function tool needs function.name.", "tools")
            out.append(fn)
    return out


def _chosen_tools(body: Mapping[str, Any], b: Behaviour, tools: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    choice = body.get("tool_choice")
    by_name = {fn["name"]: fn for fn in tools}
    if choice == "none":
        return []
    if isinstance(choice, Mapping):
        if choice.get("type") == "function":
            name = (choice.get("function") or {}).get("name")
            if name not in by_name:
                raise BadRequest(f"Invalid 'tool_choice': no function named {name!r} in 'tools'.", "tool_choice")
            return [by_name[name]]
        if choice.get("type") == "allowed_tools":
            allowed = (choice.get("allowed_tools") or {}).get("tools") or []
            names = [(a.get("function") or {}).get("name") for a in allowed if isinstance(a, Mapping)]
            tools = [by_name[n] for n in names if n in by_name]
    if not tools:
        return []
    if b.tool_calls == "all" and body.get("parallel_tool_calls") is not False:
        return tools
    return tools[:1]


def _arguments(fn: Mapping[str, Any], fault: str) -> str:
    """JSON arguments for a call of `fn`, with the tool-call fault applied when not "none"."""
    params = fn.get("parameters")
    if not isinstance(params, Mapping):
        params = {"type": "object", "properties": {}}
    value = synthesize(params)
    if fault == "invented_param":
        value = invent_param(value, params)
    elif fault == "missing_required":
        value = drop_required(value, params)
    elif fault == "wrong_type":
        value = wrong_type(value, params)
    text = orjson.dumps(value).decode()
    if fault == "bad_json":
        text = text[:-1] + "," if len(text) > 1 else "{"
    return text


def _draw(body: Mapping[str, Any]) -> float:
    """A number in [0, 1) fixed by the request's messages: the same request always draws the same."""
    digest = hashlib.blake2b(orjson.dumps(body.get("messages") or body.get("functions")), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _unknown_name(declared: set[str]) -> str:
    name = UNKNOWN_TOOL
    while name in declared:
        name += "_x"
    return name


def _tool_calls(body: Mapping[str, Any], b: Behaviour, new_id: Callable[[], str]) -> list[ToolCall]:
    tools = _function_tools(body)
    chosen = _chosen_tools(body, b, tools)
    calls = []
    faulty = b.tool_call_fault != "none" and _draw(body) < b.tool_call_fault_rate
    for i, fn in enumerate(chosen):
        fault = b.tool_call_fault if i == 0 and faulty else "none"
        name = fn["name"]
        if fault == "unknown_tool":
            name = _unknown_name({t["name"] for t in tools})
        calls.append(ToolCall(id=f"call_{new_id()}", name=name, arguments=_arguments(fn, fault)))
    return calls


def _function_call(body: Mapping[str, Any], b: Behaviour, new_id: Callable[[], str]) -> ToolCall | None:
    functions = body.get("functions")
    if not isinstance(functions, list) or not functions:
        return None
    fns = [f for f in functions if isinstance(f, Mapping) and isinstance(f.get("name"), str)]
    choice = body.get("function_call")
    if choice == "none" or not fns:
        return None
    fn = fns[0]
    if isinstance(choice, Mapping):
        named = [f for f in fns if f["name"] == choice.get("name")]
        if not named:
            raise BadRequest(f"Invalid 'function_call': no function named {choice.get('name')!r}.", "function_call")
        fn = named[0]
    name = fn["name"]
    if b.tool_call_fault == "unknown_tool":
        name = _unknown_name({f["name"] for f in fns})
    return ToolCall(id=f"call_{new_id()}", name=name, arguments=_arguments(fn, b.tool_call_fault))


# --- JSON mode --------------------------------------------------------------------------

def _json_content(response_format: Mapping[str, Any], b: Behaviour, text: str) -> str | None:
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        value = synthesize(schema)
    elif kind == "json_object":
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        value = {"answer": text}
    else:
        return None
    fault = b.json_fault
    if fault == "schema_violation":
        value = violate(value, schema) if kind == "json_schema" else ["answer", text]
    out = orjson.dumps(value).decode()
    if fault == "invalid_json":
        out = out[: max(1, len(out) // 2)] if len(out) > 2 else "{"
    elif fault == "fenced":
        out = f"```json\n{out}\n```"
    return out


# --- entry points -------------------------------------------------------------------------

def chat_answer(body: Mapping[str, Any], b: Behaviour, model: str, new_id: Callable[[], str]) -> Answer:
    """The answer to a chat completion request (raises `BadRequest` for an invalid one)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Invalid 'messages': expected a non-empty array of messages.", "messages")
    limit = _max_tokens(body)
    answer = Answer(prompt_tokens=_prompt_tokens(messages))
    if b.judge_error_rate is not None:  # a judge model answers every request with a verdict
        answer.content = judge_verdict(body, b.judge_error_rate, b.json_fault)
        answer.completion_tokens = max(count_tokens(answer.content), 1)
        return answer

    calls = _tool_calls(body, b, new_id)
    if calls:
        answer.tool_calls = calls
        answer.finish_reason = "tool_calls"
        answer.completion_tokens = sum(count_tokens(c.arguments) + 3 for c in calls)
        return answer
    fc = _function_call(body, b, new_id)
    if fc is not None:
        answer.function_call = fc
        answer.finish_reason = "function_call"
        answer.completion_tokens = count_tokens(fc.arguments) + 3
        return answer

    text = _reply(b, model, _last_user_text(messages))
    if is_bad_answer(body, b.bad_answer_rate):
        text = add_bad_marker(text)
    rf = body.get("response_format")
    if isinstance(rf, Mapping):
        json_text = _json_content(rf, b, text)
        if json_text is not None:
            text = json_text
    if limit is not None:
        text, cut = _truncate(text, limit)
        if cut:
            answer.finish_reason = "length"
    answer.content = text
    answer.completion_tokens = max(count_tokens(text), 1)
    return answer


def completion_answers(body: Mapping[str, Any], b: Behaviour, model: str) -> tuple[list[tuple[str, str]], int, int]:
    """Legacy completions: [(text, finish_reason)] per prompt, prompt tokens, completion tokens."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
        prompts = [" ".join(str(p) for p in prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        prompts = [" ".join(str(t) for t in p) for p in prompt]
    else:
        raise BadRequest("Invalid 'prompt': expected a string or an array of strings or tokens.", "prompt")
    limit = _max_tokens(body)
    out: list[tuple[str, str]] = []
    p_tokens = c_tokens = 0
    for p in prompts:
        text = " " + _reply(b, model, p.strip().splitlines()[-1] if p.strip() else "")
        if is_bad_answer({"prompt": p}, b.bad_answer_rate):
            text = add_bad_marker(text)
        finish = "stop"
        if limit is not None:
            text, cut = _truncate(text, limit)
            if cut:
                finish = "length"
        out.append((text, finish))
        p_tokens += max(count_tokens(p), 1)
        c_tokens += count_tokens(text)
    return out, p_tokens, c_tokens
