"""Timing of the tool_params + json_schema guards on a typical 5-tool request (not a test).

    .venv/bin/python bench/guards.py [--libs] [--regex]

Prints p50/p95 µs of GuardChain.run([tool_params, json_schema]) for: an answer with two parallel
valid tool calls, the same with three faults, and a structured-output answer; `--libs` also compares
the validation step alone in jsonschema, jsonschema-rs and fastjsonschema (if installed); `--regex`
compares the engines a policy's regular expressions could run on (`_regex`, below).
"""

from __future__ import annotations

import multiprocessing
import random
import re
import statistics
import sys
import time
from multiprocessing.connection import Connection
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
    if "--regex" in sys.argv:
        _regex()


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



# --- `--regex`: the engines a policy's regular expressions could run on (issue 17, finding 5) --------
# before: Python `re` on the event loop; option A: `re` in a worker process with a time limit (killed
# and restarted on timeout); option B (chosen): RE2 through proxy.guards.compile_policy_regex.

ORDINARY = [r"(?i)api[_-]?key", r"BEGIN PRIVATE KEY", r"\b\d{3}-\d{2}-\d{4}\b", r"(?i)password\s*[:=]"]
HOSTILE = r"^(a+)+$"
PROSE = ("Your parcel left our warehouse today and should arrive on Thursday. The refund for order "
         "48213 was issued to the card ending 4242; it can take 3-5 business days to show. ")


def _prose(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


def _worker(conn: Connection, patterns: list[str]) -> None:
    compiled = [re.compile(p) for p in patterns]
    while True:
        text = conn.recv()
        conn.send([m.start() if (m := p.search(text)) else -1 for p in compiled])


class ReWorker:
    """Option A: Python `re` in a child process; a call that overruns `limit_s` kills it (a thread
    cannot be stopped, and `re` holds the GIL while it backtracks) and starts a fresh one."""

    def __init__(self, patterns: list[str], limit_s: float) -> None:
        self.patterns, self.limit_s = patterns, limit_s
        self.ctx = multiprocessing.get_context("forkserver")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.patterns), daemon=True)
        self.proc.start()
        self.conn.send("")  # wait until it is up
        self.conn.recv()

    def search(self, text: str) -> list[int] | None:
        self.conn.send(text)
        if self.conn.poll(self.limit_s):
            return self.conn.recv()
        self.proc.kill()
        self.proc.join()
        self._start()
        return None  # timed out: the guard's result is unknown

    def close(self) -> None:
        self.proc.kill()
        self.proc.join()


def _deny_chain(patterns: list[str], engine: str):
    from proxy.guards.regex import RegexDenyGuard
    chain = build_guards([{"regex_deny": patterns}])
    if engine == "re":  # the guard as it was: the same code over Python-compiled patterns
        guard = chain.guards[0]
        assert isinstance(guard, RegexDenyGuard)
        guard.patterns = [re.compile(p) for p in patterns]
    return chain


def _once_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def _regex() -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    def answer(text: str) -> dict:
        return {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

    print(f"\nregex_deny with {len(ORDINARY)} ordinary patterns, GuardChain.run — µs p50 / p95")
    worker = ReWorker(ORDINARY, limit_s=0.1)
    ratios = []
    try:
        for chars in (1_000, 16_000):
            a = answer(_prose(chars))
            text = a["choices"][0]["message"]["content"]
            chain_re, chain_re2 = _deny_chain(ORDINARY, "re"), _deny_chain(ORDINARY, "re2")
            before = measure(lambda: chain_re.run(req, a), 5000)
            after = measure(lambda: chain_re2.run(req, a), 5000)
            off_loop = measure(lambda: worker.search(text), 2000)
            ratios.append((chars, after[0] / before[0], off_loop[0] / before[0]))
            print(f"  {chars:>6}-char answer: re on the loop (before) {before[0]:7.1f} / {before[1]:7.1f}   "
                  f"RE2 (after) {after[0]:7.1f} / {after[1]:7.1f}   re in a worker, 100 ms limit "
                  f"{off_loop[0]:7.1f} / {off_loop[1]:7.1f}")
        print("\nhostile: regex_deny ['^(a+)+$'] on 'a' * n + '!' — ms for one answer (the loop is blocked "
              "for all of it with `re` on the loop)")
        chain_re, chain_re2 = _deny_chain([HOSTILE], "re"), _deny_chain([HOSTILE], "re2")
        hostile = ReWorker([HOSTILE], limit_s=0.1)
        try:
            for n in (20, 22, 24, 26):
                a = answer("a" * n + "!")
                t_re = _once_ms(lambda: chain_re.run(req, a))
                t_re2 = min(_once_ms(lambda: chain_re2.run(req, a)) for _ in range(5))
                got: list = []
                t_worker = _once_ms(lambda: got.append(hostile.search("a" * n + "!")))
                how = "answered" if got[0] is not None else "timed out, restarted"
                print(f"  n={n}: re on the loop {t_re:9.1f}   RE2 {t_re2:7.3f}   re in a worker {t_worker:7.1f} "
                      f"({how})   re / RE2 = {t_re / t_re2:,.0f}x")
            big = answer("a" * 1_000_000 + "!")
            print(f"  n=1,000,000: RE2 {min(_once_ms(lambda: chain_re2.run(req, big)) for _ in range(3)):.1f} ms "
                  "(linear in the text)")
            # RE2's slow path: a bounded gap after a word keeps many DFA states alive; text that repeats
            # the word at varying distances forces RE2 onto its NFA (still linear, larger constant)
            rng = random.Random(1)
            words = "".join("password" + "x" * rng.randint(0, 12) for _ in range(80_000))[:1_000_000]
            for gap in (r"(?i)password.{0,50}[:=]", r"(?i)password\s{0,5}[:=]"):
                chain = _deny_chain([gap], "re2")
                print(f"  RE2 worst-case text, 1 MB, {gap!r}: "
                      f"{min(_once_ms(lambda: chain.run(req, answer(words))) for _ in range(3)):.1f} ms")
        finally:
            hostile.close()
    finally:
        worker.close()
    for chars, after, off in ratios:
        print(f"  ratio to `re` on the loop, {chars}-char answer: RE2 {after:.2f}x, re in a worker {off:.1f}x")


if __name__ == "__main__":
    main()
