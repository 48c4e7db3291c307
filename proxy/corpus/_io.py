"""Reading and writing corpus files: JSON lines, the header first, then one item per line.

The writer makes the header's `selected` counts equal to the items it actually wrote (total and per
stratum), so a header can never claim lines the file does not have. Items are spooled (in memory up
to a bound, then a temporary file) before the header is written, and a file target is written to a
sibling temporary file and renamed into place: a build interrupted half-way never leaves a
truncated corpus behind a valid-looking header.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from proxy.corpus._model import CORPUS_KIND, CORPUS_VERSION, CorpusHeader, CorpusItem, StratumCounts

__all__ = ["CorpusFormatError", "CorpusWriter", "iter_items", "read_corpus", "read_header", "write_corpus"]

_SPOOL_BYTES = 32 * 1024 * 1024  # items beyond this go to a temporary file while the header waits


class CorpusFormatError(ValueError):
    """The file is not a corpus this sluicegate can read; the message names the file and line."""


def _header_from_line(path: str, line: bytes) -> CorpusHeader:
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CorpusFormatError(f"{path}:1: the header is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != CORPUS_KIND:
        raise CorpusFormatError(f"{path}:1: not a sluicegate corpus (the first line's kind must be {CORPUS_KIND!r})")
    if data.get("version") != CORPUS_VERSION:
        raise CorpusFormatError(f"{path}:1: corpus version {data.get('version')!r}; this sluicegate reads "
                                f"version {CORPUS_VERSION}")
    try:
        return CorpusHeader.from_dict(data)
    except (TypeError, AttributeError) as exc:
        raise CorpusFormatError(f"{path}:1: not a complete corpus header ({exc})") from None


def read_header(path: str | Path) -> CorpusHeader:
    """The header of a corpus file (only its first line is read)."""
    with open(path, "rb") as fh:
        return _header_from_line(str(path), fh.readline())


def iter_items(path: str | Path) -> Iterator[CorpusItem]:
    """The items of a corpus file, one at a time (for corpora too big to hold at once)."""
    name = str(path)
    with open(path, "rb") as fh:
        _header_from_line(name, fh.readline())
        for number, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                if not isinstance(data, dict):
                    raise TypeError("an item must be a JSON object")
                yield CorpusItem.from_dict(data)
            except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
                raise CorpusFormatError(f"{name}:{number}: not a corpus item ({exc})") from None


def read_corpus(path: str | Path) -> tuple[CorpusHeader, list[CorpusItem]]:
    """The header and every item of a corpus file."""
    return read_header(path), list(iter_items(path))


def _fix_selected(header: CorpusHeader, per_stratum: dict[str, int], total: int) -> None:
    header.counts.selected = total
    for key, counts in header.counts.strata.items():
        counts.selected = per_stratum.pop(key, 0)
    for key, n in per_stratum.items():  # an item of a stratum the header did not list
        header.counts.strata[key] = StratumCounts(selected=n)


class CorpusWriter:
    """Writes a corpus whose header is only final once every item is written.

    `write(item)` spools the item; `close(header)` writes the header (its `selected` counts set to
    the items written) and then the items to `target`: a path (written to a sibling temporary file,
    then renamed into place), "-" (standard output) or a binary file object. Leaving the `with`
    block without `close` (an error) writes nothing.
    """

    def __init__(self, target: str | Path | IO[bytes]) -> None:
        self.target = target
        self.written = 0
        self._per_stratum: dict[str, int] = {}
        self._spool: IO[bytes] | None = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._discard()

    def _discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def write(self, item: CorpusItem) -> None:
        if self._spool is None:
            raise RuntimeError("corpus writer is closed")
        self._spool.write(orjson.dumps(item.to_dict()))
        self._spool.write(b"\n")
        self._per_stratum[item.stratum] = self._per_stratum.get(item.stratum, 0) + 1
        self.written += 1

    def close(self, header: CorpusHeader) -> CorpusHeader:
        """Write header and items; returns the header as written."""
        spool = self._spool
        if spool is None:
            raise RuntimeError("corpus writer is closed")
        try:
            _fix_selected(header, dict(self._per_stratum), self.written)
            head = orjson.dumps(header.to_dict()) + b"\n"
            spool.seek(0)
            target = self.target
            if isinstance(target, (str, Path)) and str(target) != "-":
                _write_file(Path(target), head, spool)
            else:
                out = sys.stdout.buffer if isinstance(target, (str, Path)) else target
                out.write(head)
                shutil.copyfileobj(spool, out)
                out.flush()
        finally:
            self._discard()
        return header


def _write_file(path: Path, head: bytes, body: IO[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            shutil.copyfileobj(body, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_corpus(target: str | Path | IO[bytes], header: CorpusHeader, items: Iterable[CorpusItem]) -> CorpusHeader:
    """Write a corpus: `target` is a path, "-" (standard output) or a binary file object.

    Returns the header as written: its `selected` counts are those of the items actually written.
    """
    with CorpusWriter(target) as writer:
        for item in items:
            writer.write(item)
        return writer.close(header)
