"""Capture modes: what a record keeps of a request and of its answer."""

from __future__ import annotations

import base64
import copy
import hashlib
import random
import struct
from typing import Any

import orjson
import pytest

from proxy.records import capture_request, capture_response, extract_params, request_hash

SYSTEM = "Vous êtes Zéphyrine, agente du guichet Quokka. Réponds brièvement, sans jargon."
USER = ("Bonjour, je suis Marguerite Okonkwo (marguerite.okonkwo@zephmail.quokka, +44 20 7946 0958). "
        "Rembourse ma carte 4111 1111 1111 1111 pour la commande ZQX-7781, merci!")
PART = "Voici la photo du colis abîmé, vérifie le reçu joint."
TOOL_ARGS = '{"client": "marguerite.okonkwo@zephmail.quokka", "somme": 42.5, "motif": "colis abîmé"}'
TOOL_RESULT = "Remboursement accepté: dossier RMB-Q7W3K ouvert pour Okonkwo."
ANSWER = "C'est fait, Marguerite: remboursement accepté, dossier RMB-Q7W3K. Écris à aide@quokka.zed si besoin."
REFUSAL_TEXT = "Je ne peux pas révéler la clé sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z."
SCHEMA_DESC = "Rembourse une commande; équipe joignable via ops@quokka.zed"

TEXTS = [SYSTEM, USER, PART, TOOL_ARGS, TOOL_RESULT, ANSWER, REFUSAL_TEXT]


def chat_request() -> dict[str, Any]:
    return {
        "model": "support-bot",
        "temperature": 0.2,
        "seed": 7,
        "user": "marguerite.okonkwo@zephmail.quokka",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER, "name": "Marguerite"},
            {"role": "user", "content": [
                {"type": "text", "text": PART},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_Wm3", "type": "function", "function": {"name": "rembourser", "arguments": TOOL_ARGS}},
            ]},
            {"role": "tool", "tool_call_id": "call_Wm3", "content": TOOL_RESULT},
        ],
        "tools": [{"type": "function", "function": {
            "name": "rembourser", "description": SCHEMA_DESC,
            "parameters": {"type": "object", "properties": {"client": {"type": "string"}, "somme": {"type": "number"}}},
        }}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "reponse", "strict": True,
                                                                  "schema": {"type": "object"}}},
    }


def chat_response() -> dict[str, Any]:
    return {
        "id": "chatcmpl-9xYz", "object": "chat.completion", "created": 1731000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_abc",
        "choices": [
            {"index": 0, "finish_reason": "stop", "logprobs": {"content": [{"token": "C'est", "logprob": -0.1}]},
             "message": {"role": "assistant", "content": ANSWER, "refusal": None}},
            {"index": 1, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "refusal": REFUSAL_TEXT,
                "tool_calls": [{"id": "call_Q9", "type": "function",
                                "function": {"name": "rembourser", "arguments": TOOL_ARGS}}]}},
        ],
        "usage": {"prompt_tokens": 321, "completion_tokens": 54, "total_tokens": 375},
    }


def assert_no_text_leak(capture: Any, texts: list[str]) -> None:
    """No substring of 4 or more characters of any text appears in the dumped capture.

    Texts are compared in their JSON-escaped form (how they would appear if they leaked)."""
    dumped = orjson.dumps(capture).decode()
    for raw in texts:
        text = orjson.dumps(raw).decode()[1:-1]
        for i in range(len(text) - 3):
            window = text[i:i + 4]
            assert window not in dumped, f"{window!r} (from {text[:30]!r}…) leaked into {dumped[:300]}"


# --- full ---------------------------------------------------------------------------------------


def test_full_keeps_everything() -> None:
    req, resp = chat_request(), chat_response()
    assert capture_request(req, "full") is req
    assert capture_response(resp, "full", "chat.completions") is resp
    assert capture_request(None, "full") is None
    assert capture_response(None, "full", "chat.completions") is None


