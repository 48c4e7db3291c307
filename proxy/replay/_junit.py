"""`--junit FILE`: the replay as JUnit XML, so any CI shows it as a test report.

One `<testcase>` per item (`classname` = the item's stratum, so CI groups by route, template, tool
use and class; `name` = the record id, so a failure leads straight to `sluicegate replay --record`).
A **regression** (baseline passed, candidate failed) is a `<failure>` whose `type` is the first failure
class and whose message lists them all with their severity; an error item (the candidate's upstream kept
failing: 429, 5xx, unreachable, timeout) is an `<error>`. Items both sides fail are passing test cases: they are not what the candidate changed.

The shape is Apache Ant's (the strict schema most CI tools read: `<testsuites>` with one
`<testsuite>` carrying `package`, `id`, `timestamp`, `hostname`, counts and `time`, `<properties>`,
`<system-out>` — the text summary — and `<system-err>`). Characters XML 1.0 cannot carry are dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy.replay._model import ItemResult

__all__ = ["junit_xml", "write_junit"]

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: Any) -> str:
    return _NOT_XML.sub("", str(value))


def _token(value: str, fallback: str) -> str:
    """An xs:token: no leading/trailing/double spaces, no line breaks; never empty."""
    return " ".join(_text(value).split()) or fallback


def junit_xml(results: Sequence[ItemResult], summary: Mapping[str, Any], *, taxonomy: Mapping[str, str],
              summary_text: str = "", duration_s: float | None = None) -> bytes:
    failures = errors = 0
    suite = ET.Element("testsuite")
    props = ET.SubElement(suite, "properties")
    for name, value in (("corpus", summary.get("corpus")), ("variant", summary.get("variant")),
                        ("baseline", summary.get("baseline")), ("judge", summary["judge"]["enabled"]),
                        ("items", summary.get("items")),
                        ("baseline_pass_rate", summary["pass_rate"]["baseline"]["rate"]),
                        ("candidate_pass_rate", summary["pass_rate"]["candidate"]["rate"]),
                        ("mcnemar_p", summary["paired"]["p_value"])):
        ET.SubElement(props, "property", name=name, value=_text("" if value is None else value))
    total_time = 0.0
    for r in results:
        seconds = (r.candidate.latency_ms or 0.0) / 1000
        total_time += seconds
        case = ET.SubElement(suite, "testcase", classname=_token(r.stratum or r.route, "corpus"),
                             name=_token(r.record_id, "item"), time=f"{seconds:.3f}")
        ignore = r.ignored_scorers
        classes = r.candidate.classes(ignore)
        severity = ", ".join(f"{c} ({taxonomy[c]})" if c in taxonomy else c for c in classes)
        if r.error:
            errors += 1
            el = ET.SubElement(case, "error", type=_text(r.candidate.error_class or "error"),
                               message=_text(f"the candidate's upstream kept failing: {r.candidate.error}"))
            el.text = _text(r.candidate.error or "")
        elif r.kind == "regression":
            failures += 1
            el = ET.SubElement(case, "failure", type=_text(classes[0] if classes else "regression"),
                               message=_text(f"regression: the baseline passed, the candidate failed: {severity}"))
            lines = [f"no answer: {r.candidate.error}"] if r.candidate.error else []
            lines += [f"{g.get('guard')}: {g.get('taxonomy')} ({g.get('severity')}): {g.get('detail')}"
                      for g in r.candidate.guards]
            lines += [f"scorer {s.scorer}: {s.label}: {s.reason or ''}" for s in r.candidate.scores if s.passed is False]
            lines.append(f"answer: {r.candidate.excerpt}")
            el.text = _text("\n".join(lines))
    out = ET.SubElement(suite, "system-out")
    out.text = _text(summary_text)
    ET.SubElement(suite, "system-err").text = ""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    name = f"sluicegate replay {summary.get('variant')} vs {summary.get('baseline')}"
    suite.attrib.update({
        "name": _token(name, "sluicegate replay"), "package": "sluicegate.replay", "id": "0",
        "timestamp": now.isoformat(), "hostname": _token(socket.gethostname(), "localhost"),
        "tests": str(len(results)), "failures": str(failures), "errors": str(errors), "skipped": "0",
        "time": f"{duration_s if duration_s is not None else total_time:.3f}",
    })
    # attribute order as Ant writes it (cosmetic: XML does not care)
    ordered = {k: suite.attrib[k] for k in ("name", "package", "id", "timestamp", "hostname", "tests", "failures",
                                            "errors", "skipped", "time")}
    suite.attrib.clear()
    suite.attrib.update(ordered)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: str | Path, results: Sequence[ItemResult], summary: Mapping[str, Any], *,
                taxonomy: Mapping[str, str], summary_text: str = "", duration_s: float | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(results, summary, taxonomy=taxonomy, summary_text=summary_text, duration_s=duration_s))
    return path
