"""Measurements for the records module (not a test: timings are reported, never asserted).

    .venv/bin/python tests/records/bench_records.py            # all
    .venv/bin/python tests/records/bench_records.py submit store redact convert

Prints the cost of Recorder.submit(), the write rate into SQLite (batches of 500), the recorder's
end-to-end rate, the cost of redaction per KB, and the record -> row conversion options.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import orjson

from proxy.records import Record, Recorder, new_id, open_store, redact_text


def make_record(i: int) -> Record:
    """A realistic ~2 KB record: a chat request and answer in full capture."""
    from bench.recorder import make_record as bench_record

    return bench_record(i, capture="full")


def best_of(runs: list[float]) -> str:
    return f"median {statistics.median(runs):.3g}, best {min(runs):.3g}"


def bench_submit() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            store = open_store(f"sqlite:///{d}/r.db")
            await store.open()
            recs = [make_record(i) for i in range(100_000)]
            runs = []
            for _ in range(5):  # writer not running, buffer large enough: the pure request-path cost
                r = Recorder(store, spill_path=Path(d) / "spill.jsonl", buffer_size=200_000)
                t = time.perf_counter()
                for rec in recs:
                    r.submit(rec)
                runs.append((time.perf_counter() - t) / len(recs) * 1e6)
            print(f"submit(), writer idle:      {best_of(runs)} µs per call (100,000 calls x5)")
            # with the writer running: an open-loop offered load of 5,000 records/s for 2 s
            r = Recorder(store, spill_path=Path(d) / "spill.jsonl")
            await r.start()
            spent = 0.0
            it = iter(recs)
            for _ in range(400):
                t = time.perf_counter()
                for _ in range(25):
                    r.submit(next(it))
                spent += time.perf_counter() - t
                await asyncio.sleep(0.005)
            await r.flush()
            print(f"submit(), writer running:   {spent / 10_000 * 1e6:.3g} µs per call at 5,000 records/s offered "
                  f"({r.stats()['written']} written, {r.stats()['spilled']} spilled)")
            await r.stop()
            # drain rate: 50,000 records submitted at once (buffer big enough), until all are stored
            r = Recorder(store, spill_path=Path(d) / "spill.jsonl", buffer_size=100_000)
            await r.start()
            t = time.perf_counter()
            for rec in recs[10_000:60_000]:
                r.submit(rec)
            await r.flush()
            dt = time.perf_counter() - t
            print(f"recorder end to end:        {50_000 / dt:,.0f} records/s (50,000 submitted at once, batch 500, "
                  f"{r.stats()['written']} written, {r.stats()['spilled']} spilled)")
            await r.stop()
            await store.close()
    asyncio.run(main())


def bench_store() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            store = open_store(f"sqlite:///{d}/r.db")
            await store.open()
            recs = [make_record(i) for i in range(50_000)]
            print(f"record size: {len(orjson.dumps(recs[0])):,} bytes of JSON")
            t = time.perf_counter()
            for i in range(0, len(recs), 500):
                await store.write_records(recs[i:i + 500])
            dt = time.perf_counter() - t
            print(f"SQLiteStore.write_records, batch 500: {len(recs) / dt:,.0f} records/s "
                  f"({dt / (len(recs) / 500) * 1000:.1f} ms per batch; {len(recs):,} records into a fresh file)")
            t = time.perf_counter()
            rows = await store.query_records(limit=10_000)
            dt = time.perf_counter() - t
            print(f"query_records(limit=10000): {len(rows) / dt:,.0f} records/s")
            await store.close()
    asyncio.run(main())


def bench_redact() -> None:
    prose = ("The quick brown fox jumps over the lazy dog while the committee discusses the quarterly "
             "roadmap, budget allocations and hiring plans for next year. A well-known issue remains. ") * 12
    prose = prose[:1024]
    prose_digits = (prose[:500] + " in 2024 we shipped 3 releases and 12 fixes (see item 42) " + prose[500:])[:1024]
    code = ("@dataclass\nclass Foo:\n    x: int = 0  # default\n    def bar(self, y_value):\n"
            "        return self.x + y_value * 2\n" * 12)[:1024]
    pii = ("Customer jane.doe@example.com paid with 4111 1111 1111 1111, tel 555-123-4567. " * 14)[:1024]
    for name, text in [("prose, no digits", prose), ("prose with numbers", prose_digits),
                       ("python code", code), ("dense PII", pii)]:
        n = 20_000
        runs = [timeit.timeit(lambda: redact_text(text), number=n) / n * 1e6 for _ in range(5)]
        print(f"redact_text, 1 KB {name:20s}: {best_of(runs)} µs")


def bench_convert() -> None:
    rec = make_record(1)
    names = [f.name for f in dataclasses.fields(Record)]
    getter = operator.attrgetter(*names)
    n = 20_000
    for label, fn in [
        ("dataclasses.asdict", lambda: dataclasses.asdict(rec)),
        ("orjson.loads(orjson.dumps(rec))", lambda: orjson.loads(orjson.dumps(rec))),
        ("dict(zip(names, attrgetter(rec)))", lambda: dict(zip(names, getter(rec)))),
        ("orjson.dumps(rec) (what the store does)", lambda: orjson.dumps(rec)),
    ]:
        runs = [timeit.timeit(fn, number=n) / n * 1e6 for _ in range(3)]
        print(f"record -> row, {label:42s}: {best_of(runs)} µs")


if __name__ == "__main__":
    which = sys.argv[1:] or ["submit", "store", "redact", "convert"]
    for name in which:
        globals()[f"bench_{name}"]()