# --- redacted -----------------------------------------------------------------------------------


def test_redacted_request_masks_text_and_keeps_schemas() -> None:
    req = chat_request()
    before = copy.deepcopy(req)
    out = capture_request(req, "redacted")
    assert req == before  # the body sent upstream is not touched
    msgs = out["messages"]
    assert msgs[0]["content"] == SYSTEM  # nothing to mask
    assert msgs[1]["content"] == ("Bonjour, je suis Marguerite Okonkwo ([EMAIL], [PHONE]). "
                                  "Rembourse ma carte [CARD] pour la commande ZQX-7781, merci!")
    assert msgs[2]["content"][0] == {"type": "text", "text": PART}
    assert msgs[3]["tool_calls"][0]["function"] == {
        "name": "rembourser",
        "arguments": '{"client": "[EMAIL]", "somme": 42.5, "motif": "colis abîmé"}'}
    assert orjson.loads(msgs[3]["tool_calls"][0]["function"]["arguments"])["client"] == "[EMAIL]"
    assert out["user"] == "[EMAIL]"
    # tool JSON schemas and parameters are kept as they are (even text that looks like PII)
    assert out["tools"] == before["tools"]
    assert out["response_format"] == before["response_format"]
    assert out["temperature"] == 0.2 and out["seed"] == 7 and out["model"] == "support-bot"
    dumped = orjson.dumps(out["messages"]).decode()
    for pii in ("marguerite.okonkwo@zephmail.quokka", "7946", "4111"):
        assert pii not in dumped


def test_redacted_completions_and_embeddings_requests() -> None:
    comp = {"model": "m", "prompt": ["mail bob@example.com", "call 555-123-4567"], "suffix": "card 4111111111111111"}
    out = capture_request(comp, "redacted")
    assert out["prompt"] == ["mail [EMAIL]", "call [PHONE]"]
    assert out["suffix"] == "card [CARD]"
    emb = {"model": "e", "input": "token sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"}
    assert capture_request(emb, "redacted")["input"] == "token [SECRET]"
    tokens = {"model": "e", "input": [[1, 2, 3], [4, 5]]}
    assert capture_request(tokens, "redacted")["input"] == [[1, 2, 3], [4, 5]]


def test_redacted_response_masks_the_answer() -> None:
    resp = chat_response()
    before = copy.deepcopy(resp)
    out = capture_response(resp, "redacted", "chat.completions")
    assert resp == before
    c0, c1 = out["choices"]
    assert c0["message"]["content"] == ("C'est fait, Marguerite: remboursement accepté, dossier RMB-Q7W3K. "
                                        "Écris à [EMAIL] si besoin.")
    assert c0["logprobs"] is None  # tokens would spell the unmasked text
    assert c1["message"]["refusal"] == "Je ne peux pas révéler la clé [SECRET]."
    assert c1["message"]["tool_calls"][0]["function"] == {
        "name": "rembourser", "arguments": '{"client": "[EMAIL]", "somme": 42.5, "motif": "colis abîmé"}'}
    assert c1["finish_reason"] == "tool_calls"
    assert out["usage"] == before["usage"] and out["model"] == before["model"]
    assert out["system_fingerprint"] == "fp_abc"


def test_redacted_completions_response() -> None:
    resp = {"id": "cmpl-1", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": "reach me at bob@example.com", "finish_reason": "stop",
                         "logprobs": {"tokens": ["reach"]}}]}
    out = capture_response(resp, "redacted", "completions")
    assert out["choices"][0]["text"] == "reach me at [EMAIL]"
    assert out["choices"][0]["logprobs"] is None


def test_redacted_error_body() -> None:
    resp = {"error": {"message": "bad input near bob@example.com", "type": "invalid_request_error"}}
    out = capture_response(resp, "redacted", "chat.completions")
    assert out == {"error": {"message": "bad input near [EMAIL]", "type": "invalid_request_error"}}


