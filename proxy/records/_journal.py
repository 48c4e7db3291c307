"""The journal (`serve --journal PATH`): each record appended to a file before its request is answered.

Without it, a record waits in the recorder's memory for up to one flush interval (50 ms) plus one
store write before it is in the store or the spill file, and `kill -9` (an OOM kill, a segfault)
loses what was waiting. With it, `Recorder.submit` seals the record (capture mode applied: the
journal never holds text the store would not) and appends it with one write(2) to a file opened
with O_APPEND, on the request path, before the response is sent: once the write returns, the record
is in the kernel and survives the process dying at any moment. It does NOT survive a power cut or
a kernel crash: there is no fsync (one per request would hold the event loop for milliseconds; the
SQLite store itself runs synchronous=NORMAL, with the same power-loss window).

Files: `PATH.1`, `PATH.2`, … (generations; never renamed, so a failed rotation changes nothing). The
recorder appends to the newest, starts a new generation at most once a second, and deletes an older
one once every record in it is in the store or the spill file (see `Recorder`). At start, files
left by an earlier process are moved into the spill file and replayed into the store like spilled
records; writes are idempotent by record id, so records stored before the crash are not stored twice.

One process per journal: `lock()` takes an exclusive `flock` on `PATH.lock` (released by the kernel
when the process dies, so a restart after `kill -9` gets it), and a second process on the same PATH
is refused — it would otherwise adopt and delete the first one's live files.

Only the event loop's thread appends and rotates; deleting a finished generation may run on any thread.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

__all__ = ["Journal"]


class Journal:
    """Append-only generations of JSON lines: `PATH.1`, `PATH.2`, …"""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)")
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._generation = 0
        self._torn = False  # the last append failed part-way: start the next one on a new line
        self.appended = 0  # lines written since open
        self.bytes = 0  # bytes in the current generation

    def file(self, generation: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{generation}")

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def is_locked(self) -> bool:
        return self._lock_fd is not None

    def leftovers(self) -> list[tuple[int, Path]]:
        """(generation, file) of every generation on disk, oldest first."""
        found = []
        try:
            names = os.listdir(self.path.parent)
        except FileNotFoundError:
            return []
        for name in names:
            match = self._pattern.fullmatch(name)
            if match:
                found.append((int(match[1]), self.path.parent / name))
        return sorted(found)

    def lock(self) -> None:
        """Claim the journal for this process (raises OSError if another process holds it)."""
        if self._lock_fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(f"the journal {self.path} is in use by another process (each gateway needs its own "
                          "--journal PATH)") from None
        self._lock_fd = fd

    def open(self) -> None:
        """Start a new generation, numbered after any still on disk (their names are never reused)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        last = max((gen for gen, _ in self.leftovers()), default=0)
        self._fd = self._create(last + 1)
        self._generation = last + 1
        self.bytes = 0

    def _create(self, generation: int) -> int:
        return os.open(self.file(generation), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def append(self, data: bytes) -> None:
        """Append complete lines with write(2) (raises OSError: disk full, I/O error, closed)."""
        fd = self._fd
        if fd is None:
            raise OSError("the journal is not open")
        if self._torn:
            data = b"\n" + data  # a blank line is skipped on replay; a line glued to a torn one would be lost
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            self._torn = True
            raise
        self._torn = False
        self.bytes += len(data)
        self.appended += 1

    def rotate(self) -> int:
        """Continue in a new generation; returns the one just finished. On error nothing changes."""
        old_fd, old = self._fd, self._generation
        if old_fd is None:
            raise OSError("the journal is not open")
        self._fd = self._create(old + 1)
        self._generation = old + 1
        self.bytes = 0
        self._torn = False
        os.close(old_fd)
        return old

    def discard(self, generation: int) -> None:
        """Delete a finished generation (its records are stored or spilled)."""
        self.file(generation).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the current generation and let another process claim the journal."""
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                os.close(fd)
