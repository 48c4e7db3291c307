"""The recorder scenario: the real `proxy.records.Recorder` writing into SQLite (or PostgreSQL with
`--store postgresql://…`), without a gateway.

    python -m bench.recorder [--rate 5000] [--seconds 10] [--baseline-seconds 5] [--max-records 100000]
    python -m bench.recorder --store postgresql://postgres@127.0.0.1:5432/test   # a fresh schema per part

Run once per bench (the harness pins it to the core of the system under test). Three parts, each
on a uvloop event loop like the gateway's, with the gateway's recorder settings (Recorder defaults:
buffer 10,000, batches of 500, flush every 50 ms) and a fresh SQLite file
(`open_store("sqlite:///<dir>/….db")`):

- baseline: a 1 ms asyncio ticker alone for `--baseline-seconds`, measuring how late each tick fires
  (event-loop lag: what any request waiting on the loop would wait on top of its own work);
- sustained: the same ticker submits records at `--rate` records/s (each tick submits the records
  due by then) for `--seconds`, with the writer running: written/s, backlog, spilled, dropped, and
  the loop lag again — the increase over the baseline is what the recorder adds to request latency;
- maximum: `--max-records` records submitted at once (buffer sized to hold them all), then
  `flush()`: end-to-end records/s into SQLite.

Records are built like tests/records/bench_records.py `make_record` (~2 KB, a chat request and its
answer) with `capture="redacted"`, as Sluicegate everything-on records them: the store's thread
seals them (redaction, hashing, JSON) before writing, exactly as in the gateway. They are built
before the clock starts (20,000 distinct ones, then copies with new ids). Prints one JSON object on stdout.

    python -m bench.recorder --journal        # also: sustained and maximum with `journal_path` (serve --journal)
    python -m bench.recorder --kill9 10 --rate 1000 --seconds 0 --max-records 0   # the kill -9 window

`--journal` repeats the sustained and maximum parts with the journal on (each record sealed and
appended with write(2) inside `submit`, on the event loop) and reports the cost per record and the
ratios to the plain parts of the same run. `--kill9 RUNS`: a child process runs a Recorder at
`--rate` records/s and writes each record's id to a pipe once `submit` returned (the moment a
gateway answers); after a random 0.5–1.5 s it gets SIGKILL; a fresh Recorder on the same files then
replays what was left, and every acknowledged id missing from the store is a lost record. Done
RUNS times without the journal and RUNS times with it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from proxy.records import Record, Recorder, new_id, open_store


def make_record(i: int, capture: str = "redacted") -> Record:
    """A realistic ~2 KB record (a chat request and answer); capture as everything-on's by default.
    tests/records/bench_records.py uses it too, in `full` capture."""
    return Record(
        id=new_id(), request_id=new_id(), attempt=1, attempt_reason="primary", endpoint="chat.completions",
        route="support-bot", variant="prod", provider="openai", model_requested="gpt-4o-2024-08-06",
        started_at=time.time(), params={"temperature": 0, "tool_names": ["lookup"]},
        request={"model": "support-bot", "messages": [
            {"role": "system", "content": "You are a helpful support assistant. " * 10},
            {"role": "user", "content": f"Question number {i}: how do I reset my password?"}]},
        response={"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Go to settings and click reset. " * 8}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180}},
        request_hash="ab" * 32, status=200, usage={"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180},
        latency_ms=123.4, served=True, model_served="gpt-4o-2024-08-06", capture=capture)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))], 3)


def lag_summary(lags: list[float]) -> dict:
    return {"ticks": len(lags), "p50": pct(lags, 50), "p90": pct(lags, 90), "p99": pct(lags, 99),
            "p999": pct(lags, 99.9), "max": round(max(lags), 3) if lags else None,
            "mean": round(sum(lags) / len(lags), 3) if lags else None}


async def ticker(seconds: float, on_tick=None, period: float = 0.001) -> list[float]:
    """Sleep `period` again and again for `seconds`; returns each tick's lateness in ms."""
    lags: list[float] = []
    start = time.perf_counter()
    now = start
    while now - start < seconds:
        expected = time.perf_counter() + period
        await asyncio.sleep(period)
        now = time.perf_counter()
        lags.append((now - expected) * 1000)
        if on_tick is not None:
            on_tick(now - start)
    return lags


