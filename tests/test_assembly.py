import orjson

from proxy.assembly import StreamAssembler
from proxy.providers import SSESplitter, event_data


def _chunk(delta, finish=None, **extra):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m-2024",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def test_text_deltas_join_into_one_message():
    a = StreamAssembler()
    a.add(_chunk({"role": "assistant", "content": ""}))
    a.add(_chunk({"content": "Hel"}))
    a.add(_chunk({"content": "lo"}, system_fingerprint="fp_1"))
    a.add(_chunk({}, "stop"))
    a.add({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3}})
    result = a.result()
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 3}
    assert result["system_fingerprint"] == "fp_1"
    assert result["model"] == "m-2024"


def test_parallel_tool_call_fragments_assemble_by_index():
    a = StreamAssembler()
    a.add(_chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}))
    a.add(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}))
    a.add(_chunk({"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz"'}}]}))
    a.add(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
    a.add(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': "UTC"}'}}]}))
    a.add(_chunk({}, "tool_calls"))
    calls = a.result()["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_a", "call_b"]
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert orjson.loads(calls[1]["function"]["arguments"]) == {"tz": "UTC"}
    assert calls[1]["function"]["name"] == "get_time"


def test_legacy_text_completion_chunks():
    a = StreamAssembler()
    a.add({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "ab", "finish_reason": None}]})
    a.add({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "c", "finish_reason": "length"}]})
    result = a.result()
    assert result["object"] == "text_completion"
    assert result["choices"][0] == {"index": 0, "text": "abc", "finish_reason": "length"}


def test_sse_splitter_handles_events_split_across_reads_and_crlf():
    splitter = SSESplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b': 1}\n\ndata: [DO') == [b'data: {"a": 1}\n\n']
    assert splitter.feed(b"NE]\r\n\r\n") == [b"data: [DONE]\n\n"]
    assert splitter.tail() == b""
    splitter.feed(b"data: {\"cut")
    assert splitter.tail() == b'data: {"cut'


def test_event_data_reads_single_and_multi_line_events_and_ignores_comments():
    assert event_data(b'data: {"a":1}\n\n') == b'{"a":1}'
    assert event_data(b"data:[DONE]\n\n") == b"[DONE]"
    assert event_data(b": ping\n\n") is None
    assert event_data(b"event: x\ndata: 1\ndata: 2\n\n") == b"1\n2"
