"""The systems under test, started one at a time on 127.0.0.1 and pinned to their own core.

floor                 the load generator talks to the mock directly
bare-stack            uvicorn + aiohttp forwarding bytes, no logic (bench/bare_proxy.py): what the
                      Python stack alone costs
sluicegate-minimal    `sluicegate serve`, one single-model route, no guards, recording off
                      (`--store none://`; BENCH_MINIMAL_STORE=URL overrides)
sluicegate-full       split 90/10 + sticky_by + fallbacks + guards + capture redacted + sampling,
                      recording to SQLite in a temp dir
litellm               LiteLLM's proxy (pinned release, own venv under /tmp/bench-litellm), 1 worker
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def repo_relative(text: str) -> str:
    """`text` with this checkout's absolute path taken out, so committed results name no machine's layout."""
    return text.replace(f"{ROOT}/", "").replace(str(ROOT), ".")
LITELLM_VERSION = "1.100.5"  # newer releases need certifi>=2026.10.19, not installable here
LITELLM_VENV = Path("/tmp/bench-litellm")

MINIMAL_POLICY = """\
# Sluicegate minimal: one single-model route, no guards, capture left default; recording is turned
# off by the store (`--store none://`).
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: sk-bench-not-a-key}}
models:
  m: {{provider: mock, model: gpt-bench}}
routes:
  bench:
    model: m
"""
MINIMAL_STORE = "none://"

FULL_POLICY = """\
# Sluicegate everything on: split 90/10 with sticky_by, fallbacks, guards, capture redacted,
# sampling 10% to a rule scorer run by the in-process scoring worker; recording to SQLite.
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: sk-bench-not-a-key}}
models:
  prod:      {{provider: mock, model: gpt-bench-prod, params: {{temperature: 0}}}}
  candidate: {{provider: mock, model: gpt-bench-candidate}}
routes:
  bench:
    sticky_by: [header:x-sluicegate-episode, body:user]
    split: {{prod: 90, candidate: 10}}
    fallbacks: [prod]
{guards}    capture: redacted
    sampling: {{default: 0.1, rules: [{{tag: sensitive, rate: 1.0}}, {{guard_failed: true, rate: 1.0}}]}}
    scorers: [no_secrets]
scorers:
  no_secrets: {{kind: rule, regex: '(?i)api[_-]?key|BEGIN PRIVATE KEY', pii: true, taxonomy: forbidden_content}}
"""
GUARDS = "    guards: [tool_params, json_schema, {max_chars: 4000}]\n" \
         "    on_guard_failure: {tool_params: flag, json_schema: flag}\n"

LITELLM_CONFIG = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/gpt-bench
      api_base: "http://127.0.0.1:{port}/v1"
      api_key: sk-bench-not-a-key
litellm_settings:
  telemetry: false
  set_verbose: false
  json_logs: false
general_settings: {{}}
"""


def pin(core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(core)]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s ({last})")


def tree_pids(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / tick


class System:
    name = "?"
    label = "?"
    model = "bench"

    def __init__(self, workdir: Path, mock_port: int, port: int, core: int | None) -> None:
        self.workdir = workdir
        self.mock_port = mock_port
        self.port = port
        self.core = core
        self.proc: subprocess.Popen | None = None
        self.command: list[str] = []
        self.notes: list[str] = []
        self.info: dict = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, cmd: list[str], env: dict | None = None, health: str = "/healthz",
               timeout: float = 30.0) -> None:
        # others edit proxy/ while runs happen: note which code each start actually ran
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "proxy"], cwd=ROOT, capture_output=True,
                               text=True).stdout.splitlines()
        self.info.setdefault("started_at_code", []).append({"git_commit": git, "proxy_uncommitted_files": len(dirty)})
        self.command = pin(self.core) + cmd
        log = open(self.workdir / f"{self.name}.log", "wb")
        full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}  # no database
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env={**full_env, **(env or {})}, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{self.port}{health}", timeout, self.proc)
        except RuntimeError as exc:
            tail = (self.workdir / f"{self.name}.log").read_bytes()[-1500:].decode(errors="replace")
            self.stop()
            raise RuntimeError(f"{self.label} did not start: {exc}\n{tail}") from None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, 15)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)


class Floor(System):
    name, label = "floor", "floor (direct to mock)"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}/v1/chat/completions"

    def start(self) -> None:
        self.command = []

    @property
    def pid(self) -> int | None:
        return None