async def baseline(seconds: float) -> dict:
    gc.collect()
    return lag_summary(await ticker(seconds))


def make_records(n: int, distinct: int = 20_000) -> list[Record]:
    """n records with unique ids; past `distinct`, copies of the first ones (same bodies, new ids) to
    save time and memory: sealing copies what it changes, so sharing the bodies costs nothing."""
    out = [make_record(i) for i in range(min(n, distinct))]
    for i in range(len(out), n):
        out.append(dataclasses.replace(out[i % distinct], id=new_id(), request_id=new_id(), started_at=time.time()))
    return out


class _Store:
    """A fresh store for one part: a SQLite file in `workdir`, or a PostgreSQL schema dropped after."""

    def __init__(self, base: str | None, workdir: Path, part: str) -> None:
        self.schema = f"bench_{part}_{os.getpid()}"
        self.base = base
        self.url = (f"{base}?schema={self.schema}" if base else f"sqlite:///{workdir / f'rec-{part}.db'}")
        self.path = workdir / f"rec-{part}.db"

    async def size(self, store: object) -> int:
        if not self.base:
            return self.path.stat().st_size
        rows = await store.fetch("SELECT pg_total_relation_size('records')")  # type: ignore[attr-defined]
        return int(rows[0][0])

    async def drop(self) -> None:
        if self.base:
            import asyncpg

            conn = await asyncpg.connect(self.base)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()


async def sustained(workdir: Path, records: list[Record], rate: float, seconds: float,
                    base: str | None = None, journal: bool = False) -> dict:
    part = "sustained-journal" if journal else "sustained"
    where = _Store(base, workdir, part.replace("-", "_"))
    store = open_store(where.url)
    await store.open()
    rec = Recorder(store, spill_path=workdir / f"rec-{part}.spill.jsonl",
                   journal_path=workdir / f"rec-{part}.journal" if journal else None)
    await rec.start()
    state = {"sent": 0, "max_backlog": 0, "next_sample": 0.0}
    submit_s = [0.0]

    def on_tick(elapsed: float) -> None:
        due = min(len(records), int(elapsed * rate))
        if due > state["sent"]:
            t = time.perf_counter()
            for r in records[state["sent"]:due]:
                rec.submit(r)
            submit_s[0] += time.perf_counter() - t
            state["sent"] = due
        if elapsed >= state["next_sample"]:  # backlog every 10 ms
            state["next_sample"] = elapsed + 0.01
            s = rec.stats()
            state["max_backlog"] = max(state["max_backlog"], s["buffered"])

    gc.collect()
    t0 = time.perf_counter()
    lags = await ticker(seconds, on_tick)
    window = time.perf_counter() - t0
    at_end = rec.stats()
    t1 = time.perf_counter()
    await rec.flush()
    flush_s = time.perf_counter() - t1
    final = rec.stats()
    await rec.stop()
    await store.close()
    await where.drop()
    sent = state["sent"]
    return {
        "offered_per_s": rate, "seconds": round(window, 3), "submitted": sent,
        "written_in_window": at_end["written"], "written_per_s": round(at_end["written"] / window, 1),
        "backlog_at_end": at_end["buffered"], "backlog_max": state["max_backlog"],
        "flush_after_s": round(flush_s, 3), "written": final["written"],
        "spilled": final["spilled"], "dropped": final["dropped"], "store_healthy": final["store_healthy"],
        "kept_up": final["written"] == sent and final["spilled"] == 0 and final["dropped"] == 0
        and at_end["buffered"] < rate,  # less than a second of records left behind
        "submit_us_per_record": round(submit_s[0] / sent * 1e6, 3) if sent else None,
        "loop_lag_ms": lag_summary(lags),
    }


