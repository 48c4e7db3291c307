"""`sluicegate prune` and `sluicegate migrate` on SQLite and PostgreSQL: old rows go in batches, recent
rows and current state stay, the newest SQLite rowids are kept for workers' cursors."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.records import Outcome, Record, open_store
from proxy.records._retention import prune
from proxy.records._store import SCHEMA_VERSION
from tests._services import postgres_url  # noqa: F401 (fixture)

NOW = 1_800_000_000.0
DAY = 86400.0


def rows(n_old: int, n_new: int) -> list[Any]:
    out: list[Any] = []
    for i in range(n_old + n_new):
        t = NOW - (100 * DAY if i < n_old else DAY)
        out.append(Record(id=f"att_{i:05d}", request_id=f"req_{i:05d}", attempt=1, attempt_reason="primary",
                          endpoint="chat.completions", route="bot", variant="prod", provider="mock",
                          model_requested="m", started_at=t, served=True))
        out.append(Outcome(id=f"out_{i:05d}", metric="ok", value=1.0, level="inference", received_at=t,
                           request_id=f"req_{i:05d}"))
    out.append({"row": "cache", "key": "old", "route": "bot", "variant": "prod", "model": "m",
                "created_at": NOW - 2 * DAY, "expires_at": NOW - DAY, "answer": "{}"})
    out.append({"row": "cache", "key": "fresh", "route": "bot", "variant": "prod", "model": "m",
                "created_at": NOW, "expires_at": NOW + DAY, "answer": "{}"})
    out.append({"row": "canary_state", "route": "bot", "stage": 5.0, "status": "running", "updated_at": NOW - 200 * DAY,
                "reason": "start"})
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(store_url: str) -> Any:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


async def count(store: Any, table: str) -> int:
    return int((await store.fetch(f"SELECT count(*) FROM {table}"))[0][0])


async def test_prune_deletes_old_rows_in_batches_and_keeps_the_rest(store: Any) -> None:
    await store.write_records(rows(n_old=23, n_new=7))
    seen: list[tuple[str, int]] = []
    deleted = await prune(store, 90 * DAY, batch=5, now=NOW, progress=lambda t, n: seen.append((t, n)))
    assert deleted == {"records": 23, "outcomes": 23, "outcome_conflicts": 0, "scores": 0, "reviews": 0,
                       "canary_decisions": 0, "response_cache": 1}
    assert [n for t, n in seen if t == "records"] == [5, 10, 15, 20, 23]  # bounded transactions
    assert await count(store, "records") == 7 and await count(store, "outcomes") == 7
    assert [k for (k,) in await store.fetch("SELECT key FROM response_cache")] == ["fresh"]
    assert await count(store, "canary_state") == 1  # current state is never pruned


async def test_sqlite_keeps_the_newest_rowid_even_when_everything_is_old(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    await s.open()
    try:
        await s.write_records(rows(n_old=10, n_new=0))
        deleted = await prune(s, 90 * DAY, now=NOW)
        assert deleted["records"] == 9 and await count(s, "records") == 1
    finally:
        await s.close()


def test_migrate_cli_creates_then_reports_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["migrate", "--store", url, "--check"]) == 1
        assert main(["migrate", "--store", url]) == 0
        assert main(["migrate", "--store", url, "--check"]) == 0
    lines = out.getvalue().splitlines()
    assert "schema absent" in lines[0] and lines[1].endswith(f"schema absent -> {SCHEMA_VERSION}") and "up to date" in lines[2]


def test_a_bad_store_url_is_a_clear_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--older-than", "30d", "--store", "/var/lib/x.db"]) == 2
    assert "sqlite:////absolute/path.db" in capsys.readouterr().err
