"""`build_corpus` and `sluicegate corpus build|show` over a synthetic store of ~50,000 records.

The store is filled once (`_synth.fill`, through the store's own write path) and built from twice:
with the API and with the CLI, both with seed 0 (they must give the same corpus). Another seed is
tested on a small store (test_corpus.py).
Expected figures come from what the generator planted, never from the corpus code.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.cli import main
from proxy.corpus import BuildOptions, CorpusHeader, CorpusItem, build_corpus, read_corpus
from proxy.corpus._queries import PAGE
from proxy.records import SQLiteStore
from tests.corpus._synth import REDACTED_DOMAIN, REFS_MARKER, ROUTE, T0, Truth, fill

SIZE = 2500
QUOTA = 40


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    db = tmp_path_factory.mktemp("corpus") / "records.db"

    async def run() -> Truth:
        store = SQLiteStore(db)
        await store.open()
        try:
            return await fill(store)
        finally:
            await store.close()

    return db, asyncio.run(run())


class _CountingStore:
    """The store, with the size of every result set it returned remembered."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.url = store.url
        self.dialect = store.dialect
        self.largest = 0

    async def fetch(self, sql: str, params: Any = (), *, lane: int = 0) -> list[tuple[Any, ...]]:
        rows = await self._store.fetch(sql, params, lane=lane)
        self.largest = max(self.largest, len(rows))
        return rows


def _build(db: Path, out: Path, seed: int) -> tuple[CorpusHeader, int, list[tuple[int, int]]]:
    scanned: list[tuple[int, int]] = []

    async def run() -> tuple[CorpusHeader, int]:
        store = SQLiteStore(db)
        await store.open()
        try:
            counting = _CountingStore(store)
            header = await build_corpus(counting, BuildOptions(route=ROUTE, size=SIZE, since=T0,
                                                               per_class_quota=QUOTA, seed=seed),
                                        out, progress=lambda n, total: scanned.append((n, total)))
            return header, counting.largest
        finally:
            await store.close()

    header, largest = asyncio.run(run())
    return header, largest, scanned


@pytest.fixture(scope="module")
def built(synth: tuple[Path, Truth]) -> dict[str, Any]:
    db, _ = synth
    out = db.parent / "seed0.jsonl"
    header, largest, scanned = _build(db, out, seed=0)
    read_header, items = read_corpus(out)
    return {"path": out, "header": header, "read_header": read_header, "items": items, "largest": largest,
            "scanned": scanned}


@pytest.fixture(scope="module")
def cli_built(synth: tuple[Path, Truth]) -> dict[str, Any]:
    db, _ = synth
    out = db.parent / "cli.jsonl"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["corpus", "build", "--store", f"sqlite:///{db}", "--route", ROUTE, "--since", str(T0),
                     "--size", str(SIZE), "--per-class-quota", str(QUOTA), "--seed", "0", "--out", str(out)])
    return {"path": out, "code": code, "stderr": err.getvalue()}


def _stored_rows(db: Path, ids: list[str]) -> dict[str, dict[str, Any]]:
    async def run() -> dict[str, dict[str, Any]]:
        store = SQLiteStore(db)
        await store.open()
        try:
            out = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = await store.fetch(f"SELECT id, data FROM records WHERE id IN ({', '.join('?' * len(chunk))})",
                                         chunk)
                out.update({rid: orjson.loads(data) for rid, data in rows})
            return out
        finally:
            await store.close()

    return asyncio.run(run())


def _is_failure(key: str) -> bool:
    return not key.endswith("|ok")


def _user_text(item: CorpusItem) -> str:
    return " ".join(m["content"] for m in item.request["messages"] if m["role"] in ("system", "user"))


# --- the tests ---------------------------------------------------------------------------------