async def maximum(workdir: Path, records: list[Record], n: int, base: str | None = None,
                  journal: bool = False) -> dict:
    records = records[:n]
    part = "max_journal" if journal else "max"
    where = _Store(base, workdir, part)
    store = open_store(where.url)
    await store.open()
    rec = Recorder(store, spill_path=workdir / f"rec-{part}.spill.jsonl", buffer_size=max(n, 10_000),
                   journal_path=workdir / f"rec-{part}.journal" if journal else None)
    await rec.start()
    gc.collect()
    t0 = time.perf_counter()
    for r in records:
        rec.submit(r)
    submit_s = time.perf_counter() - t0
    await rec.flush()
    dt = time.perf_counter() - t0
    final = rec.stats()
    await rec.stop()
    size = await where.size(store)
    await store.close()
    await where.drop()
    return {"records": n, "seconds": round(dt, 3), "records_per_s": round(final["written"] / dt, 1),
            "written": final["written"], "spilled": final["spilled"], "dropped": final["dropped"],
            "submit_us_per_record": round(submit_s / n * 1e6, 3),
            "record_json_bytes": len(orjson.dumps(records[0])), "db_bytes_per_record": round(size / n) if n else None}


async def run(a: argparse.Namespace) -> dict:
    workdir = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="sluicegate-bench-recorder-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        out: dict = {"store": "postgresql" if a.store else "sqlite",
                     "rate": a.rate, "seconds": a.seconds, "max_records": a.max_records,
                     "settings": "Recorder defaults (buffer 10,000, batch 500, flush 50 ms); maximum: buffer "
                                 "sized to hold every record", "capture": "redacted",
                     "loop": type(asyncio.get_running_loop()).__module__.split(".")[0]}
        t = time.perf_counter()
        records = make_records(max(int(a.rate * a.seconds * 1.05) + 10, a.max_records))
        out["build_s"] = round(time.perf_counter() - t, 2)
        if a.seconds:
            out["baseline_loop_lag_ms"] = await baseline(a.baseline_seconds or a.seconds)
            out["sustained"] = await sustained(workdir, records, a.rate, a.seconds, a.store)
        if a.max_records:
            out["maximum"] = await maximum(workdir, records, a.max_records, a.store)
        if a.seconds:
            lag, base = out["sustained"]["loop_lag_ms"], out["baseline_loop_lag_ms"]
            out["loop_lag_added_ms"] = {q: round(lag[q] - base[q], 3) for q in ("p50", "p90", "p99", "p999", "max")
                                        if lag[q] is not None and base[q] is not None}
        if a.journal:
            out.update(await journal_parts(a, workdir, records, out))
        if a.kill9:
            out["kill9"] = {"rate": a.rate, "runs": a.kill9,
                            "without_journal": await kill9(workdir, a.rate, a.kill9, journal=False),
                            "with_journal": await kill9(workdir, a.rate, a.kill9, journal=True)}
        return out
    finally:
        if not a.dir and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def journal_parts(a: argparse.Namespace, workdir: Path, records: list[Record], out: dict) -> dict:
    """The sustained and maximum parts again with the journal on; cost per record and ratios."""
    parts: dict = {}
    if a.seconds:
        parts["sustained_journal"] = j = await sustained(workdir, records, a.rate, a.seconds, a.store, journal=True)
        plain = out["sustained"]
        parts["journal_cost"] = {
            "sustained_submit_us_per_record": [plain["submit_us_per_record"], j["submit_us_per_record"]],
            "sustained_loop_lag_p99_ms": [plain["loop_lag_ms"]["p99"], j["loop_lag_ms"]["p99"]],
            "sustained_loop_lag_max_ms": [plain["loop_lag_ms"]["max"], j["loop_lag_ms"]["max"]],
        }
    if a.max_records:
        parts["maximum_journal"] = m = await maximum(workdir, records, a.max_records, a.store, journal=True)
        plain = out["maximum"]
        cost = parts.setdefault("journal_cost", {})
        cost["maximum_submit_us_per_record"] = [plain["submit_us_per_record"], m["submit_us_per_record"]]
        cost["maximum_records_per_s"] = [plain["records_per_s"], m["records_per_s"]]
        cost["maximum_submit_ratio"] = round(m["submit_us_per_record"] / plain["submit_us_per_record"], 2)
    if "journal_cost" in parts:
        parts["journal_cost"]["pairs"] = "[without journal, with journal], same run"
    return parts


