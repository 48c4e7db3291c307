"""SSE parsing and stream assembly.

- Any chunking of a valid stream (LF or CRLF line ends, comments and pings between events) splits
  into the same events and assembles to the same answer as the stream read whole, and that answer
  is the one the chunks describe (`proxy/providers/_sse.py`, `proxy/assembly.py`).
- Arbitrary bytes from an OpenAI-compatible upstream: the stream's `events()` yields or raises
  `UpstreamBadResponse` (a stream cut mid-event), nothing else; the relay's tap (`StreamTap`) takes
  any event without raising (an event that is not JSON is noted on the record).
- Arbitrary Anthropic events: the translating stream yields or raises an `UpstreamError`.
"""

from __future__ import annotations

import asyncio
import itertools
import types
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.assembly import StreamAssembler
from proxy.errors import UpstreamBadResponse, UpstreamError
from proxy.providers._anthropic import _AnthropicStream
from proxy.providers._anthropic_translate import StreamTranslator, Translation
from proxy.providers._openai import _OpenAIStream
from proxy.providers._sse import SSESplitter, event_data
from proxy.server._relay import StreamTap
from tests.fuzz._gateway import fuzz

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


class FakeResponse:
    """An HTTPResponse that delivers given chunks (what aiohttp's iter_any may hand over)."""

    status = 200

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def aclose(self) -> None:
        pass


def _cut(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


async def _collect(stream: Any) -> tuple[list[bytes], BaseException | None]:
    events: list[bytes] = []
    try:
        async for event in stream.events():
            events.append(event)
    except Exception as exc:  # noqa: BLE001 - the test looks at which
        return events, exc
    return events, None


def _tap() -> StreamTap:
    record = types.SimpleNamespace(error=None, ttft_ms=None)
    return StreamTap(record, drop_usage_chunk=True, clock=0.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a valid stream

TOOL_CALL = st.tuples(st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True),
                      st.from_regex(r"[a-z_]{1,10}", fullmatch=True), st.lists(TEXT, max_size=4))
CHOICE = st.fixed_dictionaries({"content": st.lists(TEXT, max_size=5), "tools": st.lists(TOOL_CALL, max_size=2),
                                "refusal": st.lists(TEXT, max_size=2),
                                "finish": st.sampled_from(["stop", "length", "tool_calls", "content_filter"])})
ANSWER = st.fixed_dictionaries({
    "object": st.sampled_from(["chat.completion.chunk", "text_completion"]),
    "choices": st.lists(CHOICE, min_size=1, max_size=2),
    "usage": st.none() | st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6),
                                                "completion_tokens": st.integers(0, 10**6)}),
    "fingerprint": st.none() | st.from_regex(r"fp_[a-z0-9]{4}", fullmatch=True),
})


