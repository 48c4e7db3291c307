"""`GET /review`: a plain page to label the review queue one item at a time, from the keyboard.

One self-contained document: inline CSS and JS, no external request of any kind (the CSP says
so too: only same-origin fetches, only this response's own script). The first item is rendered
into the page as JSON (escaped so that no stored text can end the script element); later ones
come from `GET /v1/review/next`. Stored text is only ever put into the page with `textContent`,
never as HTML.
"""

from __future__ import annotations

import html
import secrets

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import SluicegateError, error_response
from proxy.server._crosssite import API_ACTION, csrf_token
from proxy.server._review_api import next_item
from proxy.server._state import Gateway

__all__ = ["SHORTCUTS", "review_page", "script_json"]

# (key, what it does) - shown on the page, and the handler below follows it
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("1-9", "choose the label with that number"),
    ("p / f", "choose pass / fail (when the scorer has them)"),
    ("t", "focus the taxonomy class"),
    ("n", "focus the note"),
    ("r", "focus the reviewer name"),
    ("Enter", "submit the label (Shift+Enter: new line in the note)"),
    ("s", "skip to the next item"),
    ("Esc", "leave a field"),
    ("?", "show or hide this help"),
)


def script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `<`, `>`, `&` or line separators survive literally."""
    text = orjson.dumps(value).decode()
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#f4f5f7}
header{display:flex;gap:16px;align-items:center;padding:10px 18px;background:#1d2430;color:#fff;flex-wrap:wrap}
header h1{font-size:16px;margin:0 12px 0 0}
header label{font-size:12px;opacity:.85}
header input{margin-left:4px;padding:3px 6px;border-radius:4px;border:1px solid #555;background:#2b3442;color:#fff;width:9em}
#pending{margin-left:auto;font-weight:600}
main{display:grid;grid-template-columns:minmax(0,3fr) minmax(280px,2fr);gap:16px;padding:16px 18px;max-width:1400px;margin:0 auto}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 14px;margin-bottom:14px}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#5b6573;margin:0 0 8px}
.msg{border-left:3px solid #c5ccd6;padding:4px 10px;margin:6px 0}
.msg .role{font-size:11px;font-weight:700;text-transform:uppercase;color:#5b6573}
.msg.user{border-color:#3b82f6}.msg.assistant{border-color:#10b981}.msg.system{border-color:#a855f7}.msg.tool{border-color:#f59e0b}
pre,.text{white-space:pre-wrap;word-break:break-word;margin:2px 0;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}
.text{font-family:inherit;font-size:14px}
#answer .text{font-size:15px}
.meta{font-size:12px;color:#5b6573}
.meta span{margin-right:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f3;vertical-align:top}
.fail{color:#b42318;font-weight:600}.pass{color:#067647;font-weight:600}
#labels{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:10px}
#labels button{padding:6px 12px;border:1px solid #c5ccd6;border-radius:4px;background:#fff;cursor:pointer;font-size:14px}
#labels button.on{background:#1d2430;color:#fff;border-color:#1d2430}
#labels kbd{font-size:11px;opacity:.7;margin-right:4px}
select,textarea{width:100%;padding:5px;border:1px solid #c5ccd6;border-radius:4px;font:inherit;margin:2px 0 10px}
textarea{min-height:70px}
#submit{padding:7px 16px;background:#1d2430;color:#fff;border:0;border-radius:4px;font-size:14px;cursor:pointer}
#skip{padding:7px 12px;background:#fff;border:1px solid #c5ccd6;border-radius:4px;cursor:pointer;margin-left:6px}
#status{margin-top:8px;min-height:1.4em;font-size:13px}
#status.error{color:#b42318}
#empty{padding:60px 20px;text-align:center;color:#5b6573;font-size:16px}
#help{font-size:12px}#help td:first-child{white-space:nowrap;font-family:ui-monospace,monospace}
kbd{border:1px solid #c5ccd6;border-bottom-width:2px;border-radius:3px;padding:0 4px;background:#f8f9fb;font-size:12px}
.hidden{display:none}
"""

