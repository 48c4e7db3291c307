"""Regression corpus: a labeled, deduplicated, stratified sample of a route's real traffic.

`build_corpus` reads a route's served records (never shadows) in a time window and writes a JSON
lines file: a `CorpusHeader` (version, source, filters, counts per stratum), then one `CorpusItem`
per record — the request as the capture mode kept it, the pinned params, and the original
variant's answer, guard results, scores and latest outcomes as the baseline a replay compares with.

- **Strata** `route|template_ref|tools|class`: class is the record's worst failure
  (`guard:<taxonomy>`, `score:<taxonomy or label>`, `outcome:<metric>`) or `ok`
  (`proxy.corpus._classify`).
- **Selection**: every failure stratum up to `per_class_quota` items (with `include_failures`, the
  default), the rest of `size` from the `ok` strata in proportion to their traffic, drawn with a
  fixed seed (`proxy.corpus._select`).
- **Deduplication**: one record per request hash, then one per normalized text (near duplicates);
  the worse failure class is the one kept.
- **Capture**: `refs_only` records hold no text: they are counted, never written. With a policy,
  the route's current mode applies when it is stricter than the record's.

`read_corpus` / `iter_items` / `read_header` read a file back (a replay's input); `write_corpus`
writes one.
"""

from proxy.corpus._build import DEFAULT_PER_CLASS_QUOTA, BuildOptions, Progress, build_corpus, public_url
from proxy.corpus._classify import (
    Classifier,
    CorpusPolicy,
    effective_capture,
    near_duplicate_key,
    normalize_text,
    stratum_key,
)
from proxy.corpus._io import CorpusFormatError, CorpusWriter, iter_items, read_corpus, read_header, write_corpus
from proxy.corpus._model import (
    CORPUS_KIND,
    CORPUS_VERSION,
    Baseline,
    CorpusCounts,
    CorpusFilters,
    CorpusHeader,
    CorpusItem,
    CorpusSource,
    OutcomeValue,
    ScoreResult,
    StratumCounts,
)
from proxy.corpus._select import allocate
from proxy.corpus._show import count_items, render_summary, show_corpus

__all__ = [
    "CORPUS_KIND",
    "CORPUS_VERSION",
    "DEFAULT_PER_CLASS_QUOTA",
    "Baseline",
    "BuildOptions",
    "Classifier",
    "CorpusCounts",
    "CorpusFilters",
    "CorpusFormatError",
    "CorpusHeader",
    "CorpusItem",
    "CorpusPolicy",
    "CorpusSource",
    "CorpusWriter",
    "OutcomeValue",
    "Progress",
    "ScoreResult",
    "StratumCounts",
    "allocate",
    "count_items",
    "build_corpus",
    "effective_capture",
    "iter_items",
    "near_duplicate_key",
    "normalize_text",
    "public_url",
    "read_corpus",
    "read_header",
    "render_summary",
    "show_corpus",
    "stratum_key",
    "write_corpus",
]
