"""Timing of the tool_params + json_schema guards on a typical 5-tool request (not a test).

    .venv/bin/python bench/guards.py [--libs]

Prints p50/p95 µs of GuardChain.run([tool_params, json_schema]) for: an answer with two parallel
valid tool calls, the same with three faults, and a structured-output answer; `--libs` also compares
the validation step alone in jsonschema, jsonschema-rs and fastjsonschema (if installed).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.guards import build_guards  # noqa: E402


def _tool(name: str, props: dict, required: list[str], strict: bool = False) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"{name} tool", "strict": strict,
            "parameters": {"type": "object", "properties": props, "required": required, "additionalProperties": False}}}


TOOLS = [
    _tool("get_weather", {"city": {"type": "string"}, "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                          "days": {"type": "integer", "minimum": 1, "maximum": 14}}, ["city"]),
    _tool("search_orders", {"customer_id": {"type": "string"}, "status": {"type": "string", "enum": ["open", "shipped", "closed"]},
                            "since": {"type": "string"}, "limit": {"type": "integer"}}, ["customer_id"]),
    _tool("create_ticket", {"title": {"type": "string"}, "priority": {"type": "string", "enum": ["low", "high"]},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "contact": {"type": "object", "properties": {"email": {"type": "string"}, "phone": {"type": "string"}},
                                        "required": ["email"], "additionalProperties": False}}, ["title", "priority"]),
    _tool("refund", {"order_id": {"type": "string"}, "amount": {"type": "number"}, "reason": {"type": "string"}},
          ["order_id", "amount"], strict=False),
    _tool("lookup_faq", {"query": {"type": "string"}, "top_k": {"type": "integer"}}, ["query"]),
]
REQUEST = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": "auto"}


def _answer(calls: list[tuple[str, dict]]) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{j}", "type": "function", "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
            for j, (n, a) in enumerate(calls)]}}]}


VALID = _answer([("get_weather", {"city": "Paris", "units": "celsius", "days": 3}),
                 ("create_ticket", {"title": "Late parcel", "priority": "high", "tags": ["shipping"],
                                    "contact": {"email": "a@b.c"}})])
FAULTY = _answer([("get_weather", {"city": "Paris", "units": "kelvin", "country": "FR"}),
                  ("create_ticket", {"priority": "high", "tags": ["shipping", 3], "contact": {"email": "a@b.c"}})])
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"},
          "citations": {"type": "array", "items": {"type": "object", "properties": {"doc": {"type": "string"},
                        "page": {"type": "integer"}}, "required": ["doc"]}}}, "required": ["answer", "confidence"],
          "additionalProperties": False}
JSON_REQUEST = dict(REQUEST, response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}})
JSON_ANSWER = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": orjson.dumps(
    {"answer": "Your parcel ships today.", "confidence": 0.9, "citations": [{"doc": "faq-12", "page": 3}]}).decode()}}]}


def measure(fn, n: int = 20000) -> tuple[float, float]:
    for _ in range(500):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(n * 0.95)] / 1000


def main() -> None:
    chain = build_guards(["tool_params", "json_schema"])
    cases = {"5 tools, 2 valid parallel calls": (REQUEST, VALID),
             "5 tools, 2 calls with 4 faults": (REQUEST, FAULTY),
             "5 tools + json_schema content, valid": (JSON_REQUEST, JSON_ANSWER)}
    print("GuardChain.run([tool_params, json_schema]) — µs")
    for label, (req, ans) in cases.items():
        p50, p95 = measure(lambda: chain.run(req, ans))
        print(f"  {label:<40} p50 {p50:7.1f}   p95 {p95:7.1f}   ({len(chain.run(req, ans))} failures)")
    if "--libs" in sys.argv:
        _libs()


def _libs() -> None:
    schema = TOOLS[2]["function"]["parameters"]
    good = {"title": "t", "priority": "high", "tags": ["a"], "contact": {"email": "e"}}
    bad = {"priority": "mid", "tags": [1], "contact": {}, "x": 1}
    print("validation alone (create_ticket schema), µs p50: valid / 4-error instance (all errors)")
    import jsonschema
    v = jsonschema.Draft202012Validator(schema)
    print(f"  jsonschema      {measure(lambda: list(v.iter_errors(good)), 5000)[0]:7.1f} / {measure(lambda: list(v.iter_errors(bad)), 5000)[0]:7.1f}")
    try:
        import jsonschema_rs
        r = jsonschema_rs.Draft202012Validator(schema)
        print(f"  jsonschema-rs   {measure(lambda: r.is_valid(good))[0]:7.1f} / {measure(lambda: list(r.iter_errors(bad)))[0]:7.1f}")
    except ImportError:
        print("  jsonschema-rs   not installed")
    try:
        import fastjsonschema
        f = fastjsonschema.compile(schema)

        def first_error() -> None:
            try:
                f(bad)
            except fastjsonschema.JsonSchemaException:
                pass
        print(f"  fastjsonschema  {measure(lambda: f(good))[0]:7.1f} / {measure(first_error)[0]:7.1f}  (first error only)")
    except ImportError:
        print("  fastjsonschema  not installed")


if __name__ == "__main__":
    main()
