// Sluicegate dashboard: the little the pages need beyond links and forms.
// Stored text is only ever put in the page with textContent, never as HTML.
(() => {
  "use strict";

  // Review queue: the review page's own script labels items; after each label (its pending
  // count changes) refresh the progress tables from the page's JSON twin.
  const pending = document.getElementById("pending");
  const progress = document.getElementById("progress");
  if (pending && progress) {
    const api = progress.dataset.api;
    const pct = (x) => (x == null ? "\u2014" : (100 * x).toFixed(1) + "%");
    const cell = (row, value) => { const td = document.createElement("td"); td.textContent = value; row.appendChild(td); };
    const fill = (id, rows, columns) => {
      const body = document.getElementById(id);
      if (!body) return;
      while (body.firstChild) body.removeChild(body.firstChild);
      for (const r of rows) { const tr = document.createElement("tr"); for (const c of columns(r)) cell(tr, c); body.appendChild(tr); }
    };
    let timer = null;
    const refresh = async () => {
      try {
        const res = await fetch(api, {headers: {accept: "application/json"}});
        if (!res.ok) return;
        const data = await res.json();
        const p = data.progress;
        document.getElementById("progress-bar").value = p.labelled;
        document.getElementById("progress-bar").max = Math.max(p.queued, 1);
        document.getElementById("progress-text").textContent = p.labelled + " of " + p.queued + " labelled (" + pct(p.done) + "), " + p.pending + " pending";
        fill("scorer-rows", data.scorers, (s) => [s.scorer, s.queued, s.labelled, s.pending, pct(s.done)]);
        fill("reviewer-rows", data.reviewers, (r) => [r.reviewer, r.labelled, r.last_24h, pct(r.share)]);
      } catch (e) { /* the queue itself reports connection problems */ }
    };
    new MutationObserver(() => { clearTimeout(timer); timer = setTimeout(refresh, 150); })
      .observe(pending, {childList: true, characterData: true, subtree: true});
  }
})();
