"""Request parsing under hostile input, against an in-process gateway with the mock upstream.

For arbitrary JSON bodies (mostly OpenAI-shaped, with any field replaced by any JSON), non-JSON
bytes under any content type, deep nesting within the parser's limit, huge bodies around
`server.max_body_bytes`, unicode everywhere and numbers out of range, on the three inference
endpoints:

- never a 5xx: the mock upstream is configured to succeed, so a 5xx can only be the gateway's;
- every non-2xx is OpenAI's error shape with a message;
- a 400 about a field names it in `param` (and names the field this suite expects).

The bugs this suite found are fixed; their cases stay below as regular tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.fuzz._gateway import (
    MAX_BODY_BYTES,
    ROUTES,
    error_problems,
    fuzz,
    running_gateway,
)

ENDPOINTS = {"chat.completions": "/v1/chat/completions", "completions": "/v1/completions",
             "embeddings": "/v1/embeddings"}
MAIN_FIELD = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}
ORJSON_DUMPS_MAX_DEPTH = 254  # orjson.dumps raises past this many nested containers


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with structlog.testing.capture_logs(), running_gateway(tmp_path_factory.mktemp("fuzz-requests")) as c:
        yield c


# --------------------------------------------------------------------------- strategies

# unicode of every plane (surrogates cannot be encoded in UTF-8 JSON, so none), and some of the
# characters that break naive code: NUL, RTL marks, BOM, combining marks, emoji
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24) | st.sampled_from(
    ["", "\x00", "\u202e\u200f", "\ufeff", "e\u0301", "\U0001f600" * 3, "null", "[DONE]", "data: x\n\n"])
BIG_NUMBERS = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, 1.7976931348623157e308, 5e-324, -0.0])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | BIG_NUMBERS
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10)

ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | TEXT
CONTENT = TEXT | st.none() | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                                              "text": TEXT}), max_size=2) | ANY_JSON
MESSAGE = st.fixed_dictionaries({"role": ROLES}, optional={"content": CONTENT, "name": TEXT,
                                                           "tool_call_id": TEXT, "tool_calls": ANY_JSON})
MESSAGES = st.lists(MESSAGE | ANY_JSON, max_size=4)
SCHEMA = st.fixed_dictionaries({"type": st.just("object")}, optional={
    "properties": st.dictionaries(TEXT, st.fixed_dictionaries({"type": st.sampled_from(
        ["string", "integer", "number", "boolean", "array", "object", "nonsense"])}), max_size=3),
    "required": st.lists(TEXT, max_size=2), "additionalProperties": st.booleans() | ANY_JSON}) | ANY_JSON
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "custom"]) | TEXT,
                              "function": st.fixed_dictionaries({"name": TEXT}, optional={
                                  "parameters": SCHEMA, "strict": st.booleans() | ANY_JSON}) | ANY_JSON})
PROMPTS = TEXT | st.lists(TEXT | st.lists(st.integers(-5, 100_000), max_size=4), max_size=3)


def _or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | ANY_JSON


COMMON_OPTIONAL = {
    "stream": _or_junk(st.booleans()),
    "stream_options": _or_junk(st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})),
    "user": _or_junk(TEXT),
    "metadata": _or_junk(st.dictionaries(st.sampled_from(
        ["x-sluicegate-episode", "X-Sluicegate-Tags", "x-sluicegate-retrieval-ids", "session", "app"]) | TEXT,
        ANY_JSON, max_size=4)),
    "temperature": _or_junk(st.floats(-1, 3) | BIG_NUMBERS),
    "n": _or_junk(st.integers(-1, 4) | BIG_NUMBERS),
    "max_tokens": _or_junk(st.integers(-1, 64) | BIG_NUMBERS),
    "seed": _or_junk(st.integers() | BIG_NUMBERS),
    "stop": _or_junk(TEXT | st.lists(TEXT, max_size=3)),
}
CHAT_OPTIONAL = {
    "tools": _or_junk(st.lists(TOOL, max_size=3)),
    "tool_choice": _or_junk(st.sampled_from(["auto", "none", "required"])
                            | st.fixed_dictionaries({"type": st.just("function"),
                                                     "function": st.fixed_dictionaries({"name": TEXT})})),
    "functions": ANY_JSON,
    "function_call": ANY_JSON,
    "response_format": _or_junk(st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema"]) | TEXT},
        optional={"json_schema": st.fixed_dictionaries({"name": TEXT}, optional={"schema": SCHEMA})})),
    "parallel_tool_calls": ANY_JSON,
    "logit_bias": ANY_JSON,
}
EMBEDDING_OPTIONAL = {"user": _or_junk(TEXT), "metadata": COMMON_OPTIONAL["metadata"],
                      "dimensions": _or_junk(st.integers(-1, 4096)), "encoding_format": _or_junk(TEXT)}
MAIN = {"chat.completions": MESSAGES.filter(bool) | st.just([{"role": "user", "content": "hi"}]),
        "completions": PROMPTS, "embeddings": PROMPTS}
OPTIONAL = {"chat.completions": {**COMMON_OPTIONAL, **CHAT_OPTIONAL}, "completions": COMMON_OPTIONAL,
            "embeddings": EMBEDDING_OPTIONAL}
MODEL = st.sampled_from(ROUTES) | TEXT

HEADER_VALUE = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7f))
HEADERS = st.dictionaries(st.sampled_from(["x-sluicegate-correlation-id", "x-request-id", "x-sluicegate-episode",
                                           "x-sluicegate-user", "x-sluicegate-template",
                                           "x-sluicegate-retrieval-ids", "x-sluicegate-tags"]),
                          HEADER_VALUE, max_size=4)


def bodies(endpoint: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly well-formed (so the upstream path runs), with every field possibly junk or missing."""
    main = MAIN_FIELD[endpoint]
    shaped = st.fixed_dictionaries({"model": st.sampled_from(ROUTES), main: MAIN[endpoint]},
                                   optional=OPTIONAL[endpoint])
    loose = st.fixed_dictionaries({}, optional={"model": _or_junk(MODEL), main: _or_junk(MAIN[endpoint]),
                                                **OPTIONAL[endpoint]})
    extra = st.dictionaries(TEXT, ANY_JSON, max_size=3)
    return st.tuples(shaped | loose, extra).map(lambda t: {**t[1], **t[0]})


