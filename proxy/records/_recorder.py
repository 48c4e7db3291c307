"""The recorder: takes records on the request path without ever waiting, writes them in the background.

Request path: `submit(record)` appends to a bounded in-memory buffer (a deque; no lock, no await,
no I/O). Only when the buffer is full is the record appended to the spill file right there — one
`write()` of one JSONL line to a file kept open; this is the ONLY I/O the recorder ever does on the
request path, and only past the bound.

Background: a writer task wakes when a batch is ready or every `flush_interval`, and hands batches
of `batch_size` to `store.write_records` (which runs on the store's own thread) under
`write_timeout`. Records are handed over as they are: SQLiteStore encodes a `Record` dataclass
with orjson on its thread (measured per record: `dataclasses.asdict` ~180 µs, an orjson
round-trip ~11 µs, an attrgetter dict ~4 µs, handing over 0 µs on the event loop).

When the store fails (error or timeout): the batch goes to the spill file, the store is marked
unhealthy (a warning is logged once per change of state), new records keep flowing to the spill
file (in the background, not on the request path), and the store is pinged every `retry_interval`.
Once a ping succeeds, the spill file is replayed: renamed to `<spill>.replaying` (new spills go to
a fresh file), its lines written in batches (writes are idempotent by record id, so a replay that
is cut and repeated stores nothing twice), then deleted. A spill file left by an earlier run is
replayed the same way after `start()`; a corrupt line (a crash mid-write) is skipped and counted.

Nothing is lost silently: `dropped` counts records that could be neither stored nor spilled (the
spill file cannot be written, or a record cannot be encoded), and each such event is logged.

Write health (`store_healthy`, `/readyz`'s `writable`) is what the last write did, never what a
ping says: a full disk still answers the ping (`BEGIN IMMEDIATE; ROLLBACK` needs no space) while
every insert fails with SQLITE_FULL. A ping only decides when to try writing again; the store is
reported writable again once a write succeeds. `store_failures` counts failed writes and pings since
the last successful write.

Durability: a record is in the store or the spill file within one flush interval plus one store
write of its `submit` (~50–60 ms); `kill -9` loses what is waiting in memory then. With a journal
(`journal_path`, see `_journal.py`) `submit` also seals the record and appends it to the journal
before returning, so the process can die at any point without losing an answered request's record.
The journal's generations are deleted once every record in them is stored or spilled (kept while
any record has been dropped, for the next start to replay).

All methods must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import structlog

from proxy.records._journal import Journal
from proxy.records._model import Record
from proxy.records._seal import encode_row, seal
from proxy.records._store import RecordStore

__all__ = ["Recorder"]

_DATA_ERRORS = (TypeError, ValueError)  # raised by a store for a row it cannot encode (not a store fault)


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _row_id(rec: Any) -> Any:
    return rec.get("id") if isinstance(rec, Mapping) else getattr(rec, "id", None)


class Recorder:
    """Never-blocking record writer with a bounded buffer, a spill file and replay."""

    def __init__(self, store: RecordStore, *, spill_path: str | Path, buffer_size: int = 10_000,
                 batch_size: int = 500, flush_interval: float = 0.05, write_timeout: float = 5.0,
                 retry_interval: float = 1.0, journal_path: str | Path | None = None,
                 journal_rotate_s: float = 1.0, logger: Any = None) -> None:
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be >= 1")
        self._store = store
        self._spill_path = Path(spill_path)
        self._replay_path = self._spill_path.with_name(self._spill_path.name + ".replaying")
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._write_timeout = write_timeout
        self._retry_interval = retry_interval
        self._log = logger if logger is not None else structlog.get_logger("sluicegate.records")

        self._buf: deque[Record | dict[str, Any]] = deque()
        self._inflight: list[Record | dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False

        # spill file: appended from the loop thread (overflow) and the spill thread (batches)
        self._spill_lock = threading.Lock()
        self._spill_fh: Any = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluicegate-spill")
        self._replay_offset = 0  # bytes of <spill>.replaying already stored

        self._healthy = True  # try writes (False: the last write or ping failed; ping again before writing)
        self._writable = True  # the last write succeeded (or none failed yet): what /readyz reports
        self._failures = 0  # failed writes and pings since the last successful write
        self._last_failure_at: float | None = None
        self._next_ping = 0.0
        self._submitted = 0
        self._written = 0
        self._spilled = 0
        self._spill_pending = 0
        self._replayed = 0
        self._dropped = 0
        self._spill_corrupt = 0
        self._last_error: str | None = None
        self._last_write_at: float | None = None

        # journal: generations waiting for their records to be stored or spilled, as (generation, mark):
        # every record in it was queued before `_queued` reached `mark` (the buffer is FIFO)
        self._journal = Journal(journal_path) if journal_path is not None else None
        self._journal_rotate_s = journal_rotate_s
        self._next_rotate = 0.0
        self._sealed: deque[tuple[int, int]] = deque()
        self._queued = 0  # records ever appended to the buffer
        self._journal_keep = False  # a record was dropped: keep every generation for the next start
        self._journal_ok = True
        self._journal_failed = 0
        self._journal_recovered = 0

    # ---------------------------------------------------------------- request path

    def submit(self, record: Record | dict[str, Any]) -> None:
        """Hand a record over (sync, O(1), never awaits). The record must not be mutated afterwards.

        With a journal, the record is sealed and appended to it here (one write(2)) before this returns."""
        self._submitted += 1
        if self._journal is not None and not self._closed:
            journaled = self._journal_append(record)
            if journaled is None:
                return
            record = journaled
        buf = self._buf
        if len(buf) < self._buffer_size and not self._closed:
            buf.append(record)
            self._queued += 1
            if len(buf) >= self._batch_size:
                self._wake.set()
            return
        # Past the bound (or after stop): the one place with I/O on the request path.
        try:
            line = encode_row(record) + b"\n"
        except Exception as exc:  # noqa: BLE001 - an unencodable record must not fail the request
            self._drop(1, "record cannot be encoded", exc)
            return
        try:
            self._spill_write(line, 1)
        except Exception as exc:  # noqa: BLE001
            self._drop(1, "spill file cannot be written", exc)

    def _journal_append(self, record: Record | dict[str, Any]) -> Record | dict[str, Any] | None:
        """Seal and journal a record; returns the row to buffer (sealed once, here), None if dropped.
        A journal that cannot be written is counted and logged; the record is still kept in memory."""
        try:
            if isinstance(record, Record):
                row: Any = seal(record)
                line = orjson.dumps(row) + b"\n"
            else:
                row, line = record, encode_row(record) + b"\n"
        except Exception as exc:  # noqa: BLE001 - an unencodable record must not fail the request
            self._drop(1, "record cannot be encoded", exc)
            return None
        journal = self._journal
        assert journal is not None
        try:
            journal.append(line)
        except OSError as exc:
            self._journal_failed += 1
            if self._journal_ok:
                self._journal_ok = False
                self._log.error("records.journal_unwritable", error=_error_text(exc), file=str(journal.path),
                                message="records are kept in memory only until the journal can be written")
        else:
            if not self._journal_ok:
                self._journal_ok = True
                self._log.info("records.journal_writable", failed_total=self._journal_failed)
        return row

    # ---------------------------------------------------------------- spill file

    def _open_spill(self) -> Any:
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self._spill_path, "ab", buffering=0)  # noqa: SIM115 - kept open on purpose
        try:
            if fh.tell() > 0:
                with open(self._spill_path, "rb") as rfh:
                    rfh.seek(-1, os.SEEK_END)
                    if rfh.read(1) != b"\n":
                        fh.write(b"\n")  # a torn last line from a crash: do not glue a record to it
        except BaseException:
            fh.close()
            raise
        return fh

    def _spill_write(self, data: bytes, n: int) -> None:
        """Append complete lines (one `write`) and count them; raises if the disk fails."""
        with self._spill_lock:
            if self._spill_fh is None:
                self._spill_fh = self._open_spill()
            try:
                view = memoryview(data)
                while view:
                    written = self._spill_fh.write(view)
                    view = view[written:]
            except BaseException:
                # a partial line may be on disk: reopen next time, which repairs the tail
                fh, self._spill_fh = self._spill_fh, None
                try:
                    fh.close()
                except OSError:
                    pass
                raise
            self._spilled += n
            self._spill_pending += n

    def _spill_batch_sync(self, records: list[Any]) -> tuple[int, list[str], BaseException | None]:
        """(spill thread) Encode and append records. Returns (dropped, reasons, disk error)."""
        lines: list[bytes] = []
        reasons: list[str] = []
        for rec in records:
            rid = _row_id(rec)
            if not isinstance(rid, str) or not rid:
                reasons.append("record has no id")
                continue
            try:
                lines.append(encode_row(rec))
            except Exception as exc:  # noqa: BLE001
                reasons.append(f"record cannot be encoded ({_error_text(exc)})")
        if not lines:
            return len(reasons), reasons, None
        try:
            self._spill_write(b"\n".join(lines) + b"\n", len(lines))
        except Exception as exc:  # noqa: BLE001
            return len(reasons) + len(lines), reasons, exc
        return len(reasons), reasons, None

    async def _spill(self, records: list[Any]) -> None:
        if not records:
            return
        loop = asyncio.get_running_loop()
        dropped, reasons, disk_error = await loop.run_in_executor(self._io, self._spill_batch_sync, records)
        if reasons:
            self._drop(len(reasons), reasons[0], None)
        if disk_error is not None:
            self._drop(dropped - len(reasons), "spill file cannot be written", disk_error)

    def _drop(self, count: int, reason: str, exc: BaseException | None) -> None:
        self._dropped += count
        if self._journal is not None:
            self._journal_keep = True  # the journal may still hold them: never delete it now
        self._log.error("records.dropped", count=count, reason=reason, dropped_total=self._dropped,
                        error=_error_text(exc) if exc is not None else None)

    def _rotate_sync(self) -> bool:
        """(spill thread) Move the spill file aside for replay. True if there is something to replay."""
        if self._replay_path.exists():
            return True
        with self._spill_lock:  # spill writes hold this lock: the check and the reset are atomic
            if self._spill_fh is not None:
                self._spill_fh.close()
                self._spill_fh = None
            try:
                if self._spill_path.stat().st_size == 0:
                    self._spill_path.unlink()
                    self._spill_pending = 0
                    return False
                os.replace(self._spill_path, self._replay_path)
            except FileNotFoundError:
                self._spill_pending = 0  # no file: nothing to replay (corrects any miscount)
                return False
        self._replay_offset = 0
        return True

    def _finish_replay_sync(self) -> None:
        """(spill thread) The replay file is fully stored: delete it."""
        self._replay_path.unlink(missing_ok=True)
        with self._spill_lock:
            if not self._spill_path.exists():
                self._spill_pending = 0  # nothing left on disk (corrects for lines lost in crashes)

    def _read_chunk_sync(self, offset: int, max_rows: int) -> tuple[list[dict[str, Any]], int, int, bool]:
        """(spill thread) Up to `max_rows` rows of <spill>.replaying from byte `offset`.

        Returns (rows, new offset, corrupt lines skipped, at end of file)."""
        rows: list[dict[str, Any]] = []
        corrupt = 0
        with open(self._replay_path, "rb") as fh:
            fh.seek(offset)
            while len(rows) < max_rows:
                line = fh.readline()
                if not line:
                    return rows, fh.tell(), corrupt, True
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    corrupt += 1
                    continue
                rid = row.get("id") if isinstance(row, dict) else None
                if not isinstance(rid, str) or not rid:
                    corrupt += 1
                    continue
                rows.append(row)
            pos = fh.tell()
            at_end = not fh.read(1)
            return rows, pos, corrupt, at_end

    def _count_pending_sync(self) -> int:
        """(spill thread) Lines waiting in spill files left by an earlier run."""
        total = 0
        for path in (self._replay_path, self._spill_path):
            try:
                with open(path, "rb") as fh:
                    last = b"\n"
                    while chunk := fh.read(1 << 20):
                        total += chunk.count(b"\n")
                        last = chunk[-1:]
                    if last != b"\n":
                        total += 1
            except (FileNotFoundError, NotADirectoryError):
                continue
        return total

    def _adopt_journal_sync(self) -> int:
        """(spill thread, at start) Move journal generations left by an earlier process into the spill
        file, then delete them. Returns the lines moved. On a disk error the files stay (next start)."""
        journal = self._journal
        assert journal is not None
        leftovers = journal.leftovers()
        if not leftovers:
            return 0
        lines = 0
        with self._spill_lock:
            if self._spill_fh is None:
                self._spill_fh = self._open_spill()
            try:
                for _, path in leftovers:
                    with open(path, "rb") as fh:
                        last = b"\n"
                        while chunk := fh.read(1 << 20):
                            self._write_all(chunk)
                            lines += chunk.count(b"\n")
                            last = chunk[-1:]
                    if last != b"\n":  # a torn last line: the spill replay skips and counts it
                        self._write_all(b"\n")
                        lines += 1
            except BaseException:
                fh_, self._spill_fh = self._spill_fh, None  # reopened (and its tail repaired) next time
                fh_.close()
                raise
        for _, path in leftovers:  # a copy cut short by a crash is adopted again: replays are idempotent
            path.unlink(missing_ok=True)
        return lines

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._spill_fh.write(view):]

    async def _journal_tick(self) -> None:
        """Delete journal generations whose records are all stored or spilled; start a new generation
        at most every `journal_rotate_s` (a rename-free open: cheap enough for the loop's thread)."""
        journal = self._journal
        if journal is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        done = self._queued - len(self._buf) - len(self._inflight)  # FIFO: every record queued before is done
        while self._sealed and self._sealed[0][1] <= done and not self._journal_keep:
            generation, _ = self._sealed.popleft()
            try:
                await loop.run_in_executor(self._io, journal.discard, generation)
            except OSError as exc:  # left on disk: replayed (idempotently) at the next start
                self._log.warning("records.journal_not_deleted", file=str(journal.file(generation)),
                                  error=_error_text(exc))
        now = loop.time()
        if not journal.is_open and journal.is_locked and now >= self._next_rotate:  # could not be opened: retry
            self._next_rotate = now + self._journal_rotate_s
            try:
                await loop.run_in_executor(self._io, journal.open)
            except OSError:
                pass  # still failing: appends are counted as failed
            return
        if journal.bytes and now >= self._next_rotate and not self._journal_keep:
            self._next_rotate = now + self._journal_rotate_s
            try:
                self._sealed.append((journal.rotate(), self._queued))
            except OSError as exc:  # keep appending to the current generation
                self._log.warning("records.journal_not_rotated", file=str(journal.path), error=_error_text(exc))

    # ---------------------------------------------------------------- background writer

    def _set_unhealthy(self, exc: BaseException) -> None:
        """A write or a ping failed: spill until a ping answers."""
        self._last_error = _error_text(exc)
        self._last_failure_at = time.time()
        self._failures += 1
        self._next_ping = asyncio.get_running_loop().time() + self._retry_interval
        self._healthy = False
        if self._writable:  # one warning per change of state, not one per failed retry
            self._writable = False
            self._log.warning("records.store_unhealthy", store=self._store.url, error=self._last_error,
                              buffered=len(self._buf), spilled=self._spilled,
                              spill_pending=self._spill_pending, dropped=self._dropped)

    def _set_healthy(self) -> None:
        """A ping answered: try writing again. Not writable yet — a full disk answers pings too."""
        self._healthy = True

    def _wrote(self) -> None:
        """A write succeeded: the store is writable (again)."""
        self._last_write_at = time.time()
        self._failures = 0
        if not self._writable:
            self._writable = True
            self._log.info("records.store_recovered", store=self._store.url, buffered=len(self._buf),
                           spilled=self._spilled, spill_pending=self._spill_pending, dropped=self._dropped)

    def _fault(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, TimeoutError):
            return TimeoutError(f"{what} took longer than {self._write_timeout} s")
        return exc

    async def _store_write(self, rows: list[Any]) -> int:
        """Write rows; returns how many the store took. A row the store cannot encode (a bug
        elsewhere) is isolated and dropped (logged), the others are written. Store faults (sqlite
        errors, timeouts, …) are raised."""
        try:
            await asyncio.wait_for(self._store.write_records(rows), self._write_timeout)
            return len(rows)
        except _DATA_ERRORS:
            if len(rows) == 1:
                raise
        taken = 0
        for row in rows:  # one transaction per row, only on this bug path
            try:
                await asyncio.wait_for(self._store.write_records([row]), self._write_timeout)
            except _DATA_ERRORS as exc:
                self._drop(1, "the store rejected the record", exc)
            else:
                taken += 1
        return taken

    async def _write_buffer(self) -> None:
        """Write the buffer in batches while the store is healthy; on a fault, spill the batch."""
        buf = self._buf
        while buf and self._healthy:
            n = min(self._batch_size, len(buf))
            batch = [buf.popleft() for _ in range(n)]
            self._inflight = batch
            try:
                taken = await self._store_write(batch)
            except _DATA_ERRORS as exc:  # a batch of one unencodable record
                self._inflight = []
                self._drop(1, "the store rejected the record", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any store fault
                self._set_unhealthy(self._fault(exc, "a write"))
                try:
                    await self._spill(batch)
                finally:
                    self._inflight = []
                return
            self._inflight = []
            self._written += taken
            if taken:
                self._wrote()

    async def _replay_some(self, max_batches: int = 4) -> None:
        """Replay up to `max_batches` batches of the spill file(s)."""
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._io, self._rotate_sync):
            return
        for _ in range(max_batches):
            rows, offset, corrupt, at_end = await loop.run_in_executor(
                self._io, self._read_chunk_sync, self._replay_offset, self._batch_size)
            if corrupt:
                self._spill_corrupt += corrupt
                self._pending_done(corrupt)
                self._log.warning("records.spill_corrupt_lines", count=corrupt, file=str(self._replay_path),
                                  corrupt_total=self._spill_corrupt)
            if rows:
                try:
                    taken = await self._store_write(rows)
                except _DATA_ERRORS as exc:  # a batch of one row the store rejects
                    self._drop(1, "the store rejected the record", exc)
                    taken = 0
                except Exception as exc:  # noqa: BLE001 - resume from the same offset later
                    self._set_unhealthy(self._fault(exc, "a write"))
                    return
                self._replayed += taken
                self._pending_done(len(rows))
                if taken:
                    self._wrote()
            self._replay_offset = offset
            if at_end:
                await loop.run_in_executor(self._io, self._finish_replay_sync)
                self._replay_offset = 0
                return

    def _pending_done(self, n: int) -> None:
        """`n` lines left the spill files. The lock is uncontended here (the spill thread only
        runs jobs this writer is awaiting)."""
        with self._spill_lock:
            self._spill_pending = max(0, self._spill_pending - n)

    def _replay_wanted(self) -> bool:
        return self._spill_pending > 0

    async def _step(self) -> None:
        if not self._healthy:
            loop = asyncio.get_running_loop()
            if loop.time() >= self._next_ping:
                try:
                    await asyncio.wait_for(self._store.ping(), self._write_timeout)
                except Exception as exc:  # noqa: BLE001
                    self._set_unhealthy(self._fault(exc, "a ping"))
                else:
                    self._set_healthy()
            if not self._healthy:
                # keep memory bounded and the request path free of I/O while the store is down
                batch = list(self._buf)
                self._buf.clear()
                self._inflight = batch
                try:
                    await self._spill(batch)
                finally:
                    self._inflight = []
                return
        await self._write_buffer()
        if self._healthy and self._replay_wanted():
            await self._replay_some()

    def _signal_progress(self) -> None:
        ev, self._progress = self._progress, asyncio.Event()
        ev.set()

    async def _run(self) -> None:
        while True:
            try:
                if self._stopping:
                    if self._healthy:
                        await self._write_buffer()
                    batch = list(self._buf)
                    self._buf.clear()
                    self._inflight = batch
                    await self._spill(batch)
                    self._inflight = []
                    return
                busy = self._healthy and (self._replay_wanted() or len(self._buf) >= self._batch_size)
                if not busy:
                    try:
                        async with asyncio.timeout(self._flush_interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    self._wake.clear()
                    if self._stopping:
                        continue
                await self._step()
                await self._journal_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the writer must never die
                self._last_error = _error_text(exc)
                self._log.exception("records.writer_error", error=self._last_error)
                await asyncio.sleep(self._retry_interval)
            finally:
                self._signal_progress()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the background writer (and replay spill files left by an earlier run)."""
        if self._task is not None:
            return
        if self._closed:
            raise RuntimeError("a stopped recorder cannot be restarted")
        loop = asyncio.get_running_loop()
        if self._journal is not None:
            await self._open_journal(loop)
        try:
            pending = await loop.run_in_executor(self._io, self._count_pending_sync)
        except OSError as exc:  # the spill file is unreadable: serve anyway, say so
            pending = 0
            self._last_error = _error_text(exc)
            self._log.error("records.spill_unreadable", file=str(self._spill_path), error=self._last_error)
        if pending:
            self._spill_pending += pending
            self._log.info("records.spill_found", pending=pending, file=str(self._spill_path))
        if await loop.run_in_executor(self._io, self._spill_shares_disk_sync):
            self._log.info("records.spill_on_store_disk", file=str(self._spill_path),
                           message="the spill file is on the SQLite store's filesystem: a full disk stops both "
                                   "(records are then dropped, counted); `serve --spill-path` can put it elsewhere")
        self._task = asyncio.create_task(self._run(), name="sluicegate-recorder")

    def _spill_shares_disk_sync(self) -> bool:
        """(spill thread) Whether the spill file would land on the same filesystem as an SQLite store."""
        store_path = getattr(self._store, "path", None)
        if not isinstance(store_path, str) or store_path == ":memory:":
            return False

        def device(path: Path) -> int | None:
            for folder in path.absolute().parents:  # the nearest folder that exists
                try:
                    return os.stat(folder).st_dev
                except OSError:
                    continue
            return None

        store_dev = device(Path(store_path))
        return store_dev is not None and store_dev == device(self._spill_path)

    async def _open_journal(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt what an earlier process left in the journal, then start a new generation."""
        journal = self._journal
        assert journal is not None
        self._next_rotate = loop.time() + self._journal_rotate_s
        try:
            await loop.run_in_executor(self._io, journal.lock)
        except OSError as exc:  # never touch another process's files; appends fail and are counted
            self._journal_ok = False
            self._journal_keep = True
            self._log.error("records.journal_unwritable", file=str(journal.path), error=_error_text(exc),
                            message="records are kept in memory only until the journal can be written")
            return
        try:
            self._journal_recovered = await loop.run_in_executor(self._io, self._adopt_journal_sync)
        except OSError as exc:
            self._journal_keep = True
            self._log.error("records.journal_unrecovered", file=str(journal.path), error=_error_text(exc),
                            message="the journal's files stay on disk; they are replayed at the next start")
        if self._journal_recovered:
            self._log.info("records.journal_recovered", lines=self._journal_recovered, file=str(journal.path),
                           spill=str(self._spill_path))
        try:
            await loop.run_in_executor(self._io, journal.open)
        except OSError as exc:  # appends fail and are counted (journal.failed in /readyz)
            self._journal_ok = False
            self._log.error("records.journal_unwritable", file=str(journal.path), error=_error_text(exc),
                            message="records are kept in memory only until the journal can be written")

    async def flush(self) -> None:
        """Wait until every record submitted so far is written to the store or spilled."""
        target = self._submitted
        while self._written + self._spilled + self._dropped < target:
            if self._task is None or self._task.done():
                raise RuntimeError("the recorder is not running (call start())")
            progress = self._progress
            self._wake.set()
            await progress.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered; what cannot be written within `timeout` goes to the spill file.

        Does not close the store. Records submitted after stop() go straight to the spill file.
        """
        if self._closed:
            return
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception as exc:  # noqa: BLE001
                self._log.exception("records.writer_error", error=_error_text(exc))
        self._closed = True
        leftovers = self._inflight + list(self._buf)
        self._inflight = []
        self._buf.clear()
        if leftovers:  # written or not, spill them: a replay stores nothing twice
            await self._spill(leftovers)
        if self._journal is not None:
            await asyncio.get_running_loop().run_in_executor(self._io, self._close_journal_sync)
        self._io.shutdown(wait=True)
        with self._spill_lock:
            if self._spill_fh is not None:
                self._spill_fh.close()
                self._spill_fh = None
        self._signal_progress()

    def _close_journal_sync(self) -> None:
        """(spill thread, at stop) Every record is stored or spilled: delete the journal's generations,
        unless a record was dropped (then the next start replays them)."""
        journal = self._journal
        assert journal is not None
        ours = journal.is_locked
        journal.close()
        if not ours:  # another process holds it: its files are not ours to judge
            return
        if self._journal_keep:
            self._log.warning("records.journal_kept", file=str(journal.path), dropped=self._dropped,
                              message="records were dropped; the journal is replayed at the next start")
            return
        for generation, _ in self._sealed:
            journal.discard(generation)
        self._sealed.clear()
        if journal.generation:
            journal.discard(journal.generation)

    # ---------------------------------------------------------------- observability

    def stats(self) -> dict[str, Any]:
        return {
            "submitted": self._submitted,
            "written": self._written,
            "buffered": len(self._buf) + len(self._inflight),
            "spilled": self._spilled,
            "spill_pending": self._spill_pending,
            "replayed": self._replayed,
            "dropped": self._dropped,
            "spill_corrupt": self._spill_corrupt,
            "store_healthy": self._writable,  # the last write succeeded (a ping alone does not count)
            "store_failures": self._failures,  # failed writes and pings since the last successful write
            "last_error": self._last_error,
            "last_failure_at": self._last_failure_at,
            "last_write_at": self._last_write_at,
            "journal": None if self._journal is None else {
                "path": str(self._journal.path),
                "writable": self._journal_ok,
                "appended": self._journal.appended,
                "failed": self._journal_failed,
                "recovered": self._journal_recovered,
                "generations": len(self._sealed) + 1,
            },
        }
