"""Dockerfile, .dockerignore and deploy/requirements.lock, checked as text (no Docker engine here):
non-root user, healthcheck, every COPY source present in the build context, no tests or bench in
it, and pins that cover every runtime dependency and every third-party import of the package."""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy._files import DEPLOY, ROOT

LOCK = DEPLOY / "requirements.lock"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


INSTRUCTIONS = _instructions((ROOT / "Dockerfile").read_text())


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in INSTRUCTIONS:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _words(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def _final() -> list[tuple[str, str]]:
    return _stages()[-1]


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for k, rest in stage if k == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def test_multi_stage_slim_python_311() -> None:
    args = dict(rest.split("=", 1) for k, rest in INSTRUCTIONS if k == "ARG" and "=" in rest)
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0][1].split()[0])
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_a_non_root_user() -> None:
    user = _one(_final(), "USER").split(":")[0]
    assert user not in {"root", "0", ""}
    assert user.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"


def test_healthcheck_uses_python_not_curl() -> None:
    check = _one(_final(), "HEALTHCHECK")
    assert "/healthz" in check and "urllib" in check
    assert "curl" not in check and "wget" not in check
    command = _words(check.split("CMD", 1)[1].strip())
    assert command[0] == "python"
    compile(command[-1], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_entrypoint_command_port_and_volume() -> None:
    final = _final()
    assert _words(_one(final, "ENTRYPOINT"))[-1] == "sluicegate"
    assert _words(_one(final, "CMD")) == ["serve", "--policy", "/etc/sluicegate/policy.yaml",
                                           "--host", "0.0.0.0", "--port", "8080"]
    assert "8080" in _one(final, "EXPOSE").split()
    assert "/data" in _words(_one(final, "VOLUME"))
    assert _one(final, "WORKDIR") == "/data"  # the spill file of a PostgreSQL-backed replica


def test_no_compilers_in_the_image() -> None:
    text = " ".join(rest for _, rest in INSTRUCTIONS if _ == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "clang", "python3-dev", "libpq-dev"):
        assert tool not in text, tool
    assert "--only-binary=:all:" in text  # wheels only: a missing wheel fails the build, not a compiler


def test_dependencies_are_installed_from_the_lock_and_checked() -> None:
    runs = [rest for k, rest in INSTRUCTIONS if k == "RUN"]
    assert any("--no-deps" in r and "-r deploy/requirements.lock" in r for r in runs)
    assert any("pip --python /opt/venv/bin/python check" in r for r in runs)


# ---------------------------------------------------------------- build context


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                rx, i = rx + pattern[i:end + 1], end + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        patterns.append((negate, re.compile(rx)))
    return patterns


def _in_context(path: str) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for negate, rx in _dockerignore():
        if any(rx.fullmatch(c) for c in candidates):
            included = negate
    return included


def _copy_sources() -> list[str]:
    sources = []
    for keyword, rest in INSTRUCTIONS:
        if keyword in {"COPY", "ADD"}:
            words = [w for w in _words(rest) if not w.startswith("--")]
            if any(w.startswith("--from=") for w in _words(rest)):
                continue
            sources += words[:-1]
    return sources


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    sources = _copy_sources()
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        assert _in_context(source), f"COPY {source}: excluded by .dockerignore"
        if path.is_dir():
            assert any(_in_context(str(p.relative_to(ROOT))) for p in path.rglob("*.py")), source


def test_build_context_leaves_out_tests_bench_and_local_state() -> None:
    for path in ("tests/deploy/test_dockerfile.py", "bench/load.py", ".venv/bin/python", ".git/HEAD",
                 "sluicegate.db", "proxy/__pycache__/cli.cpython-311.pyc", "deploy/.env", "policies/demo.yaml",
                 "sluicegate.egg-info/PKG-INFO", "proxy/sluicegate.spill.jsonl"):
        assert not _in_context(path), path
    for path in ("pyproject.toml", "README.md", "proxy/cli.py", "proxy/py.typed", "deploy/requirements.lock"):
        assert _in_context(path), path


def test_the_package_build_needs_nothing_else_from_the_context() -> None:
    """setuptools reads pyproject.toml, the readme it names and the packages: all copied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = set(_copy_sources())
    assert {"pyproject.toml", project["readme"]} <= copied
    assert "proxy" in copied or "proxy/" in copied


# ---------------------------------------------------------------- the lock


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"not an exact pin: {line!r}"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from deploy/requirements.lock: run deploy/freeze_runtime.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"


def test_lock_has_no_test_or_dev_tools() -> None:
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        for spec in extra:
            name = canonicalize_name(Requirement(spec).name)
            assert name in runtime or name not in pins, f"{name} (a test/dev extra) is in the image's lock"


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> a file of proxy/ importing it, for every module outside the stdlib."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"proxy", "__future__"}:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_import_of_the_package_is_provided_by_the_lock() -> None:
    """The image installs the lock with --no-deps: a module the code imports but nothing pins
    would fail at run time, not at build time."""
    pins = _lock()
    providers = packages_distributions()
    for module, where in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists:
            pytest.fail(f"{where} imports {module}, which no installed distribution provides")
        assert dists & set(pins), f"{where} imports {module} ({sorted(dists)}): not in deploy/requirements.lock"


def test_freeze_script_documents_how_to_regenerate() -> None:
    header = LOCK.read_text().splitlines()[:3]
    assert any("deploy/freeze_runtime.py" in line for line in header)
    assert Path(DEPLOY / "freeze_runtime.py").is_file()
