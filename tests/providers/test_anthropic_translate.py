"""Table-driven tests of the OpenAI <-> Anthropic Messages translation: exact bodies, both directions."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.providers._anthropic_translate import (
    DROPPED_PARAMS,
    UNSUPPORTED_PARAMS,
    MalformedResponse,
    StreamError,
    StreamTranslator,
    Translation,
    TranslationError,
    UnsupportedParameter,
    error_to_openai,
    from_anthropic,
    to_anthropic,
)
from tests._spec import SPEC_PATH

M = "claude-sonnet-4-5"
NOW = 1_700_000_000.75
CREATED = 1_700_000_000

# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def check_spec(spec: dict[str, Any], name: str, doc: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(doc)


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def req(**kw: Any) -> dict[str, Any]:
    """An OpenAI request; `messages` defaults to one user 'hi'."""
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **kw}


def anth(**kw: Any) -> dict[str, Any]:
    """The Anthropic body expected for `req(...)` with the same overrides translated."""
    return {"model": M, "max_tokens": 4096, "messages": [user(text("hi"))], **kw}


def fn_tool(name: str, description: str | None = None, parameters: Any = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [fn_tool("get_weather", "Weather for a city", WEATHER_SCHEMA), fn_tool("ping")]
ANTH_TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_SCHEMA},
              {"name": "ping", "input_schema": {"type": "object", "properties": {}}}]
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
                 "required": ["answer", "score"], "additionalProperties": False}
RF = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": ANSWER_SCHEMA, "strict": True}}
RF_TOOL = {"name": "verdict", "description": "Give the final answer as this tool's input.",
           "input_schema": ANSWER_SCHEMA}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- request translation: (id, OpenAI body, expected Anthropic body, expected Translation, kwargs) -------

REQUEST_CASES: list[tuple[str, dict[str, Any], dict[str, Any], Translation, dict[str, Any]]] = [
    ("plain_user", req(), anth(), Translation(), {}),
    ("system_and_multi_turn",
     req(messages=[{"role": "system", "content": "Be terse."},
                   {"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4"},
                   {"role": "user", "content": "3+3?"}]),
     anth(system="Be terse.", messages=[user(text("2+2?")), assistant(text("4")), user(text("3+3?"))]),
     Translation(), {}),
    ("system_developer_parts_and_midway_system_hoisted_and_joined",
     req(messages=[{"role": "system", "content": [text("Rule one."), text("Rule two.")]},
                   {"role": "developer", "content": "Dev note."},
                   {"role": "user", "content": "q"},
                   {"role": "system", "content": "Late rule."},
                   {"role": "assistant", "content": "a"}]),
     anth(system="Rule one.\n\nRule two.\n\nDev note.\n\nLate rule.",
          messages=[user(text("q")), assistant(text("a"))]),
     Translation(), {}),
    ("consecutive_user_messages_merged",
     req(messages=[{"role": "user", "content": "one"}, {"role": "user", "content": [text("two"), text("three")]},
                   {"role": "assistant", "content": "ok"}]),
     anth(messages=[user(text("one"), text("two"), text("three")), assistant(text("ok"))]), Translation(), {}),
    ("consecutive_assistant_messages_merged",
     req(messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "part 1"},
                   {"role": "assistant", "content": "part 2"}, {"role": "user", "content": "more"}]),
     anth(messages=[user(text("go")), assistant(text("part 1"), text("part 2")), user(text("more"))]),
     Translation(), {}),
    ("empty_assistant_dropped_then_users_merged_names_dropped",
     req(messages=[{"role": "user", "content": "a", "name": "alice"}, {"role": "assistant", "content": ""},
                   {"role": "user", "content": "b"}]),
     anth(messages=[user(text("a"), text("b"))]), Translation(), {}),
    ("image_url_detail_dropped",
     req(messages=[{"role": "user", "content": [
         text("What is this?"),
         {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}]}]),
     anth(messages=[user(text("What is this?"),
                         {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})]),
     Translation(), {}),
    ("image_base64_data_url",
     req(messages=[{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}, text("Describe.")]}]),
     anth(messages=[user({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                         text("Describe."))]),
     Translation(), {}),
    ("image_base64_media_type_lowercased",
     req(messages=[{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "data:image/JPEG;base64,/9j/AA=="}}]}]),
     anth(messages=[user({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                       "data": "/9j/AA=="}})]),
     Translation(), {}),
    ("max_tokens", req(max_tokens=100), anth(max_tokens=100), Translation(), {}),
    ("max_completion_tokens_wins", req(max_tokens=100, max_completion_tokens=50), anth(max_tokens=50),
     Translation(), {}),
    ("max_tokens_default_from_argument", req(), anth(max_tokens=1024), Translation(), {"default_max_tokens": 1024}),
    ("stop_string", req(stop="END"), anth(stop_sequences=["END"]), Translation(), {}),
    ("stop_list_empty_dropped", req(stop=["\n\nHuman:", "", "###"]), anth(stop_sequences=["\n\nHuman:", "###"]),
     Translation(), {}),
    ("temperature_zero_and_top_p", req(temperature=0, top_p=0.9), anth(temperature=0, top_p=0.9), Translation(), {}),
    ("temperature_upper_bound", req(temperature=1.0), anth(temperature=1.0), Translation(), {}),
    ("tools_no_tool_choice", req(tools=TOOLS), anth(tools=ANTH_TOOLS), Translation(), {}),
    ("tool_choice_auto", req(tools=TOOLS, tool_choice="auto"), anth(tools=ANTH_TOOLS, tool_choice={"type": "auto"}),
     Translation(), {}),
    ("tool_choice_none", req(tools=TOOLS, tool_choice="none"), anth(tools=ANTH_TOOLS, tool_choice={"type": "none"}),
     Translation(), {}),
    ("tool_choice_required", req(tools=TOOLS, tool_choice="required"),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "any"}), Translation(), {}),
    ("tool_choice_named", req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "ping"}}),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "tool", "name": "ping"}), Translation(), {}),
    ("parallel_tool_calls_false_without_choice", req(tools=TOOLS, parallel_tool_calls=False),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True}), Translation(), {}),
    ("parallel_tool_calls_false_required", req(tools=TOOLS, tool_choice="required", parallel_tool_calls=False),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "any", "disable_parallel_tool_use": True}), Translation(), {}),
    ("parallel_tool_calls_false_named",
     req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
     Translation(), {}),
    ("parallel_tool_calls_false_with_none_choice", req(tools=TOOLS, tool_choice="none", parallel_tool_calls=False),
     anth(tools=ANTH_TOOLS, tool_choice={"type": "none"}), Translation(), {}),
    ("parallel_tool_calls_true_is_default", req(tools=TOOLS, parallel_tool_calls=True), anth(tools=ANTH_TOOLS),
     Translation(), {}),
    ("tool_choice_and_parallel_without_tools_dropped", req(tool_choice="auto", parallel_tool_calls=False), anth(),
     Translation(), {}),
    ("assistant_tool_calls_and_merged_tool_results",
     req(tools=TOOLS, messages=[
         {"role": "user", "content": "Weather in Paris and Oslo?"},
         {"role": "assistant", "content": "Checking.", "tool_calls": [
             call("call_1", "get_weather", '{"city": "Paris"}'), call("call_2", "get_weather", '{"city":"Oslo"}'),
             call("call_3", "ping", "")]},
         {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
         {"role": "tool", "tool_call_id": "call_2", "content": [text("9C"), text("rain")]},
         {"role": "tool", "tool_call_id": "call_3", "content": ""},
         {"role": "user", "content": "Thanks, summarize."}]),
     anth(tools=ANTH_TOOLS, messages=[
         user(text("Weather in Paris and Oslo?")),
         assistant(text("Checking."),
                   {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                   {"type": "tool_use", "id": "call_3", "name": "ping", "input": {}}),
         user({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
              {"type": "tool_result", "tool_use_id": "call_2", "content": [text("9C"), text("rain")]},
              {"type": "tool_result", "tool_use_id": "call_3"},
              text("Thanks, summarize."))]),
     Translation(), {}),
    ("tool_result_moved_before_user_text_in_merged_turn",
     req(tools=TOOLS, messages=[
         {"role": "user", "content": "ping it"},
         {"role": "assistant", "content": None, "tool_calls": [call("c9", "ping", "{}")]},
         {"role": "user", "content": "(also: be quick)"},
         {"role": "tool", "tool_call_id": "c9", "content": "pong"}]),
     anth(tools=ANTH_TOOLS, messages=[
         user(text("ping it")),
         assistant({"type": "tool_use", "id": "c9", "name": "ping", "input": {}}),
         user({"type": "tool_result", "tool_use_id": "c9", "content": "pong"}, text("(also: be quick)"))]),
     Translation(), {}),
    ("assistant_refusal_part_becomes_text",
     req(messages=[{"role": "user", "content": "x"},
                   {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                   {"role": "user", "content": "ok"}]),
     anth(messages=[user(text("x")), assistant(text("I can't.")), user(text("ok"))]), Translation(), {}),
    ("structured_output_forced_tool", req(response_format=RF),
     anth(tools=[RF_TOOL], tool_choice={"type": "tool", "name": "verdict", "disable_parallel_tool_use": True}),
     Translation(structured_output_tool="verdict"), {}),
    ("structured_output_description_kept",
     req(response_format={"type": "json_schema", "json_schema": {"name": "v2", "description": "The verdict.",
                                                                  "schema": ANSWER_SCHEMA}}),
     anth(tools=[{"name": "v2", "description": "The verdict.", "input_schema": ANSWER_SCHEMA}],
          tool_choice={"type": "tool", "name": "v2", "disable_parallel_tool_use": True}),
     Translation(structured_output_tool="v2"), {}),
    ("structured_output_with_tools_any", req(tools=TOOLS, response_format=RF),
     anth(tools=[*ANTH_TOOLS, RF_TOOL], tool_choice={"type": "any"}), Translation(structured_output_tool="verdict"),
     {}),
    ("structured_output_with_tools_choice_none_forces_schema_tool",
     req(tools=TOOLS, tool_choice="none", response_format=RF),
     anth(tools=[*ANTH_TOOLS, RF_TOOL], tool_choice={"type": "tool", "name": "verdict",
                                                     "disable_parallel_tool_use": True}),
     Translation(structured_output_tool="verdict"), {}),
    ("response_format_text_ignored", req(response_format={"type": "text"}), anth(), Translation(), {}),
    ("stream_with_usage", req(stream=True, stream_options={"include_usage": True}), anth(stream=True),
     Translation(include_usage=True, stream=True), {}),
    ("stream_without_usage", req(stream=True), anth(stream=True), Translation(stream=True), {}),
    ("stream_false_omitted", req(stream=False), anth(), Translation(), {}),
    ("user_to_metadata_and_dropped_params",
     req(user="u-42", metadata={"team": "a"}, store=True, service_tier="auto", prompt_cache_key="k"),
     anth(metadata={"user_id": "u-42"}), Translation(), {}),
    ("unsupported_params_at_default_values_accepted",
     req(n=1, logprobs=False, top_logprobs=0, logit_bias={}, presence_penalty=0.0, frequency_penalty=0,
         modalities=["text"], seed=None, audio=None, prediction=None),
     anth(), Translation(), {}),
]


@pytest.mark.parametrize(("body", "expected", "translation", "kwargs"),
                         [c[1:] for c in REQUEST_CASES], ids=[c[0] for c in REQUEST_CASES])
def test_to_anthropic(body: dict[str, Any], expected: dict[str, Any], translation: Translation,
                      kwargs: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    out, got_translation = to_anthropic(body, model=M, **kwargs)
    assert out == expected
    assert got_translation == translation
    assert body == before  # the client's body is not modified
    assert json.loads(json.dumps(out)) == out  # plain JSON, nothing else


def test_request_table_is_large_enough() -> None:
    assert len(REQUEST_CASES) >= 30
    assert len({c[0] for c in REQUEST_CASES}) == len(REQUEST_CASES)


# --- request errors: (id, OpenAI body, exception class, param, words in the message) --------

BAD_CALL = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [call("call_ok", "ping", "{}"),
                                                                   call("call_bad", "get_weather", '{"city": ')]}]

ERROR_CASES: list[tuple[str, dict[str, Any], type[Exception], str | None, list[str]]] = [
    ("temperature_above_1", req(temperature=1.5), UnsupportedParameter, "temperature", ["1.5", "0 to 1"]),
    ("temperature_2", req(temperature=2), UnsupportedParameter, "temperature", ["0 to 1"]),
    ("temperature_negative", req(temperature=-0.1), UnsupportedParameter, "temperature", ["0 to 1"]),
    ("temperature_not_number", req(temperature="hot"), TranslationError, "temperature", ["number"]),
    ("top_p_out_of_range", req(top_p=1.2), TranslationError, "top_p", ["0 to 1"]),
    ("max_tokens_zero", req(max_tokens=0), TranslationError, "max_tokens", ["positive"]),
    ("unknown_param", req(frobnicate=True), UnsupportedParameter, "frobnicate", ["frobnicate"]),
    ("json_object", req(response_format={"type": "json_object"}), UnsupportedParameter, "response_format",
     ["json_object", "json_schema"]),
    ("response_format_unknown_type", req(response_format={"type": "xml"}), UnsupportedParameter, "response_format",
     ["xml"]),
    ("invalid_tool_call_arguments", req(tools=TOOLS, messages=BAD_CALL), TranslationError,
     "messages[1].tool_calls[1].function.arguments", ["call_bad", "get_weather", "not valid JSON"]),
    ("tool_call_arguments_not_object",
     req(tools=TOOLS, messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
         call("call_arr", "ping", "[1, 2]")]}]),
     TranslationError, "messages[1].tool_calls[0].function.arguments", ["call_arr", "JSON object"]),
    ("tool_message_without_id", req(messages=[{"role": "tool", "content": "x"}]), TranslationError,
     "messages[0].tool_call_id", ["tool_call_id"]),
    ("input_audio_part",
     req(messages=[{"role": "user", "content": [{"type": "input_audio",
                                                  "input_audio": {"data": "AA==", "format": "wav"}}]}]),
     UnsupportedParameter, "messages[0].content[0]", ["input_audio"]),
    ("file_part", req(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]),
     UnsupportedParameter, "messages[0].content[0]", ["file"]),
    ("bmp_data_url",
     req(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:image/bmp;base64,AA"}}]}]),
     UnsupportedParameter, "messages[0].content[0]", ["image/bmp"]),
    ("data_url_not_base64",
     req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]),
     TranslationError, "messages[0].content[0]", ["base64"]),
    ("ftp_image_url",
     req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
     TranslationError, "messages[0].content[0]", ["http"]),
    ("tool_choice_required_without_tools", req(tool_choice="required"), TranslationError, "tool_choice", ["no tools"]),
    ("tool_choice_unknown_function", req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}}),
     TranslationError, "tool_choice", ["'x'"]),
    ("tool_choice_allowed_tools", req(tools=TOOLS, tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
     UnsupportedParameter, "tool_choice", ["allowed_tools"]),
    ("custom_tool_type", req(tools=[{"type": "custom", "custom": {"name": "c"}}]), UnsupportedParameter, "tools[0]",
     ["custom"]),
    ("structured_name_collides_with_tool",
     req(tools=TOOLS, response_format={"type": "json_schema", "json_schema": {"name": "ping", "schema": {}}}),
     TranslationError, "response_format", ["ping"]),
    ("structured_without_name", req(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     TranslationError, "response_format", ["name"]),
    ("only_system_messages", req(messages=[{"role": "system", "content": "s"}]), TranslationError, "messages",
     ["user or assistant"]),
    ("empty_messages", req(messages=[]), TranslationError, "messages", ["non-empty"]),
    ("function_role", req(messages=[{"role": "function", "name": "f", "content": "x"}]), UnsupportedParameter,
     "messages[0].role", ["deprecated"]),
    ("unknown_role", req(messages=[{"role": "robot", "content": "x"}]), TranslationError, "messages[0].role",
     ["robot"]),
    ("system_image_part",
     req(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://a/b"}}]},
                   {"role": "user", "content": "x"}]),
     TranslationError, "messages[0].content[0]", ["text parts"]),
]

# every parameter with no Anthropic equivalent, with a value that uses it
UNSUPPORTED_VALUES: dict[str, Any] = {
    "n": 2, "logprobs": True, "top_logprobs": 3, "logit_bias": {"50256": -100}, "presence_penalty": 0.5,
    "frequency_penalty": -0.5, "seed": 42, "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"], "prediction": {"type": "content", "content": "x"},
    "reasoning_effort": "high", "verbosity": "low", "web_search_options": {},
    "functions": [{"name": "f"}], "function_call": "auto",
}


@pytest.mark.parametrize(("body", "exc", "param", "words"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_to_anthropic_errors(body: dict[str, Any], exc: type[Exception], param: str | None,
                             words: list[str]) -> None:
    with pytest.raises(exc) as info:
        to_anthropic(body, model=M)
    assert isinstance(info.value, ValueError)
    assert getattr(info.value, "param") == param
    for word in words:
        assert word in str(info.value)


def test_unsupported_table_covers_every_listed_param() -> None:
    assert set(UNSUPPORTED_VALUES) == set(UNSUPPORTED_PARAMS)


@pytest.mark.parametrize("param", sorted(UNSUPPORTED_VALUES))
def test_unsupported_param_raises_naming_it(param: str) -> None:
    with pytest.raises(UnsupportedParameter) as info:
        to_anthropic(req(**{param: UNSUPPORTED_VALUES[param]}), model=M)
    assert info.value.param == param
    assert f"'{param}'" in str(info.value)
    assert "Anthropic" in str(info.value)


def test_logprobs_false_is_not_top_logprobs_zero() -> None:
    # False must not pass for 0 (nor True for 1): booleans only match booleans
    with pytest.raises(UnsupportedParameter):
        to_anthropic(req(n=True), model=M)


def test_dropped_params_are_documented() -> None:
    assert {"metadata", "store", "service_tier", "stream_options", "prompt_cache_key"} <= set(DROPPED_PARAMS)
    for param in ("metadata", "store", "service_tier", "prompt_cache_key"):
        value = {"metadata": {"a": "b"}, "store": True, "service_tier": "flex", "prompt_cache_key": "k"}[param]
        out, _ = to_anthropic(req(**{param: value}), model=M)
        assert out == anth(), param


def test_null_params_count_as_absent() -> None:
    out, tr = to_anthropic(req(temperature=None, stop=None, tools=None, tool_choice=None, n=None, seed=None,
                               stream_options=None, response_format=None, user=None), model=M)
    assert out == anth()
    assert tr == Translation()


# --- responses: (id, Anthropic message, Translation, expected message, finish_reason) -------

def amsg(content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {"id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


def tool_use(id_: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def omsg(content: str | None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls is not None:
        m["tool_calls"] = tool_calls
    return m


def ocall(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


SO = Translation(structured_output_tool="verdict")
VERDICT = {"answer": "yes", "score": 0.9}
VERDICT_JSON = '{"answer": "yes", "score": 0.9}'

RESPONSE_CASES: list[tuple[str, dict[str, Any], Translation, dict[str, Any], str]] = [
    ("end_turn", amsg([text("Hello!")]), Translation(), omsg("Hello!"), "stop"),
    ("stop_sequence", amsg([text("Hel")], "stop_sequence"), Translation(), omsg("Hel"), "stop"),
    ("max_tokens", amsg([text("Long")], "max_tokens"), Translation(), omsg("Long"), "length"),
    ("context_window_exceeded", amsg([text("x")], "model_context_window_exceeded"), Translation(), omsg("x"),
     "length"),
    ("refusal", amsg([text("I can't help with that.")], "refusal"), Translation(),
     omsg("I can't help with that."), "content_filter"),
    ("pause_turn", amsg([text("Searching")], "pause_turn"), Translation(), omsg("Searching"), "stop"),
    ("unknown_stop_reason", amsg([text("x")], "brand_new_reason"), Translation(), omsg("x"), "stop"),
    ("null_stop_reason", amsg([text("x")], None), Translation(), omsg("x"), "stop"),
    ("empty_content", amsg([]), Translation(), omsg(""), "stop"),
    ("text_blocks_joined_thinking_dropped",
     amsg([{"type": "thinking", "thinking": "hmm", "signature": "sig"}, text("Paris is "), text("the capital.")]),
     Translation(), omsg("Paris is the capital."), "stop"),
    ("tool_use_with_text",
     amsg([text("Let me check."), tool_use("toolu_1", "get_weather", {"city": "Paris"}),
           tool_use("toolu_2", "ping", {})], "tool_use"),
     Translation(),
     omsg("Let me check.", [ocall("toolu_1", "get_weather", '{"city": "Paris"}'), ocall("toolu_2", "ping", "{}")]),
     "tool_calls"),
    ("tool_use_only_content_null", amsg([tool_use("toolu_9", "get_weather", {"city": "Zürich"})], "tool_use"),
     Translation(), omsg(None, [ocall("toolu_9", "get_weather", '{"city": "Zürich"}')]), "tool_calls"),
    ("structured_tool_becomes_content", amsg([tool_use("toolu_s", "verdict", VERDICT)], "tool_use"), SO,
     omsg(VERDICT_JSON), "stop"),
    ("structured_tool_not_special_without_translation", amsg([tool_use("toolu_s", "verdict", VERDICT)], "tool_use"),
     Translation(), omsg(None, [ocall("toolu_s", "verdict", VERDICT_JSON)]), "tool_calls"),
    ("structured_and_user_tool", amsg([tool_use("toolu_1", "ping", {}), tool_use("toolu_s", "verdict", VERDICT)],
                                      "tool_use"), SO, omsg(VERDICT_JSON, [ocall("toolu_1", "ping", "{}")]),
     "tool_calls"),
    ("structured_truncated", amsg([tool_use("toolu_s", "verdict", {"answer": "ye"})], "max_tokens"), SO,
     omsg('{"answer": "ye"}'), "length"),
]


@pytest.mark.parametrize(("resp", "translation", "message", "finish"), [c[1:] for c in RESPONSE_CASES],
                         ids=[c[0] for c in RESPONSE_CASES])
def test_from_anthropic(spec: dict[str, Any], resp: dict[str, Any], translation: Translation,
                        message: dict[str, Any], finish: str) -> None:
    out = from_anthropic(resp, request_model=M, translation=translation, clock=lambda: NOW)
    assert out == {
        "id": "chatcmpl-msg_01ABC", "object": "chat.completion", "created": CREATED,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}},
    }
    ChatCompletion.model_validate(out)
    check_spec(spec, "CreateChatCompletionResponse", out)


def test_response_table_is_large_enough() -> None:
    assert len(REQUEST_CASES) + len(RESPONSE_CASES) >= 30
    # every stop reason Anthropic documents has a case
    reasons = {c[1]["stop_reason"] for c in RESPONSE_CASES}
    assert {"end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal", "pause_turn",
            "model_context_window_exceeded"} <= reasons


def test_usage_with_cache_tokens(spec: dict[str, Any]) -> None:
    resp = amsg([text("ok")], cache_read_input_tokens=1000, cache_creation_input_tokens=200)
    resp["usage"]["service_tier"] = "standard"
    out = from_anthropic(resp, request_model=M, translation=Translation(), clock=lambda: NOW)
    assert out["usage"] == {"prompt_tokens": 1210, "completion_tokens": 5, "total_tokens": 1215,
                            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 200}}
    parsed = ChatCompletion.model_validate(out)
    assert parsed.usage is not None and parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 1000
    check_spec(spec, "CreateChatCompletionResponse", out)


def test_missing_model_falls_back_to_request_model() -> None:
    resp = amsg([text("x")])
    del resp["model"]
    out = from_anthropic(resp, request_model=M, translation=Translation(), clock=lambda: NOW)
    assert out["model"] == M


def test_created_defaults_to_the_clock() -> None:
    import time
    before = int(time.time())
    out = from_anthropic(amsg([text("x")]), request_model=M, translation=Translation())
    assert before <= out["created"] <= int(time.time())


@pytest.mark.parametrize("resp", [{"type": "error"}, {"id": "msg_1", "content": "text"},
                                  {"id": "msg_1", "content": ["not a block"]}])
def test_malformed_response(resp: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        from_anthropic(resp, request_model=M, translation=Translation())


# --- errors -------------------------------------------------------------------------------

def aerr(type_: str, message: str, request_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode()


ERROR_BODY_CASES: list[tuple[str, int, bytes, int, dict[str, Any]]] = [
    ("overloaded_529_to_503", 529, aerr("overloaded_error", "Overloaded"), 503,
     {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}),
    ("rate_limit", 429, aerr("rate_limit_error", "Slow down"), 429,
     {"message": "Slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_error"}),
    ("invalid_request_with_request_id", 400, aerr("invalid_request_error", "max_tokens: too big", "req_011"), 400,
     {"message": "max_tokens: too big (anthropic request_id req_011)", "type": "invalid_request_error",
      "param": None, "code": "invalid_request_error"}),
    ("authentication", 401, aerr("authentication_error", "invalid x-api-key"), 401,
     {"message": "invalid x-api-key", "type": "authentication_error", "param": None, "code": "authentication_error"}),
    ("not_found", 404, aerr("not_found_error", "model: claude-nope"), 404,
     {"message": "model: claude-nope", "type": "invalid_request_error", "param": None, "code": "not_found_error"}),
    ("api_error", 500, aerr("api_error", "Internal"), 500,
     {"message": "Internal", "type": "server_error", "param": None, "code": "api_error"}),
    ("unknown_type_4xx", 409, aerr("conflict_error", "busy"), 409,
     {"message": "busy", "type": "invalid_request_error", "param": None, "code": "conflict_error"}),
    ("not_json_502", 502, b"<html>Bad gateway</html>", 502,
     {"message": "Anthropic returned status 502: an HTML page of 24 bytes (not shown)", "type": "server_error",
      "param": None,
      "code": None}),
    ("empty_body_529", 529, b"", 503,
     {"message": "Anthropic returned status 529", "type": "server_error", "param": None, "code": None}),
]


@pytest.mark.parametrize(("status", "body", "out_status", "error"), [c[1:] for c in ERROR_BODY_CASES],
                         ids=[c[0] for c in ERROR_BODY_CASES])
def test_error_to_openai(spec: dict[str, Any], status: int, body: bytes, out_status: int,
                         error: dict[str, Any]) -> None:
    got_status, got = error_to_openai(status, body)
    assert (got_status, got) == (out_status, {"error": error})
    check_spec(spec, "ErrorResponse", got)


# --- streams ------------------------------------------------------------------------------

def ev(type_: str, **data: Any) -> tuple[str, dict[str, Any]]:
    return type_, {"type": type_, **data}


def message_start(**usage: int) -> tuple[str, dict[str, Any]]:
    return ev("message_start", message={
        "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1, **usage}})


def fragments(s: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(s)]
    return [s[a:b] for a, b in zip(bounds, bounds[1:])]


def text_block(index: int, *pieces: str) -> list[tuple[str, dict[str, Any]]]:
    return [ev("content_block_start", index=index, content_block={"type": "text", "text": ""}),
            *[ev("content_block_delta", index=index, delta={"type": "text_delta", "text": p}) for p in pieces],
            ev("content_block_stop", index=index)]


def tool_block(index: int, id_: str, name: str, input_: dict[str, Any],
               cuts: list[int]) -> list[tuple[str, dict[str, Any]]]:
    pieces = fragments(json.dumps(input_, ensure_ascii=False), cuts) if input_ else []
    return [ev("content_block_start", index=index, content_block={"type": "tool_use", "id": id_, "name": name,
                                                                    "input": {}}),
            *[ev("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": p})
              for p in ["", *pieces]],
            ev("content_block_stop", index=index)]


def finish(stop_reason: str, output_tokens: int = 5) -> list[tuple[str, dict[str, Any]]]:
    return [ev("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None},
               usage={"output_tokens": output_tokens}),
            ev("message_stop")]


def run(events: list[tuple[str, dict[str, Any]]], translation: Translation,
        spec: dict[str, Any]) -> tuple[list[dict[str, Any]], StreamTranslator]:
    translator = StreamTranslator(request_model=M, translation=translation, clock=lambda: NOW)
    chunks: list[dict[str, Any]] = []
    for name, data in events:
        chunks.extend(translator.feed(name, data))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        check_spec(spec, "CreateChatCompletionStreamResponse", chunk)
        assert (chunk["id"], chunk["created"], chunk["model"], chunk["object"]) == (
            "chatcmpl-msg_01ABC", CREATED, "claude-sonnet-4-5-20250929", "chat.completion.chunk")
    return chunks, translator


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat.completion the chunks add up to, built independently of the code under test."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    usage = None
    role = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            assert choice["index"] == 0
            if choice["finish_reason"]:
                assert finish_reason is None, "finish_reason sent twice"
                finish_reason = choice["finish_reason"]
            delta = choice["delta"]
            role = delta.get("role", role)
            if delta.get("content") is not None:
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                if tc["index"] not in calls:
                    assert tc["index"] == len(calls), "tool-call indexes must count up from 0"
                    calls[tc["index"]] = {"id": tc["id"], "type": tc["type"],
                                          "function": {"name": tc["function"]["name"], "arguments": ""}}
                calls[tc["index"]]["function"]["arguments"] += tc["function"].get("arguments") or ""
    joined = "".join(content)
    message: dict[str, Any] = {"role": role, "content": joined if joined or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    out = {"id": chunks[0]["id"], "object": "chat.completion", "created": chunks[0]["created"],
           "model": chunks[0]["model"],
           "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}]}
    if usage is not None:
        out["usage"] = usage
    return out


WEATHER_IN = {"city": "Paris", "units": "celsius", "days": [1, 2]}
PING_IN = {"host": "example.com"}
FULL_CONTENT = [text("Let me check both."), tool_use("toolu_01", "get_weather", WEATHER_IN),
                tool_use("toolu_02", "ping", PING_IN)]
FULL_STREAM = [message_start(cache_read_input_tokens=100, cache_creation_input_tokens=20), ev("ping"),
               *text_block(0, "Let me ", "check both."),
               *tool_block(1, "toolu_01", "get_weather", WEATHER_IN, [1, 9, 10, 30]),
               ev("ping"),
               *tool_block(2, "toolu_02", "ping", PING_IN, [5]),
               *finish("tool_use", output_tokens=42)]


def test_stream_full_sequence_assembles_to_the_non_streamed_answer(spec: dict[str, Any]) -> None:
    chunks, translator = run(FULL_STREAM, Translation(stream=True), spec)
    expected = from_anthropic(amsg(FULL_CONTENT, "tool_use", output_tokens=42, cache_read_input_tokens=100,
                                   cache_creation_input_tokens=20),
                              request_model=M, translation=Translation(), clock=lambda: NOW)
    got = assemble(chunks)
    usage = expected.pop("usage")
    assert got == expected
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["id"] for c in got["choices"][0]["message"]["tool_calls"]] == ["toolu_01", "toolu_02"]
    # the first chunk carries the role; tool calls are indexed 0, 1 (Anthropic's blocks were 1, 2)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    indexes = [tc["index"] for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []]
    assert set(indexes) == {0, 1}
    # arguments arrive in pieces, not at once
    assert sum(1 for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []
               if tc["index"] == 0) == 1 + 5
    # no usage chunk was asked for, but the translator kept it
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert translator.usage == usage
    assert translator.finish_reason == "tool_calls"
    assert translator.finished


def test_stream_usage_chunk_only_when_asked(spec: dict[str, Any]) -> None:
    chunks, _ = run(FULL_STREAM, Translation(stream=True, include_usage=True), spec)
    *body, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 130, "completion_tokens": 42, "total_tokens": 172,
                             "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}}
    assert all(c["usage"] is None and c["choices"] for c in body)
    parsed = ChatCompletionChunk.model_validate(last)
    assert parsed.usage is not None and parsed.usage.total_tokens == 172

    plain, _ = run(FULL_STREAM, Translation(stream=True), spec)
    assert len(plain) == len(chunks) - 1


def test_stream_text_only(spec: dict[str, Any]) -> None:
    events = [message_start(), *text_block(0, "Hello", ", ", "world"), *finish("end_turn")]
    chunks, _ = run(events, Translation(stream=True), spec)
    expected = from_anthropic(amsg([text("Hello, world")]), request_model=M, translation=Translation(),
                              clock=lambda: NOW)
    expected.pop("usage")
    assert assemble(chunks) == expected
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": ", "}, {"content": "world"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter"), ("pause_turn", "stop")])
def test_stream_stop_reasons(spec: dict[str, Any], stop_reason: str, finish_reason: str) -> None:
    chunks, _ = run([message_start(), *text_block(0, "x"), *finish(stop_reason)], Translation(stream=True), spec)
    assert chunks[-1]["choices"][0]["finish_reason"] == finish_reason


def test_stream_structured_output_becomes_content(spec: dict[str, Any]) -> None:
    events = [message_start(), *tool_block(0, "toolu_s", "verdict", VERDICT, [3, 12, 20]), *finish("tool_use")]
    chunks, _ = run(events, Translation(structured_output_tool="verdict", stream=True), spec)
    expected = from_anthropic(amsg([tool_use("toolu_s", "verdict", VERDICT)], "tool_use"), request_model=M,
                              translation=SO, clock=lambda: NOW)
    expected.pop("usage")
    got = assemble(chunks)
    assert got == expected
    assert got["choices"][0]["message"]["content"] == VERDICT_JSON
    assert got["choices"][0]["finish_reason"] == "stop"
    assert not any(ch["delta"].get("tool_calls") for c in chunks for ch in c["choices"])


def test_stream_tool_without_input_gets_empty_object(spec: dict[str, Any]) -> None:
    events = [message_start(), *tool_block(0, "toolu_p", "ping", {}, []), *finish("tool_use")]
    chunks, _ = run(events, Translation(stream=True), spec)
    got = assemble(chunks)
    assert got["choices"][0]["message"]["tool_calls"] == [ocall("toolu_p", "ping", "{}")]
    expected = from_anthropic(amsg([tool_use("toolu_p", "ping", {})], "tool_use"), request_model=M,
                              translation=Translation(), clock=lambda: NOW)
    expected.pop("usage")
    assert got == expected


def test_stream_thinking_blocks_ignored(spec: dict[str, Any]) -> None:
    events = [message_start(),
              ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
              ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Let me think"}),
              ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "abc"}),
              ev("content_block_stop", index=0),
              *text_block(1, "Answer."), *finish("end_turn")]
    chunks, _ = run(events, Translation(stream=True), spec)
    assert assemble(chunks)["choices"][0]["message"]["content"] == "Answer."


def test_stream_error_event_raises(spec: dict[str, Any]) -> None:
    translator = StreamTranslator(request_model=M, translation=Translation(stream=True), clock=lambda: NOW)
    name, data = message_start()
    translator.feed(name, data)
    translator.feed(*ev("content_block_start", index=0, content_block={"type": "text", "text": ""}))
    with pytest.raises(StreamError) as info:
        translator.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    err = info.value
    assert (err.type, err.message, err.status) == ("overloaded_error", "Overloaded", 503)
    assert err.to_openai() == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                                         "code": "overloaded_error"}}
    check_spec(spec, "ErrorResponse", err.to_openai())


def test_stream_error_before_start_and_events_before_start() -> None:
    translator = StreamTranslator(request_model=M, translation=Translation(stream=True))
    with pytest.raises(StreamError) as info:
        translator.feed("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    assert info.value.status == 500
    with pytest.raises(StreamError):
        translator.feed(*ev("content_block_start", index=0, content_block={"type": "text", "text": ""}))


def test_stream_ping_and_unknown_events_emit_nothing() -> None:
    translator = StreamTranslator(request_model=M, translation=Translation(stream=True))
    assert translator.feed("ping", {"type": "ping"}) == []
    translator.feed(*message_start())
    assert translator.feed("future_event", {"type": "future_event"}) == []
