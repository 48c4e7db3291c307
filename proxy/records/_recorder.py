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

from proxy.records._model import Record
from proxy.records._seal import encode_row
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
                 retry_interval: float = 1.0, logger: Any = None) -> None:
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

        self._healthy = True
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

    # ---------------------------------------------------------------- request path

    def submit(self, record: Record | dict[str, Any]) -> None:
        """Hand a record over (sync, O(1), never awaits). The record must not be mutated afterwards."""
        self._submitted += 1
        buf = self._buf
        if len(buf) < self._buffer_size and not self._closed:
            buf.append(record)
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

    # ---------------------------------------------------------------- background writer

    def _set_unhealthy(self, exc: BaseException) -> None:
        self._last_error = _error_text(exc)
        self._next_ping = asyncio.get_running_loop().time() + self._retry_interval
        if self._healthy:
            self._healthy = False
            self._log.warning("records.store_unhealthy", store=self._store.url, error=self._last_error,
                              buffered=len(self._buf), spilled=self._spilled,
                              spill_pending=self._spill_pending, dropped=self._dropped)

    def _set_healthy(self) -> None:
        if not self._healthy:
            self._healthy = True
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
            self._last_write_at = time.time()

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
                self._last_write_at = time.time()
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
        try:
            pending = await loop.run_in_executor(self._io, self._count_pending_sync)
        except OSError as exc:  # the spill file is unreadable: serve anyway, say so
            pending = 0
            self._last_error = _error_text(exc)
            self._log.error("records.spill_unreadable", file=str(self._spill_path), error=self._last_error)
        if pending:
            self._spill_pending += pending
            self._log.info("records.spill_found", pending=pending, file=str(self._spill_path))
        self._task = asyncio.create_task(self._run(), name="sluicegate-recorder")

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
        self._io.shutdown(wait=True)
        with self._spill_lock:
            if self._spill_fh is not None:
                self._spill_fh.close()
                self._spill_fh = None
        self._signal_progress()

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
            "store_healthy": self._healthy,
            "last_error": self._last_error,
            "last_write_at": self._last_write_at,
        }