def test_failure_strata_get_their_quota_and_routine_strata_share_the_rest_by_traffic(built, synth) -> None:
    _, truth = synth
    strata = built["header"].counts.strata
    failures = {k: s for k, s in strata.items() if _is_failure(k)}
    routine = {k: s for k, s in strata.items() if not _is_failure(k)}
    assert len(failures) >= 30 and len(routine) == 6
    assert any(s.available > QUOTA for s in failures.values()) and any(s.available < QUOTA for s in failures.values())
    for key, s in failures.items():
        assert s.selected == min(s.available, QUOTA), key
    taken = sum(s.selected for s in failures.values())
    left = SIZE - taken
    total = sum(s.available for s in routine.values())
    assert sum(s.selected for s in routine.values()) == left
    for key, s in routine.items():
        assert abs(s.selected - left * s.available / total) < 1, key
    # every item is in the stratum its planted guard / score / outcome says, by the documented order
    for item in built["items"]:
        assert item.stratum == truth.stratum(item.record_id), item.record_id
        assert item.baseline.failure_class == item.stratum.rsplit("|", 1)[1]
    # what is available per stratum is what was planted there, less the refs_only records and the
    # one record each planted duplicate removes (duplicates are `ok`, their originals replayable)
    expected: Counter[str] = Counter()
    for rid, facts in truth.served.items():
        if facts["capture"] != "refs_only":
            expected[truth.stratum(rid)] += 1
        if facts["kind"] in ("dup", "near"):
            expected[truth.stratum(rid)] -= 1
    assert {k: s.available for k, s in strata.items() if s.available} == {k: n for k, n in expected.items() if n}


def test_exact_and_near_duplicates_are_removed_keeping_the_worse_class(built, synth) -> None:
    _, truth = synth
    counts = built["header"].counts
    assert counts.duplicates == truth.duplicates > 1000
    assert counts.near_duplicates == truth.near_duplicates > 1000
    items = built["items"]
    hashes = [item.request_hash for item in items]
    assert None not in hashes and len(set(hashes)) == len(hashes)
    texts = [re.sub(r"[^a-z]+", " ", _user_text(item).lower()).split() for item in items]
    assert len({tuple(t) for t in texts}) == len(texts)
    # a duplicate only made it when its original was routine: a failing original always wins
    kept_copies = [item for item in items if truth.served[item.record_id]["kind"] != "unique"]
    assert kept_copies
    for item in kept_copies:
        assert truth.served[truth.served[item.record_id]["source"]]["cls"] == "ok"


def test_refs_only_records_are_counted_and_no_text_of_theirs_is_written(built, synth) -> None:
    _, truth = synth
    raw = built["path"].read_bytes()
    assert REFS_MARKER.encode() not in raw
    refs_only = {rid for rid, f in truth.served.items() if f["capture"] == "refs_only"}
    mentioned = set(re.findall(rb'"(?:req-)?(m\d{6})"', raw))
    assert mentioned and not ({m.decode() for m in mentioned} & refs_only)
    assert all(item.capture in ("full", "redacted") for item in built["items"])
    counts = built["header"].counts
    assert counts.refs_only_skipped == len(refs_only) > 3000
    per_stratum = Counter(truth.stratum(rid) for rid in refs_only)
    assert {k: s.refs_only_skipped for k, s in counts.strata.items() if s.refs_only_skipped} == dict(per_stratum)


def test_redacted_items_carry_exactly_what_the_record_holds(built, synth) -> None:
    db, truth = synth
    items = built["items"]
    raw = built["path"].read_bytes()
    assert REDACTED_DOMAIN.encode() not in raw
    redacted = [item for item in items if item.capture == "redacted"]
    assert len(redacted) > 300 and any("[EMAIL]" in _user_text(item) for item in redacted)
    stored = _stored_rows(db, [item.record_id for item in items])
    for item in items:
        row = stored[item.record_id]
        assert item.capture == row["capture"] == truth.served[item.record_id]["capture"]
        assert item.request == row["request"]
        assert item.baseline.response == row["response"]
        assert item.baseline.guards == row["guards"]
        assert item.params == row["params"] and item.model == row["model_requested"]
        assert item.request_hash == row["request_hash"]