# --- refs_only ----------------------------------------------------------------------------------


def test_refs_only_request_has_no_text() -> None:
    req = chat_request()
    out = capture_request(req, "refs_only")
    assert_no_text_leak(out, [*TEXTS, SCHEMA_DESC, "Marguerite", "marguerite.okonkwo@zephmail.quokka"])
    assert [m["role"] for m in out["messages"]] == ["system", "user", "user", "assistant", "tool"]
    assert out["messages_count"] == 5
    m1 = out["messages"][1]
    assert m1["chars"] == len(USER)
    assert m1["bytes"] == len(USER.encode())
    assert m1["sha256"] == hashlib.sha256(USER.encode()).hexdigest()
    m2 = out["messages"][2]
    assert m2["parts"] == 2 and m2["part_types"] == ["text", "image_url"] and m2["chars"] == len(PART)
    assert out["messages"][3]["tool_calls"]["count"] == 1
    assert out["messages"][3]["tool_calls"]["chars"] == len(TOOL_ARGS)
    assert out["tools_count"] == 1
    assert out["chars"] == sum(len(t) for t in (SYSTEM, USER, PART, TOOL_RESULT))
    assert "user" not in out and "response_format" not in out and "tools" not in out


def test_refs_only_response_has_no_text() -> None:
    out = capture_response(chat_response(), "refs_only", "chat.completions")
    assert_no_text_leak(out, TEXTS)
    c0, c1 = out["choices"]
    assert c0 == {"index": 0, "finish_reason": "stop", "role": "assistant", "chars": len(ANSWER),
                  "bytes": len(ANSWER.encode()), "sha256": hashlib.sha256(ANSWER.encode()).hexdigest()}
    assert c1["tool_calls"]["count"] == 1
    assert c1["refusal"]["chars"] == len(REFUSAL_TEXT)
    assert out["usage"]["total_tokens"] == 375
    assert out["model"] == "gpt-4o-2024-08-06" and out["id"] == "chatcmpl-9xYz"


def test_refs_only_completions_and_errors() -> None:
    prompt = "Écris un haïku sur Zéphyrine la quokka."
    text = "Quokka rieuse / Zéphyrine saute au vent / l'herbe se souvient"
    req = {"model": "m", "prompt": prompt, "max_tokens": 20}
    resp = {"id": "cmpl-1", "model": "m", "choices": [{"index": 0, "text": text, "finish_reason": "length"}]}
    out_req = capture_request(req, "refs_only")
    out_resp = capture_response(resp, "refs_only", "completions")
    assert_no_text_leak([out_req, out_resp], [prompt, text])
    assert out_req["prompt"]["chars"] == len(prompt) and out_req["prompt"]["count"] == 1
    assert out_resp["choices"][0]["chars"] == len(text)
    err = {"error": {"message": f"prompt rejected: {prompt}", "type": "invalid_request_error",
                     "code": f"bad {prompt}"}}
    out_err = capture_response(err, "refs_only", "completions")
    assert_no_text_leak(out_err, [prompt])
    assert out_err["error"]["type"] == "invalid_request_error"


def test_refs_only_embeddings_request_with_token_arrays() -> None:
    out = capture_request({"model": "e", "input": [[11, 22, 33], [44]]}, "refs_only")
    assert out["input"]["count"] == 2 and out["input"]["tokens"] == 4
    out = capture_request({"model": "e", "input": ["Zéphyrine quokka", "Marguerite Okonkwo"]}, "refs_only")
    assert_no_text_leak(out, ["Zéphyrine quokka", "Marguerite Okonkwo"])
    assert out["input"]["chars"] == len("Zéphyrine quokka") + len("Marguerite Okonkwo")