# --------------------------------------------------------------------------- oracle


def expected_field_error(endpoint: str, body: Any) -> str | None:
    """The field a 400 must name for this body (the gateway's documented checks), or None."""
    if not isinstance(body, dict):
        return None
    for field in ("model", MAIN_FIELD[endpoint]):
        value = body.get(field)
        kinds: tuple[type, ...] = (str,) if field == "model" else (list,) if field == "messages" else (str, list)
        if value is None or not isinstance(value, kinds):
            return field
    if endpoint == "chat.completions" and not body["messages"]:
        return "messages"
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return "stream"
    return None


def _depth(value: Any) -> int:
    """Nesting depth of containers (iterative: bodies may be nested past Python's recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def check(endpoint: str, response: Any, body: Any = None) -> None:
    status = response.status_code
    assert status < 500, f"gateway {status} for {str(body)[:300]!r}: {response.text[:500]}"
    if status < 300:
        if "text/event-stream" in response.headers.get("content-type", ""):
            assert "data: [DONE]" in response.text, response.text[-300:]
            assert 'data: {"error"' not in response.text, response.text[-500:]
        else:
            assert isinstance(response.json(), dict)
        return
    problems = error_problems(response)
    assert not problems, f"{status} for {str(body)[:300]!r}: {problems}"
    error = response.json()["error"]
    field = expected_field_error(endpoint, body)
    if field is not None:
        assert status == 400 and error["param"] == field, (field, status, error)
    if status == 400 and error.get("code") in ("missing_required_parameter", "invalid_type", "invalid_value"):
        assert error["param"], f"a field error names no param: {error}"
    if status == 404 and error.get("code") == "model_not_found":
        assert error["param"] == "model", error


def post_json(client: TestClient, endpoint: str, body: Any, headers: dict[str, Any] | None = None) -> Any:
    # the stdlib encoder: it writes integers of any size, which orjson refuses to
    content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
    return client.post(ENDPOINTS[endpoint], content=content,
                       headers={"content-type": "application/json", **(headers or {})})


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_arbitrary_json_bodies(client: TestClient, endpoint: str) -> None:
    @fuzz(150)
    @given(body=bodies(endpoint), headers=HEADERS)
    def run(body: dict[str, Any], headers: dict[str, bytes]) -> None:
        check(endpoint, post_json(client, endpoint, body, headers), body)

    run()


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_any_json_value_as_the_body(client: TestClient, endpoint: str) -> None:
    @fuzz(50)
    @given(body=ANY_JSON)
    def run(body: Any) -> None:
        check(endpoint, post_json(client, endpoint, body), body)

    run()


CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain", "",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/octet-stream", "text/event-stream"])


def _mangled(raw: bytes, cut: int, junk: bytes) -> bytes:
    cut = cut % (len(raw) + 1)
    return raw[:cut] + junk + raw[cut:]


VALID_RAW = st.sampled_from([b'{"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}',
                             b'{"model": "support-bot", "prompt": "hi"}', b'{"model": "support-bot", "input": "hi"}'])
RAW_BODIES = (st.binary(max_size=200)
              | st.builds(_mangled, VALID_RAW, st.integers(0, 200), st.binary(min_size=1, max_size=8))
              | st.builds(lambda raw, n: raw[:n], VALID_RAW, st.integers(0, 80))
              | st.sampled_from([b"", b" ", b"null", b"[]", b'"x"', b"1e400", b"NaN", b'{"model": NaN}',
                                 b'{"model": "support-bot", "input": "\xff\xfe"}',
                                 b'{"model": "support-bot", "input": "\\ud800"}',
                                 b'\xef\xbb\xbf{"model": "support-bot", "input": "bom"}',
                                 b'{"model": "support-bot", "input": "a", "input": 5}',
                                 b'{"model": "support-bot", "prompt": "x", "max_tokens": 1e400}',
                                 b'{"model": "support-bot", "prompt": "x", "seed": 123456789012345678901234567890}']))


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_non_json_bytes_and_content_types(client: TestClient, endpoint: str) -> None:
    @fuzz(60)
    @given(raw=RAW_BODIES, content_type=CONTENT_TYPES)
    def run(raw: bytes, content_type: str) -> None:
        response = client.post(ENDPOINTS[endpoint], content=raw, headers={"content-type": content_type})
        if content_type.partition(";")[0].strip() != "application/json":
            # what another site's form can send (or no type): refused before the endpoint reads it (CSRF)
            assert response.status_code == 415, (content_type, response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == "unsupported_media_type"
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
            assert response.status_code == 400, (raw, response.status_code, response.text[:300])
        check(endpoint, response, body)

    run()


def _nest(depth: int, kind: str, leaf: str = '"x"') -> str:
    return ("[" * depth + leaf + "]" * depth) if kind == "list" else ('{"a": ' * depth + leaf + "}" * depth)


WHERE = {"chat.completions": ['{"model": "%s", "messages": [{"role": "user", "content": NEST}]}',
                              ('{"model": "%s", "messages": [{"role": "user", "content": "x"}], "tools": '
                               '[{"type": "function", "function": {"name": "f", "parameters": NEST}}]}'),
                              '{"model": "%s", "messages": [{"role": "user", "content": "x"}], "metadata": NEST}'],
         "completions": ['{"model": "%s", "prompt": NEST}', '{"model": "%s", "prompt": "x", "stop": NEST}'],
         "embeddings": ['{"model": "%s", "input": NEST}', '{"model": "%s", "input": "x", "extra": NEST}']}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_deep_nesting(client: TestClient, endpoint: str) -> None:
    """Nesting up to the parser's limit (1024) and past it: a 400 or an answer, never a crash."""

    @fuzz(40)
    @given(template=st.sampled_from(WHERE[endpoint]), route=st.sampled_from(ROUTES),
           depth=st.integers(1, ORJSON_DUMPS_MAX_DEPTH + 20) | st.integers(1020, 1100),
           kind=st.sampled_from(["list", "dict"]))
    def run(template: str, route: str, depth: int, kind: str) -> None:
        raw = (template % route).replace("NEST", _nest(depth, kind)).encode()
        response = client.post(ENDPOINTS[endpoint], content=raw, headers={"content-type": "application/json"})
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert response.status_code == 400, response.text[:300]
            body = None
        check(endpoint, response, body)

    run()


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_bodies_around_the_size_limit(client: TestClient, endpoint: str) -> None:
    """Just under `server.max_body_bytes` is served; over it is a 413 `request_too_large` — whether
    the client declares its length or streams the body in chunks."""

    @fuzz(25)
    @given(size=st.integers(MAX_BODY_BYTES - 2_000, MAX_BODY_BYTES + 2_000), chunked=st.booleans(),
           char=st.sampled_from(["a", "\u00e9", "\U0001f600"]))
    def run(size: int, chunked: bool, char: str) -> None:
        head, tail = {"chat.completions": (b'{"model":"support-bot","messages":[{"role":"user","content":"', b'"}]}'),
                      "completions": (b'{"model":"support-bot","prompt":"', b'"}'),
                      "embeddings": (b'{"model":"support-bot","input":"', b'"}')}[endpoint]
        room = max(0, size - len(head) - len(tail))
        raw = head + (char * (room // len(char.encode()))).encode() + tail
        content: Any = iter([raw[i:i + 4096] for i in range(0, len(raw), 4096)]) if chunked else raw
        response = client.post(ENDPOINTS[endpoint], content=content, headers={"content-type": "application/json"})
        if len(raw) > MAX_BODY_BYTES:
            assert response.status_code == 413, (len(raw), response.status_code, response.text[:200])
            assert response.json()["error"]["code"] == "request_too_large"
        check(endpoint, response, orjson.loads(raw) if len(raw) <= MAX_BODY_BYTES else None)

    run()


# --------------------------------------------------------------------------- bugs the fuzzing found (fixed)

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("endpoint", ["chat.completions", "completions"])
def test_stream_options_not_an_object_is_a_400(client: TestClient, endpoint: str) -> None:
    body = {"model": "support-bot", "stream": True, "stream_options": "yes",
            **(CHAT if endpoint == "chat.completions" else {"prompt": "hi"})}
    response = post_json(client, endpoint, body)
    assert response.status_code < 500, response.text[:300]  # a 400 naming stream_options, or ignoring it
    if response.status_code == 400:
        assert response.json()["error"]["param"] == "stream_options"


def test_metadata_not_an_object_with_a_metadata_sticky_key_is_a_400(client: TestClient) -> None:
    response = post_json(client, "chat.completions", {"model": "guarded", "metadata": [1], **CHAT})
    assert response.status_code < 500, response.text[:300]  # a 400 naming metadata, or no sticky key from it
    if response.status_code == 400:
        assert response.json()["error"]["param"] == "metadata"


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_body_nested_deeper_than_the_upstream_encoder_allows_is_a_400(client: TestClient, endpoint: str) -> None:
    nest = _nest(300, "list")
    raw = {"chat.completions": '{"model": "support-bot", "messages": [{"role": "user", "content": %s}]}',
           "completions": '{"model": "support-bot", "prompt": %s}',
           "embeddings": '{"model": "support-bot", "input": %s}'}[endpoint] % nest
    response = client.post(ENDPOINTS[endpoint], content=raw.encode(), headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert error_problems(response) == []