class BareStack(System):
    name, label = "bare-stack", "bare stack (uvicorn + aiohttp, no logic)"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notes.append("uvicorn (uvloop, httptools, no access log) + one aiohttp session forwarding the body "
                          "bytes to the mock and the answer's bytes back (streams relayed chunk by chunk): the "
                          "Python stack alone; Sluicegate's own logic = Sluicegate minimal minus this")

    def start(self) -> None:
        self._spawn([sys.executable, "-m", "bench.bare_proxy", "--host", "127.0.0.1", "--port", str(self.port),
                     "--upstream", f"http://127.0.0.1:{self.mock_port}"], env={"PYTHONPATH": str(ROOT)})


def sluicegate_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "sluicegate"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "proxy"]


class Sluicegate(System):
    full = False

    def policy_text(self, with_guards: bool = True) -> str:
        if not self.full:
            return MINIMAL_POLICY.format(port=self.mock_port)
        return FULL_POLICY.format(port=self.mock_port, guards=GUARDS if with_guards else "")

    def start(self) -> None:
        policy = self.workdir / f"{self.name}.yaml"
        policy.write_text(self.policy_text())
        if not self.full:  # a single-model route: `serve` validates it itself (saves a second in --quick)
            self.info["policy"] = policy.read_text()
            self._serve(policy)
            return
        check = subprocess.run(sluicegate_cmd() + ["check", str(policy)], capture_output=True, text=True)
        if check.returncode != 0:
            self.notes.append("`sluicegate check` refused the guards, so they were dropped: "
                              + (check.stderr or check.stdout).strip().replace("\n", " | "))
            policy.write_text(self.policy_text(with_guards=False))
            check = subprocess.run(sluicegate_cmd() + ["check", str(policy)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sluicegate check refused {policy}: {(check.stderr or check.stdout).strip()}")
        self.info["policy"] = policy.read_text()
        self.info["check"] = check.stdout.strip()
        self._serve(policy)

    def _serve(self, policy: Path) -> None:
        if self.full:
            store = f"sqlite:///{self.workdir / (self.name + '.db')}"
        else:
            store = os.environ.get("BENCH_MINIMAL_STORE") or MINIMAL_STORE
            note = (f"recording off (`--store {store}`: records counted and discarded), capture left default"
                    if store in ("none", "none://") else f"recording to {store} (BENCH_MINIMAL_STORE)")
            if note not in self.notes:
                self.notes.append(note)
        self.info["store"] = store
        self._spawn(sluicegate_cmd() + ["serve", "--policy", str(policy), "--host", "127.0.0.1",
                                        "--port", str(self.port), "--store", store, "--log-format", "json",
                                        *getattr(self, "extra_args", [])])

    def readyz(self) -> dict:
        import json

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return json.load(resp)
        except Exception as exc:  # noqa: BLE001
            return {"error": str(exc)}


class SluicegateMinimal(Sluicegate):
    name, label, full = "sluicegate-minimal", "Sluicegate minimal", False


class SluicegateFull(Sluicegate):
    name, label, full = "sluicegate-full", "Sluicegate everything-on", True


def ensure_litellm(log: Path) -> str:
    """Install the pinned LiteLLM into its own venv when missing; returns its version."""
    py = LITELLM_VENV / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    if py.exists():
        got = subprocess.run(probe, capture_output=True, text=True)
        if got.returncode == 0 and got.stdout.strip() == LITELLM_VERSION:
            return LITELLM_VERSION
    with open(log, "wb") as out:
        if not py.exists():
            subprocess.run(["python3", "-m", "venv", str(LITELLM_VENV)], check=True, stdout=out, stderr=out)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True, stdout=out, stderr=out, timeout=900)
    got = subprocess.run(probe, capture_output=True, text=True, check=True)
    return got.stdout.strip()


class LiteLLM(System):
    name, label = "litellm", "LiteLLM proxy"

    def start(self) -> None:
        self.info["version"] = ensure_litellm(self.workdir / "litellm-install.log")
        config = self.workdir / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(port=self.mock_port))
        self.info["config"] = config.read_text()
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
               "DISABLE_ADMIN_UI": "True", "STORE_MODEL_IN_DB": "False",
               "NO_DOCS": "True"}
        self.info["env"] = env
        exe = str(LITELLM_VENV / "bin" / "litellm")
        self._spawn([exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
                     "--num_workers", "1"], env=env, health="/health/liveliness", timeout=120)


SYSTEMS = {cls.name: cls for cls in (Floor, BareStack, SluicegateMinimal, SluicegateFull, LiteLLM)}


def shell(cmd: list[str]) -> str:
    return shlex.join(cmd)