# Every value from the store goes through text() / textContent; nothing is ever assigned as HTML.
_JS = r"""
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const initial = JSON.parse($("initial").textContent);
  const state = {item: initial.item, pending: initial.pending, label: null, busy: false,
                 scorer: initial.scorer, route: initial.route};
  const text = (tag, value, cls) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value == null ? "" : String(value);
    return el;
  };
  const clear = (el) => { while (el.firstChild) el.removeChild(el.firstChild); return el; };
  const status = (message, isError) => { const s = $("status"); s.textContent = message || ""; s.className = isError ? "error" : ""; };

  $("reviewer").value = localStorage.getItem("sluicegate.reviewer") || "";
  $("reviewer").addEventListener("change", () => localStorage.setItem("sluicegate.reviewer", $("reviewer").value.trim()));

  function query(after) {
    const q = new URLSearchParams();
    if (state.scorer) q.set("scorer", state.scorer);
    if (state.route) q.set("route", state.route);
    if (after) q.set("after", after);
    const s = q.toString();
    return "/v1/review/next" + (s ? "?" + s : "");
  }

  function calls(list, into) {
    for (const c of list || []) into.appendChild(text("pre", (c.name || "?") + "(" + (c.arguments || "") + ")"));
  }

  function renderMessages(record) {
    const box = clear($("messages"));
    if (!record) { box.appendChild(text("p", "The record is not in the store (yet).", "meta")); return; }
    if (!record.text_captured) { box.appendChild(text("p", "No text was captured (capture: refs_only).", "meta")); return; }
    if (!record.messages.length) box.appendChild(text("p", "(no messages)", "meta"));
    for (const m of record.messages) {
      const div = document.createElement("div");
      div.className = "msg " + (m.role || "");
      div.appendChild(text("div", (m.role || "?") + (m.name ? " · " + m.name : "") + (m.tool_call_id ? " · " + m.tool_call_id : ""), "role"));
      if (m.text != null && m.text !== "") div.appendChild(text("div", m.text, "text"));
      calls(m.tool_calls, div);
      box.appendChild(div);
    }
  }

  function renderAnswer(record) {
    const box = clear($("answer"));
    if (!record) return;
    const a = record.answer || {};
    if (a.text) box.appendChild(text("div", a.text, "text"));
    if (a.refusal) box.appendChild(text("div", "refusal: " + a.refusal, "text fail"));
    calls(a.tool_calls, box);
    if (!a.text && !a.refusal && !(a.tool_calls || []).length)
      box.appendChild(text("p", record.text_captured ? "(empty answer)" : "No text was captured (capture: refs_only).", "meta"));
    const meta = document.createElement("div");
    meta.className = "meta";
    for (const [k, v] of [["finish", a.finish_reason], ["outcome", record.outcome], ["status", record.status],
                          ["latency", record.latency_ms == null ? null : Math.round(record.latency_ms) + " ms"]])
      if (v != null) meta.appendChild(text("span", k + ": " + v));
    box.appendChild(meta);
  }

  function renderTable(id, rows, columns, empty) {
    const box = clear($(id));
    if (!rows.length) { box.appendChild(text("p", empty, "meta")); return; }
    const table = document.createElement("table");
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const [value, cls] of columns(row)) tr.appendChild(text("td", value, cls));
      table.appendChild(tr);
    }
    box.appendChild(table);
  }

  function renderLabels(item) {
    const box = clear($("labels"));
    item.labels.forEach((label, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.label = label;
      if (i < 9) b.appendChild(text("kbd", String(i + 1)));
      b.appendChild(document.createTextNode(label));
      b.addEventListener("click", () => choose(label));
      box.appendChild(b);
    });
    const sel = clear($("taxonomy"));
    sel.appendChild(text("option", "(no taxonomy class)"));
    sel.firstChild.value = "";
    for (const c of item.taxonomy) {
      const o = text("option", c.name + " (" + c.severity + ")" + (c.description ? " - " + c.description : ""));
      o.value = c.name;
      sel.appendChild(o);
    }
  }

  function choose(label) {
    if (!state.item || !state.item.labels.includes(label)) return;
    state.label = label;
    for (const b of $("labels").children) b.classList.toggle("on", b.dataset.label === label);
    status("");
  }

  function render() {
    $("pending").textContent = state.pending + " pending";
    const item = state.item;
    $("empty").classList.toggle("hidden", !!item);
    $("work").classList.toggle("hidden", !item);
    state.label = null;
    $("note").value = "";
    if (!item) { document.title = "Review - queue empty"; return; }
    document.title = "Review (" + state.pending + ")";
    const r = item.record;
    const meta = clear($("meta"));
    for (const [k, v] of [["route", item.route], ["variant", item.variant], ["model", r && (r.model_served || r.model_requested)],
                          ["queued because", item.reason], ["scorer", item.scorer], ["request", item.request_id],
                          ["capture", r && r.capture]])
      if (v != null) meta.appendChild(text("span", k + ": " + v));
    renderMessages(r);
    renderAnswer(r);
    renderTable("guards", (r && r.guards) || [], (g) => [[g.guard], [g.passed ? "pass" : "fail", g.passed ? "pass" : "fail"],
      [g.taxonomy], [g.severity], [g.detail]], "No guard failed.");
    renderTable("scores", item.scores, (s) => [[s.scorer + " (" + s.kind + ")"], [s.label, s.label === "pass" ? "pass" : s.label === "fail" ? "fail" : ""],
      [s.taxonomy || ""], [s.confidence == null ? "" : "conf " + s.confidence], [s.reason || s.error || ""]], "No other scores.");
    renderLabels(item);
  }

  async function load(after) {
    state.busy = true;
    try {
      let res = await fetch(query(after), {headers: {accept: "application/json"}});
      if (res.status === 204 && after && Number(res.headers.get("x-sluicegate-review-pending")) > 0)
        res = await fetch(query(null), {headers: {accept: "application/json"}});  // wrap around past skips
      state.pending = Number(res.headers.get("x-sluicegate-review-pending") || 0);
      if (res.status === 204) state.item = null;
      else if (res.ok) state.item = await res.json();
      else { status(await errorText(res), true); return; }
      render();
    } catch (e) {
      status("cannot reach the gateway: " + e, true);
    } finally {
      state.busy = false;
    }
  }

  async function errorText(res) {
    try { const body = await res.json(); return (body.error && body.error.message) || res.statusText; }
    catch (e) { return res.status + " " + res.statusText; }
  }

  async function submit() {
    const item = state.item;
    if (!item || state.busy) return;
    if (!state.label) { status("Choose a label first (" + item.labels.map((l, i) => (i + 1) + " " + l).join(", ") + ").", true); return; }
    const reviewer = $("reviewer").value.trim();
    if (!reviewer) { status("Enter your name as reviewer first (press r).", true); $("reviewer").focus(); return; }
    localStorage.setItem("sluicegate.reviewer", reviewer);
    const body = {label: state.label, reviewer: reviewer};
    if ($("taxonomy").value) body.taxonomy = $("taxonomy").value;
    if ($("note").value.trim()) body.note = $("note").value.trim();
    state.busy = true;
    let res;
    try {
      res = await fetch("/v1/review/" + encodeURIComponent(item.id), {method: "POST",
        headers: {"content-type": "application/json", "x-sluicegate-csrf": initial.csrf}, body: JSON.stringify(body)});
    } catch (e) {
      state.busy = false;
      status("cannot reach the gateway: " + e, true);
      return;
    }
    state.busy = false;
    if (!res.ok) { status(await errorText(res), true); return; }
    const saved = await res.json();
    document.activeElement && document.activeElement.blur();
    await load(item.id);
    status("Saved '" + saved.label + "' for " + item.request_id + (saved.replaced ? " (replaced '" + saved.replaced.label + "')" : "") + ".");
  }

  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", () => state.item && load(state.item.id));
  $("reload").addEventListener("click", () => load(null));
  $("again").addEventListener("click", () => load(null));

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const field = e.target.closest && e.target.closest("input, textarea, select");
    if (e.key === "Escape") { if (field) field.blur(); return; }
    if (e.key === "Enter") {
      if (field && field.tagName === "TEXTAREA" && e.shiftKey) return;
      if (field && field.id === "reviewer") { field.blur(); }
      if (field && field.tagName === "SELECT") { field.blur(); }
      if (["skip", "reload", "again"].includes(e.target.id)) return;  // Enter presses those buttons
      e.preventDefault();
      submit();
      return;
    }
    if (field) return;  // typing in a field: letters are text, not shortcuts
    const item = state.item;
    if (e.key === "?") { $("help").classList.toggle("hidden"); e.preventDefault(); return; }
    if (!item) { if (e.key === "s") load(null); return; }
    if (/^[1-9]$/.test(e.key)) { const label = item.labels[Number(e.key) - 1]; if (label) choose(label); e.preventDefault(); return; }
    switch (e.key) {
      case "p": choose("pass"); break;
      case "f": choose("fail"); break;
      case "t": $("taxonomy").focus(); break;
      case "n": $("note").focus(); break;
      case "r": $("reviewer").focus(); break;
      case "s": load(item.id); break;
      default: return;
    }
    e.preventDefault();
  });

  render();
})();
"""


