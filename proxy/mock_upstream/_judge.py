"""The mock as a judge with a known error rate, and the bad answers it judges.

Two knobs of `MockModel` (YAML, `/_mock/models/<name>`):

- `bad_answer_rate` (0..1, default 0): the share of a model's text answers that are bad. A bad
  answer ends with `BAD_ANSWER_MARKER`. Which answers are bad is a pure function of the request
  (a hash of its messages, or of its prompt for legacy completions), so a replay gets the same.
- `judge_error_rate` (0..1, default null = not a judge): the model plays an `llm_judge`. Every
  chat completion it gets is answered with a verdict JSON
  `{"label", "score", "taxonomy", "confidence", "reason"}` and usage tokens (so cost can be
  computed).

How the judge decides. The TRUE label comes from the prompt (all message text, i.e. the rendered
rubric with the judged answer in it): "fail" when it holds a defect marker the mock itself puts
into bad answers — `BAD_ANSWER_MARKER` (class `out_of_scope_answer`) or the invented tool
parameter `mock_invented_param` of `tool_call_fault: invented_param` (class
`invented_tool_param`; a judged tool call reads `name({...arguments})`) — else "pass". Defects the
mock cannot see in text (missing_required, wrong_type, ...) are judged "pass", as a real judge
may. The judge then gives the opposite label with probability `judge_error_rate`, decided by a
hash of the prompt (the same prompt always gets the same verdict). Its confidence is 0.75-0.99
when it is right and 0.35-0.65 when it flipped, so oversampling low-confidence verdicts finds
its mistakes. The labels are read from the request's `response_format` json_schema
(`properties.label.enum`), default `[pass, fail]`; "pass"/"fail" are used when offered, else the
first / last label. `json_fault` still applies to the verdict (`fenced` wraps it in a ``` fence,
`invalid_json` truncates it), to exercise a judge client's parser and retries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.mock_upstream._synth import INVENTED_PARAM

__all__ = [
    "BAD_ANSWER_MARKER",
    "DEFECT_MARKERS",
    "add_bad_marker",
    "draw",
    "is_bad_answer",
    "judge_verdict",
    "prompt_text",
    "true_label",
]

BAD_ANSWER_MARKER = "(mock: this answer is deliberately wrong)"
# marker -> the taxonomy class a (correct) failing verdict names
DEFECT_MARKERS: dict[str, str] = {
    BAD_ANSWER_MARKER: "out_of_scope_answer",
    INVENTED_PARAM: "invented_tool_param",
}
_FALSE_FAIL_CLASS = "verbose"  # what a judge that wrongly fails a good answer blames


def draw(value: Any, salt: str) -> float:
    """Uniform in [0, 1), fixed by `value` (JSON-able) and `salt`: independent draws per purpose."""
    digest = hashlib.blake2b(orjson.dumps(value), digest_size=8, person=salt.encode()[:16]).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2**53


def is_bad_answer(body: Mapping[str, Any], rate: float) -> bool:
    """Whether this request gets a bad answer (`bad_answer_rate`)."""
    if rate <= 0:
        return False
    return draw(body.get("messages") or body.get("prompt"), "bad-answer") < rate


def add_bad_marker(text: str) -> str:
    return f"{text} {BAD_ANSWER_MARKER}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def prompt_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(_text(m.get("content")) for m in messages if isinstance(m, Mapping))


def true_label(prompt: str) -> tuple[bool, str | None]:
    """(is the judged answer bad, the class of its defect)."""
    for marker, taxonomy in DEFECT_MARKERS.items():
        if marker in prompt:
            return True, taxonomy
    return False, None


def _labels(body: Mapping[str, Any]) -> tuple[str, str]:
    """(pass label, fail label) from the requested schema's label enum."""
    rf = body.get("response_format")
    labels: Any = None
    if isinstance(rf, Mapping):
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        label = props.get("label") if isinstance(props, Mapping) else None
        labels = label.get("enum") if isinstance(label, Mapping) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        labels = ["pass", "fail"]
    good = "pass" if "pass" in labels else labels[0]
    bad = "fail" if "fail" in labels else labels[-1]
    return good, bad


def judge_verdict(body: Mapping[str, Any], error_rate: float, json_fault: str = "none") -> str:
    """The verdict JSON (as text) a judge with `error_rate` gives to this judge request."""
    prompt = prompt_text(body)
    bad, taxonomy = true_label(prompt)
    flipped = draw(prompt, "judge-flip") < error_rate
    says_bad = bad != flipped
    spread = draw(prompt, "judge-conf")
    confidence = round(0.35 + 0.30 * spread if flipped else 0.75 + 0.24 * spread, 3)
    good_label, bad_label = _labels(body)
    verdict = {
        "label": bad_label if says_bad else good_label,
        "score": round(1.0 - confidence if says_bad else confidence, 3),
        "taxonomy": (taxonomy or _FALSE_FAIL_CLASS) if says_bad else None,
        "confidence": confidence,
        "reason": ("the answer is not supported by the request" if says_bad
                   else "the answer addresses the request"),
    }
    text = orjson.dumps(verdict).decode()
    if json_fault == "fenced":
        return f"```json\n{text}\n```"
    if json_fault == "invalid_json":
        return text[: len(text) // 2]
    return text