def stream_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks an OpenAI-compatible server would send for this answer."""
    base = {"id": "chatcmpl-x", "object": answer["object"], "created": 1, "model": "m"}
    if answer["fingerprint"]:
        base["system_fingerprint"] = answer["fingerprint"]
    chat = answer["object"] == "chat.completion.chunk"
    chunks = []
    for i, choice in enumerate(answer["choices"]):
        if chat:
            chunks.append({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})
        for piece in choice["content"]:
            key = "delta" if chat else None
            chunks.append({**base, "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}
                                               if key else {"index": i, "text": piece, "finish_reason": None}]})
        if chat:
            for piece in choice["refusal"]:
                chunks.append({**base, "choices": [{"index": i, "delta": {"refusal": piece}}]})
            for j, (call_id, name, fragments) in enumerate(choice["tools"]):
                chunks.append({**base, "choices": [{"index": i, "delta": {"tool_calls": [
                    {"index": j, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}}]})
                for fragment in fragments:
                    chunks.append({**base, "choices": [{"index": i, "delta": {"tool_calls": [
                        {"index": j, "function": {"arguments": fragment}}]}}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice["finish"]}
                                           if chat else {"index": i, "text": "", "finish_reason": choice["finish"]}]})
    if answer["usage"] is not None:
        usage = {**answer["usage"], "total_tokens": sum(answer["usage"].values())}
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def expected_answer(answer: dict[str, Any]) -> dict[str, Any]:
    chat = answer["object"] == "chat.completion.chunk"
    choices = []
    for i, choice in enumerate(answer["choices"]):
        text = "".join(choice["content"])
        if not chat:
            choices.append({"index": i, "text": text, "finish_reason": choice["finish"]})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if "".join(choice["refusal"]):
            message["refusal"] = "".join(choice["refusal"])
        if choice["tools"]:
            message["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": "".join(fragments)}}
                                     for call_id, name, fragments in choice["tools"]]
        choices.append({"index": i, "message": message, "finish_reason": choice["finish"]})
    usage = None
    if answer["usage"] is not None:
        usage = {**answer["usage"], "total_tokens": sum(answer["usage"].values())}
    return {"id": "chatcmpl-x", "object": "chat.completion" if chat else "text_completion", "created": 1,
            "model": "m", "system_fingerprint": answer["fingerprint"], "choices": choices, "usage": usage}


def encode(chunks: list[dict[str, Any]], crlf: bool, pings: list[int]) -> bytes:
    events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]
    for at in sorted(pings, reverse=True):  # comments and empty-named events servers send to keep alive
        events.insert(at % (len(events) + 1), b": keep-alive\n\n")
    raw = b"".join(events)
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def assemble(pieces: list[bytes]) -> tuple[dict[str, Any], list[bytes], bytes]:
    splitter, assembler, events = SSESplitter(), StreamAssembler(), []
    for piece in pieces:
        for event in splitter.feed(piece):
            events.append(event)
            data = event_data(event)
            if data is not None and data != b"[DONE]":
                assembler.add(orjson.loads(data))
    return assembler.result(), events, splitter.tail()


@fuzz(200)
@given(answer=ANSWER, crlf=st.booleans(), pings=st.lists(st.integers(0, 50), max_size=3),
       cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_any_chunking_of_a_valid_stream_assembles_the_same_answer(answer: dict[str, Any], crlf: bool,
                                                                   pings: list[int], cuts: list[int]) -> None:
    raw = encode(stream_chunks(answer), crlf, pings)
    whole, whole_events, tail = assemble([raw])
    assert tail == b""
    assert whole == expected_answer(answer)
    pieces = _cut(raw, cuts)
    chunked, events, tail = assemble(pieces)
    assert tail == b""
    assert events == whole_events
    assert chunked == whole
    one_byte_at_a_time, _, _ = assemble([raw[i:i + 1] for i in range(min(len(raw), 3000))]) \
        if len(raw) <= 3000 else (whole, None, None)
    assert one_byte_at_a_time == whole


@fuzz(100)
@given(answer=ANSWER, cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_the_relay_tap_and_the_openai_stream_agree_on_any_chunking(answer: dict[str, Any], cuts: list[int]) -> None:
    """What the relay does: the provider stream's events, each through the tap that assembles."""
    raw = encode(stream_chunks(answer), False, [])
    events, error = asyncio.run(_collect(_OpenAIStream("up", FakeResponse(_cut(raw, cuts)))))  # type: ignore[arg-type]
    assert error is None
    tap = _tap()
    relayed = [event for event in events if tap.passes(event)]
    assert tap.saw_done and tap.record.error is None
    expected = expected_answer(answer)
    assert tap.assembler.result() == expected
    # the usage chunk the gateway asked for on the client's behalf is not relayed; everything else is
    assert len(relayed) == len(events) - (answer["usage"] is not None)


# --------------------------------------------------------------------------- arbitrary bytes

VALID_EVENTS = st.sampled_from([(b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
                                 b'"delta":{"content":"hi"}}]}\n\n'), b"data: [DONE]\n\n", b": ping\n\n",
                                b"event: ping\ndata: {}\n\n", b"data: \n\n", b"\n\n", b"data:{}\r\n\r\n"])
JUNK = st.binary(max_size=64) | st.sampled_from([b"data: ", b"data: {", b"\r", b"\n", b"\r\n\r\n", b"\xff\xfe",
                                                 b"data: null\n\n", b"data: [1,2]\n\n", b'data: "x"\n\n',
                                                 b"data: {}\n\n", b"data: NaN\n\n", b"data: 1e400\n\n",
                                                 b"data: " + b"[" * 2000 + b"\n\n"])
BYTE_STREAMS = st.lists(VALID_EVENTS | JUNK, max_size=12).map(b"".join)


@fuzz(200)
@given(raw=BYTE_STREAMS, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_arbitrary_bytes_from_an_openai_upstream(raw: bytes, cuts: list[int]) -> None:
    stream = _OpenAIStream("up", FakeResponse(_cut(raw, cuts)))  # type: ignore[arg-type]
    events, error = asyncio.run(_collect(stream))
    assert error is None or isinstance(error, UpstreamBadResponse), repr(error)
    if error is not None:
        assert "up" in error.message  # names the provider
    assert all(event.endswith(b"\n\n") for event in events)
    tap = _tap()
    for event in events:
        tap.passes(event)  # never raises: a non-JSON event is noted on the record
    result = tap.assembler.result()
    assert isinstance(result, dict) and isinstance(result["choices"], list)
    orjson.dumps(result)  # the record can be written


@fuzz(200)
@given(raw=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_the_splitter_never_loses_or_invents_bytes(raw: bytes, cuts: list[int]) -> None:
    splitter = SSESplitter()
    out = b"".join(event for piece in _cut(raw, cuts) for event in splitter.feed(piece)) + splitter.tail()
    assert out == raw.replace(b"\r\n", b"\n")
    for event in SSESplitter().feed(raw):
        data = event_data(event)
        assert data is None or isinstance(data, bytes)


# --------------------------------------------------------------------------- Anthropic streams

ANTHROPIC_KINDS = ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                   "message_delta", "message_stop", "ping", "error", "unknown_event"]
BLOCK = st.fixed_dictionaries({"type": st.sampled_from(["text", "tool_use", "thinking"])},
                              optional={"text": TEXT, "name": TEXT, "id": TEXT, "input": st.dictionaries(TEXT, TEXT)})
DELTA = st.fixed_dictionaries({"type": st.sampled_from(["text_delta", "input_json_delta", "thinking_delta"])},
                              optional={"text": TEXT, "partial_json": TEXT, "stop_reason": TEXT})


def _anthropic_event(kind: str, index: int, block: dict[str, Any], delta: dict[str, Any]) -> bytes:
    data: dict[str, Any] = {"type": kind}
    if kind == "message_start":
        data["message"] = {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}}
    elif kind == "content_block_start":
        data.update(index=index, content_block=block)
    elif kind == "content_block_delta":
        data.update(index=index, delta=delta)
    elif kind == "content_block_stop":
        data["index"] = index
    elif kind == "message_delta":
        data.update(delta={"stop_reason": delta.get("stop_reason", "end_turn")}, usage={"output_tokens": 2})
    elif kind == "error":
        data["error"] = {"type": "overloaded_error", "message": "busy"}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