def _help_rows() -> str:
    return "".join(f"<tr><td><kbd>{html.escape(key)}</kbd></td><td>{html.escape(what)}</td></tr>"
                   for key, what in SHORTCUTS)


def _page(initial: dict[str, object], nonce: str, scorer: str | None, route: str | None) -> str:
    filters = " ".join(f"{name}: {html.escape(value)}" for name, value in (("scorer", scorer), ("route", route)) if value)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>Review - Sluicegate</title>
<style nonce="{nonce}">{_CSS}</style>
</head>
<body>
<header>
  <h1>Sluicegate review</h1>
  <span class="meta">{filters}</span>
  <label>reviewer <input id="reviewer" autocomplete="username" placeholder="your name"></label>
  <button id="reload" type="button">reload</button>
  <span id="pending"></span>
</header>
<div id="empty" class="hidden">Queue empty: nothing is waiting for review. <button id="again" type="button">check again</button></div>
<main id="work" class="hidden">
  <div>
    <section><h2>Item</h2><div id="meta" class="meta"></div></section>
    <section><h2>Request</h2><div id="messages"></div></section>
    <section><h2>Answer</h2><div id="answer"></div></section>
    <section><h2>Guards</h2><div id="guards"></div></section>
    <section><h2>Other scores</h2><div id="scores"></div></section>
  </div>
  <div>
    <section>
      <h2>Label</h2>
      <div id="labels"></div>
      <label for="taxonomy">taxonomy class <kbd>t</kbd></label>
      <select id="taxonomy"></select>
      <label for="note">note <kbd>n</kbd></label>
      <textarea id="note" placeholder="why (optional)"></textarea>
      <button id="submit" type="button">Submit <kbd>Enter</kbd></button><button id="skip" type="button">Skip <kbd>s</kbd></button>
      <div id="status" role="status"></div>
    </section>
    <section><h2>Keyboard shortcuts</h2><table id="help">{_help_rows()}</table></section>
  </div>
</main>
<script id="initial" type="application/json">{script_json(initial)}</script>
<script nonce="{nonce}">{_JS}</script>
</body>
</html>
"""


async def review_page(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    scorer = request.query_params.get("scorer") or None
    route = request.query_params.get("route") or None
    try:
        item, pending = await next_item(gateway, scorer=scorer, route=route)
    except SluicegateError as exc:
        return error_response(exc)
    nonce = secrets.token_urlsafe(16)
    # the token the label POST sends in x-sluicegate-csrf (needed when the browser logged in with Basic)
    initial = {"item": item, "pending": pending, "scorer": scorer, "route": route,
               "csrf": csrf_token(request.headers, API_ACTION)}
    body = _page(initial, nonce, scorer, route)
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
           "img-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
    # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with the label's POST,
    # which the cross-site check refuses; nothing is sent to another site either way
    headers = {"content-security-policy": csp, "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
               "cache-control": "no-store", "x-frame-options": "DENY"}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)