def test_header_counts_equal_the_lines_and_add_up(built, synth) -> None:
    _, truth = synth
    path, header = built["path"], built["header"]
    lines = path.read_bytes().splitlines()
    assert orjson.loads(lines[0]) == header.to_dict() == built["read_header"].to_dict()
    c = header.counts
    assert c.selected == len(lines) - 1 == len(built["items"]) == SIZE
    assert {k: s.selected for k, s in c.strata.items() if s.selected} == Counter(i.stratum for i in built["items"])
    assert c.records_scanned == len(truth.served) == built["scanned"][-1][0]
    assert c.records_scanned == c.refs_only_skipped + c.no_request_skipped + c.replayable
    assert c.replayable == c.duplicates + c.near_duplicates + sum(s.available for s in c.strata.values())
    assert c.duplicates == sum(s.duplicates for s in c.strata.values())
    assert c.near_duplicates == sum(s.near_duplicates for s in c.strata.values())
    assert c.refs_only_skipped == sum(s.refs_only_skipped for s in c.strata.values())
    f = header.filters
    assert (f.route, f.since, f.until, f.size, f.per_class_quota, f.include_failures, f.seed) == \
        (ROUTE, T0, None, SIZE, QUOTA, True, 0)


def test_only_served_non_shadow_records_of_the_route_in_the_window_become_items(built, synth) -> None:
    _, truth = synth
    ids = {item.record_id for item in built["items"]}
    assert ids <= set(truth.served) and not (ids & truth.excluded_ids)
    for item in built["items"]:
        assert item.route == ROUTE and item.started_at >= T0
        assert item.variant == truth.served[item.record_id]["variant"]  # a fallback: the variant that served


def test_records_are_read_in_pages_never_all_at_once_with_progress(built, synth) -> None:
    assert built["largest"] <= PAGE
    scanned = [n for n, _ in built["scanned"]]
    assert len(scanned) >= 80 and scanned == sorted(scanned)
    assert {total for _, total in built["scanned"]} == {len(synth[1].served)}


def test_cli_build_writes_the_corpus_and_show_prints_its_make_up(cli_built, capsys) -> None:
    assert cli_built["code"] == 0
    header, items = read_corpus(cli_built["path"])
    assert header.counts.selected == len(items) == SIZE
    *progress, summary = cli_built["stderr"].strip().splitlines()
    assert summary.startswith(f"corpus: {SIZE:,} items") and str(cli_built["path"]) in summary
    total = header.counts.records_scanned
    assert len(progress) == 10 and progress[-1] == f"corpus: scanned {total:,} of {total:,} records"
    assert main(["corpus", "show", str(cli_built["path"])]) == 0
    shown = capsys.readouterr().out
    assert f"{SIZE:,} items" in shown and f"route {ROUTE}" in shown
    for key, s in header.counts.strata.items():
        line = next(row for row in shown.splitlines() if row.startswith(key + " "))
        assert line.split()[1:] == [f"{s.available:,}", f"{s.selected:,}", f"{s.duplicates:,}",
                                    f"{s.near_duplicates:,}", f"{s.refs_only_skipped:,}"]
    assert main(["corpus", "show", "--json", str(cli_built["path"])]) == 0
    assert orjson.loads(capsys.readouterr().out) == header.to_dict()


def test_the_same_seed_builds_the_same_corpus(built, cli_built) -> None:
    api_lines = built["path"].read_bytes().splitlines()
    cli_lines = cli_built["path"].read_bytes().splitlines()
    assert api_lines[1:] == cli_lines[1:]
    api_head, cli_head = orjson.loads(api_lines[0]), orjson.loads(cli_lines[0])
    for head in (api_head, cli_head):
        head["source"].pop("built_at")
        head["source"].pop("store")
    assert api_head == cli_head