ANTHROPIC_EVENTS = st.builds(_anthropic_event, st.sampled_from(ANTHROPIC_KINDS), st.integers(0, 2), BLOCK, DELTA)
ANTHROPIC_STREAMS = st.lists(ANTHROPIC_EVENTS | JUNK.filter(lambda b: not b.startswith(b"event:")),
                             max_size=10).map(b"".join)


@fuzz(200)
@given(raw=ANTHROPIC_STREAMS, cuts=st.lists(st.integers(0, 10**6), max_size=8),
       include_usage=st.booleans())
def test_arbitrary_anthropic_events(raw: bytes, cuts: list[int], include_usage: bool) -> None:
    translator = StreamTranslator(request_model="claude", translation=Translation(include_usage=include_usage,
                                                                                 stream=True))
    stream = _AnthropicStream("anthropic-up", FakeResponse(_cut(raw, cuts)), translator)  # type: ignore[arg-type]
    events, error = asyncio.run(_collect(stream))
    assert error is None or isinstance(error, UpstreamError), repr(error)
    tap = _tap()
    for event in events:
        assert tap.passes(event)
    if error is None:
        assert tap.saw_done


# --------------------------------------------------------------------------- bugs the fuzzing found (fixed)

# An upstream chunk that is a JSON object with a field of the wrong type: the tap's assembler raises
# (AttributeError / TypeError), which RelayResponse does not catch (it catches UpstreamError and
# OSError): the client's stream stops with no error event and no [DONE], and `_finish` (in a
# `finally`) calls assembler.result() again, which raises again for some of them, so the attempt's
# record is lost. Fix: in StreamTap.passes, catch (AttributeError, TypeError, ValueError) from
# assembler.add and treat the event like a non-JSON one (record.error, outcome malformed) — or make
# StreamAssembler skip members of the wrong type.
WRONG_TYPED_CHUNKS = [
    {"choices": 5},
    {"choices": [1]},
    {"choices": [{"index": [0], "delta": {"content": "x"}}]},
    {"choices": [{"delta": "x"}]},
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 5}}]}}]},
    {"choices": [{"delta": {"tool_calls": 7}}]},
]


@pytest.mark.parametrize("chunk", WRONG_TYPED_CHUNKS, ids=[orjson.dumps(c).decode()[:40] for c in WRONG_TYPED_CHUNKS])
def test_a_wrong_typed_upstream_chunk_does_not_break_the_relay(chunk: dict[str, Any]) -> None:
    tap = _tap()
    assert tap.passes(b"data: " + orjson.dumps(chunk) + b"\n\n") in (True, False)
    assert tap.passes(b"data: [DONE]\n\n")
    orjson.dumps(tap.assembler.result())


# Anthropic events of the wrong shape: the translator raises AttributeError / TypeError, and an
# `event:` name that is not UTF-8 raises UnicodeDecodeError in _parse_event — none of them an
# UpstreamError, so the relay does not end the stream with an error event naming the provider.
# Fix: in _AnthropicStream._translate, also catch (AttributeError, TypeError, KeyError, ValueError)
# from _parse_event / translator.feed and raise UpstreamBadResponse("... sent a malformed event").
_START = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c"}}\n\n'
BAD_ANTHROPIC = [
    b'event: message_start\ndata: {"type":"message_start","message":[1]}\n\n',
    _START + b'data: {"type":"content_block_start","index":0,"content_block":"text"}\n\n',
    _START + b'data: {"type":"content_block_start","index":[0],"content_block":{"type":"text"}}\n\n',
    _START + b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text"}}\n\n'
             b'data: {"type":"content_block_delta","index":0,"delta":"x"}\n\n',
    b"event: \xff\ndata: {}\n\n",
]


@pytest.mark.parametrize("raw", BAD_ANTHROPIC, ids=[f"event{i}" for i in range(len(BAD_ANTHROPIC))])
def test_a_malformed_anthropic_event_is_an_upstream_bad_response(raw: bytes) -> None:
    translator = StreamTranslator(request_model="claude", translation=Translation(stream=True))
    _, error = asyncio.run(_collect(_AnthropicStream("anthropic-up", FakeResponse([raw]), translator)))  # type: ignore[arg-type]
    assert isinstance(error, UpstreamBadResponse), repr(error)
