"""Optional py-spy profile of a Sluicegate under closed-loop load (`python -m bench --profile`).

Runs after the measured scenarios (never during them): the same closed loop at c=64, 0 ms upstream,
once with `py-spy record --format raw` (collapsed stacks -> top frames by own time) and once with the
default flame graph SVG. py-spy is installed into /tmp/bench-tools when missing.
"""

from __future__ import annotations

import subprocess
import sys
import re
from collections import Counter
from pathlib import Path

from bench.scenarios import configure_mock
from bench.systems import System, pin, repo_relative, shell

TOOLS = Path("/tmp/bench-tools")


def ensure_py_spy() -> str:
    exe = TOOLS / "bin" / "py-spy"
    if not exe.exists():
        if not (TOOLS / "bin" / "python").exists():
            subprocess.run(["python3", "-m", "venv", str(TOOLS)], check=True, capture_output=True)
        subprocess.run([str(TOOLS / "bin" / "pip"), "install", "-q", "py-spy"], check=True, capture_output=True,
                       timeout=600)
    return str(exe)


def top_own(raw: Path, n: int = 10) -> tuple[list[dict], int]:
    """Frames by own (self) time from py-spy's collapsed stacks: `frame;frame;leaf count`."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        own[re.sub(r":\d+\)$", ")", stack.split(";")[-1])] += int(count)  # per function, not per line
    return ([{"frame": f, "samples": c, "share": round(c / total, 4)} for f, c in own.most_common(n)], total)


def profile(system: System, mock_port: int, load_core: int | None, out: Path, seconds: float = 8.0) -> dict:
    py_spy = ensure_py_spy()
    configure_mock(mock_port, {"latency_ms": 0})
    load = pin(load_core) + [sys.executable, "-m", "bench.load", "--url", system.url, "--model", system.model,
                             "--mode", "closed", "--concurrency", "64", "--duration", str(seconds + 2),
                             "--warmup", "1"]
    result: dict = {"load_command": shell(load)}
    for fmt, path in (("raw", out / f"profile-{system.name}.txt"), ("flamegraph", out / f"flame-{system.name}.svg")):
        spy = [py_spy, "record", "--pid", str(system.pid), "--duration", str(int(seconds)), "--rate", "250",
               "--nonblocking", "--format", fmt, "--output", str(path)]
        gen = subprocess.Popen(load, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            subprocess.run(["sleep", "1.2"])
            rec = subprocess.run(spy, capture_output=True, text=True, timeout=seconds + 60)
        finally:
            gen.wait(timeout=seconds + 30)
        result[f"{fmt}_command"] = shell(spy)
        if rec.returncode != 0:
            result["error"] = rec.stderr[-1000:]
            return result
        path.write_text(repo_relative(path.read_text()))  # py-spy writes its own command line into the file
        result[fmt] = str(path)
    top, total = top_own(out / f"profile-{system.name}.txt")
    result["samples"] = total
    result["top_own"] = top
    return result
