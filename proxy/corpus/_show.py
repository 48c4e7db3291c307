"""`sluicegate corpus show`: a corpus header's make-up as a terminal table.

Read from the header alone (plus a count of the file's item lines, to catch a file edited or cut
after it was written), so showing a large corpus costs one pass over its lines and no parsing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from proxy.corpus._io import read_header
from proxy.corpus._model import CorpusHeader

__all__ = ["count_items", "render_summary", "show_corpus"]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _n(value: int) -> str:
    return f"{value:,}"


def count_items(path: str | Path) -> int:
    """Non-empty lines after the header."""
    with open(path, "rb") as fh:
        fh.readline()
        return sum(1 for line in fh if line.strip())


def render_summary(header: CorpusHeader, *, name: str = "corpus", items_in_file: int | None = None) -> str:
    """The header as text: source, filters, totals, then one row per stratum (failures first)."""
    f, c = header.filters, header.counts
    lines = [
        f"{name}: {header.kind} v{header.version}, {_n(c.selected)} items",
        f"  source   {header.source.store}, built {_when(header.source.built_at)}"
        + (f", policy {header.source.policy_version}" if header.source.policy_version else ""),
        f"  filters  route {f.route}, since {_when(f.since)}, until {_when(f.until)}, size {_n(f.size)}, "
        f"per-class quota {_n(f.per_class_quota)}, failures {'included' if f.include_failures else 'excluded'}, "
        f"seed {f.seed}",
        f"  records  {_n(c.records_scanned)} scanned, {_n(c.replayable)} replayable, "
        f"{_n(c.refs_only_skipped)} refs_only skipped, {_n(c.no_request_skipped)} without a request, "
        f"{_n(c.duplicates)} duplicates, {_n(c.near_duplicates)} near-duplicates, {_n(c.selected)} selected",
    ]
    failures = sum(s.selected for k, s in c.strata.items() if not k.endswith("|ok"))
    lines.append(f"  items    {_n(failures)} from failure strata, {_n(c.selected - failures)} routine (ok)")
    if items_in_file is not None and items_in_file != c.selected:
        lines.append(f"  WARNING  the file has {_n(items_in_file)} item lines, the header says {_n(c.selected)}")
    rows = sorted(c.strata.items(), key=lambda kv: (kv[0].endswith("|ok"), kv[0]))
    columns = ("available", "selected", "dups", "near", "refs_only")
    width = max([len("stratum"), *(len(k) for k, _ in rows)])
    lines.append("")
    lines.append(f"{'stratum':<{width}}  " + "  ".join(f"{h:>9}" for h in columns))
    for key, s in rows:
        values = (s.available, s.selected, s.duplicates, s.near_duplicates, s.refs_only_skipped)
        lines.append(f"{key:<{width}}  " + "  ".join(f"{_n(v):>9}" for v in values))
    totals = (sum(s.available for _, s in rows), c.selected, c.duplicates, c.near_duplicates, c.refs_only_skipped)
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{_n(v):>9}" for v in totals))
    return "\n".join(lines)


def show_corpus(path: str | Path) -> str:
    """`render_summary` of a corpus file, checked against its number of item lines."""
    return render_summary(read_header(path), name=str(path), items_in_file=count_items(path))