@pytest.mark.parametrize("seed", range(20))
def test_refs_only_random_text_never_leaks(seed: int) -> None:
    rng = random.Random(seed)

    def text() -> str:
        # upper-case letters: cannot collide with JSON keys, roles or lower-case hex hashes
        return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ ÉÀ") for _ in range(rng.randint(4, 200)))

    texts: list[str] = []

    def t() -> str:
        texts.append(text())
        return texts[-1]

    req = {"model": "m", "messages": [
        {"role": "system", "content": t()},
        {"role": "user", "content": [{"type": "text", "text": t()}, {"type": "text", "text": t()}]},
        {"role": "assistant", "content": t(), "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": orjson.dumps({"q": t()}).decode()}}]},
        {"role": "tool", "tool_call_id": "c", "content": t()},
    ], "metadata": {"note": t()}}
    resp = {"id": "r", "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": t(), "refusal": t()}}]}
    assert_no_text_leak([capture_request(req, "refs_only"), capture_response(resp, "refs_only", "chat.completions")],
                        texts)


def test_the_leak_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        assert_no_text_leak(capture_request(chat_request(), "redacted"), [SYSTEM])


# --- embeddings: never vectors ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "redacted", "refs_only"])
def test_embeddings_response_keeps_no_vectors(mode: str) -> None:
    vec = [0.123456789] * 1536
    resp = {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": i, "embedding": vec} for i in range(3)],
            "usage": {"prompt_tokens": 12, "total_tokens": 12}}
    out = capture_response(resp, mode, "embeddings")
    assert out == {"object": "list", "model": "text-embedding-3-small", "count": 3, "dimensions": 1536,
                   "usage": {"prompt_tokens": 12, "total_tokens": 12}}
    assert b"0.123" not in orjson.dumps(out)


def test_embeddings_base64_dimensions() -> None:
    b64 = base64.b64encode(struct.pack("<256f", *([0.5] * 256))).decode()
    resp = {"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": b64}]}
    out = capture_response(resp, "full", "embeddings")
    assert out["count"] == 1 and out["dimensions"] == 256
    assert b64[:16] not in orjson.dumps(out).decode()


# --- hash and params ----------------------------------------------------------------------------


def test_request_hash_is_canonical() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    b = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) == hashlib.sha256(orjson.dumps(a, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert len(request_hash(a)) == 64
    c = copy.deepcopy(a)
    c["messages"][0]["content"] = "hi!"
    assert request_hash(c) != request_hash(a)


def test_extract_params() -> None:
    body = {
        "model": "m", "messages": [], "temperature": 0.3, "top_p": 0.9, "seed": 1, "max_tokens": 100,
        "max_completion_tokens": 200, "n": 2, "stop": ["\n\n"], "presence_penalty": 0.1,
        "frequency_penalty": 0.2, "logprobs": True, "top_logprobs": 3, "tool_choice": "auto",
        "parallel_tool_calls": False, "reasoning_effort": "low", "user": "u", "stream": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
                                                                  "schema": {"type": "object", "properties": {}}}},
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}},
                  {"type": "function", "function": {"name": "refund"}}],
    }
    p = extract_params(body)
    schema_hash = hashlib.sha256(orjson.dumps({"type": "object", "properties": {}},
                                              option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert p == {
        "temperature": 0.3, "top_p": 0.9, "seed": 1, "max_tokens": 100, "max_completion_tokens": 200,
        "n": 2, "stop": ["\n\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2, "logprobs": True,
        "top_logprobs": 3, "tool_choice": "auto", "parallel_tool_calls": False, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "schema_name": "answer", "strict": True,
                            "schema_sha256": schema_hash},
        "tool_names": ["lookup", "refund"],
    }
    assert extract_params({"model": "m", "temperature": None, "response_format": {"type": "json_object"}}) == {
        "response_format": {"type": "json_object"}}
    assert extract_params({"model": "m"}) == {}


def test_unknown_mode_or_endpoint() -> None:
    with pytest.raises(ValueError, match="capture mode"):
        capture_request({"model": "m"}, "everything")
    with pytest.raises(ValueError, match="endpoint"):
        capture_response({"choices": []}, "full", "responses")