# --------------------------------------------------------------------------- the kill -9 window


async def kill9_child(a: argparse.Namespace) -> None:
    """(child) Submit records at `--rate` and acknowledge each id on stdout once `submit` returned."""
    store = open_store(a.child_store)
    await store.open()
    rec = Recorder(store, spill_path=a.child_spill, journal_path=a.child_journal)
    await rec.start()
    template = make_record(0)
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    start, sent = time.perf_counter(), 0
    while True:
        await asyncio.sleep(0.001)
        due = int((time.perf_counter() - start) * a.rate)
        ids = []
        while sent < due:
            r = dataclasses.replace(template, id=new_id(), request_id=new_id(), started_at=time.time())
            rec.submit(r)
            ids.append(r.id)
            sent += 1
        if ids:  # the "responses": sent after submit returned
            out.write(("\n".join(ids) + "\n").encode())
            out.flush()


async def kill9(workdir: Path, rate: float, runs: int, journal: bool) -> dict:
    """Acknowledged records missing after SIGKILL and a restart's replay, per run."""
    import random
    import sqlite3

    lost: list[int] = []
    acked_total = 0
    for run_no in range(runs):
        folder = workdir / f"kill9-{'journal' if journal else 'plain'}-{run_no}"
        folder.mkdir(parents=True, exist_ok=True)
        db, spill, jpath = folder / "store.db", folder / "spill.jsonl", folder / "journal"
        cmd = [sys.executable, "-m", "bench.recorder", "--child-kill9", "--rate", str(rate),
               "--child-store", f"sqlite:///{db}", "--child-spill", str(spill)]
        if journal:
            cmd += ["--child-journal", str(jpath)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    cwd=Path(__file__).resolve().parent.parent)
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the kill9 child did not start")
        reading = asyncio.create_task(proc.stdout.read())  # drained all along: the child never blocks on the pipe
        await asyncio.sleep(random.uniform(0.5, 1.5))
        proc.kill()
        acked = {line.strip().decode() for line in (await reading).splitlines() if line.strip()}
        await proc.wait()
        store = open_store(f"sqlite:///{db}")  # the restart: replays the spill file and the journal
        await store.open()
        rec = Recorder(store, spill_path=spill, journal_path=jpath if journal else None)
        await rec.start()
        deadline = time.monotonic() + 30
        while rec.stats()["spill_pending"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await rec.stop()
        await store.close()
        with sqlite3.connect(db) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM records")}
        lost.append(len(acked - stored))
        acked_total += len(acked)
    return {"acknowledged": acked_total, "lost_per_run": lost, "lost_max": max(lost), "lost_total": sum(lost),
            "lost_ms_of_traffic_max": round(max(lost) / rate * 1000, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=5000.0, help="records/s offered in the sustained part")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the baseline and of the sustained part")
    p.add_argument("--baseline-seconds", type=float, default=5.0,
                   help="length of the baseline (ticker alone; default 5, 0: as --seconds)")
    p.add_argument("--max-records", type=int, default=100_000, help="records of the maximum part (0: skip it)")
    p.add_argument("--dir", help="where the SQLite files go (default: a temp dir, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--store", metavar="POSTGRESQL_URL",
                   help="write into PostgreSQL (a fresh schema per part, dropped afterwards) instead of SQLite")
    p.add_argument("--journal", action="store_true",
                   help="also run the sustained and maximum parts with the journal on (serve --journal)")
    p.add_argument("--kill9", type=int, default=0, metavar="RUNS",
                   help="measure the kill -9 window at --rate: RUNS kills without the journal, RUNS with it")
    p.add_argument("--child-kill9", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-store", help=argparse.SUPPRESS)
    p.add_argument("--child-spill", help=argparse.SUPPRESS)
    p.add_argument("--child-journal", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the result (or ids)
    if a.child_kill9:
        try:
            import uvloop

            uvloop.run(kill9_child(a))
        except ImportError:  # pragma: no cover
            asyncio.run(kill9_child(a))
        return
    try:
        import uvloop

        result = uvloop.run(run(a))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(a))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
