"""The results file: JSON lines, a run header first, then one line per finished item, appended as it
finishes and flushed at once.

It is what makes a replay resumable: a run that is stopped (Ctrl-C, a killed CI job, a crash) has
written every item it finished, and a re-run with the same `--out` skips those items. Only items
whose latest line is an error item (the upstream kept failing) are tried again. A line cut short
by a kill in the middle of a write is dropped when the file is reopened (the file is truncated to
its last complete line), so the next line never lands glued to a broken one.

The header names what was compared (variant, baseline, whether the judge ran): a re-run with other
settings is refused rather than mixing two different comparisons in one file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from proxy.replay._model import ItemResult

__all__ = ["RESULTS_KIND", "RESULTS_VERSION", "ResultsFile", "ResultsMismatch", "default_out", "new_header",
           "results_of"]

RESULTS_KIND = "sluicegate.replay"
RESULTS_VERSION = 1
_COMPARED = ("variant", "baseline", "judge")  # header keys that must match for a resume


class ResultsMismatch(ValueError):
    """The results file holds another comparison (or is not a results file)."""


def default_out(corpus: str | Path, variant: str) -> Path:
    """`<corpus>.replay-<variant>.jsonl` next to the corpus (a `.jsonl` suffix of the corpus is dropped)."""
    path = Path(corpus)
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.replay-{variant}.jsonl")


def _truncate_partial_line(path: Path) -> None:
    """Cut a last line that has no newline (a write interrupted by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        block = 65536
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            at = chunk.rfind(b"\n")
            if at != -1:
                fh.truncate(start + at + 1)
                return
            end = start
        fh.truncate(0)


class ResultsFile:
    """Open with `ResultsFile.open(path, header)`; `previous` holds the items already done (the latest
    line per record id, answers left out); `append(result)` writes and flushes one line."""

    def __init__(self, path: Path, fh: IO[bytes], header: dict[str, Any], previous: dict[str, ItemResult]) -> None:
        self.path = path
        self.header = header
        self.previous = previous
        self._fh: IO[bytes] | None = fh

    @classmethod
    def open(cls, path: str | Path, header: dict[str, Any]) -> ResultsFile:
        """Create the file (header line) or reopen it to resume. Raises ResultsMismatch when it holds
        another comparison."""
        path = Path(path)
        previous: dict[str, ItemResult] = {}
        if path.exists() and path.stat().st_size > 0:
            _truncate_partial_line(path)
        if path.exists() and path.stat().st_size > 0:
            found = None
            with open(path, "rb") as existing:
                for number, line in enumerate(existing, start=1):
                    if not line.strip():
                        continue
                    try:
                        data = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise ResultsMismatch(f"{path}:{number}: not JSON; this is not a replay results file "
                                              "(pass another --out)") from None
                    if found is None:
                        found = data
                        _check_header(path, data, header)
                        continue
                    if isinstance(data, dict) and data.get("kind") == "item":
                        result = ItemResult.from_dict(data)
                        previous[result.record_id] = result  # the latest line of a record wins
            if found is None:
                path.write_bytes(b"")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "ab")
        if fh.tell() == 0:
            fh.write(orjson.dumps({**header, "kind": RESULTS_KIND, "version": RESULTS_VERSION}) + b"\n")
            fh.flush()
        return cls(path, fh, header, previous)

    def done(self) -> set[str]:
        """Record ids finished in an earlier run (error items are not: they are tried again)."""
        return {rid for rid, r in self.previous.items() if not r.error}

    def append(self, result: ItemResult) -> None:
        if self._fh is None:
            raise RuntimeError("results file is closed")
        self._fh.write(orjson.dumps(result.to_dict()) + b"\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _check_header(path: Path, found: Any, header: dict[str, Any]) -> None:
    if not isinstance(found, dict) or found.get("kind") != RESULTS_KIND:
        raise ResultsMismatch(f"{path}: not a replay results file (its first line's kind is not "
                              f"{RESULTS_KIND!r}); pass another --out")
    if found.get("version") != RESULTS_VERSION:
        raise ResultsMismatch(f"{path}: results version {found.get('version')!r}; this sluicegate writes "
                              f"version {RESULTS_VERSION} (pass another --out)")
    differ = [k for k in _COMPARED if found.get(k) != header.get(k)]
    if differ:
        was = ", ".join(f"{k}={found.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={header.get(k)!r}" for k in differ)
        raise ResultsMismatch(f"{path} holds a replay with {was}, not {now}: pass another --out (or delete the "
                              "file to start over)")


def new_header(corpus: str | Path, variant: str, baseline: str, judge: bool) -> dict[str, Any]:
    return {"corpus": str(corpus), "variant": variant, "baseline": baseline, "judge": judge,
            "started_at": time.time()}


def results_of(ids: Iterable[str], results: dict[str, ItemResult]) -> list[ItemResult]:
    """The results of the corpus's items, in corpus order (results of other ids are ignored)."""
    return [results[rid] for rid in ids if rid in results]
