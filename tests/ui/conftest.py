"""The dashboard in-process: the gateway app with `ui_routes()` added, on a seeded SQLite store,
the mock upstream in the providers' transport slot (so "replay on variant…" gets a real answer)."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import load_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.records import SQLiteStore
from proxy.server import Settings, create_app
from proxy.ui import ui_routes
from tests.ui._seed import ADMIN_KEY, seed, write_policy

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ORIGIN = "http://gw"  # the test client's base URL: its Host header is "gw"


@dataclasses.dataclass
class UI:
    client: httpx.AsyncClient  # sends the admin key
    anonymous: httpx.AsyncClient  # sends no key
    gateway: Any
    notable: dict[str, Any]
    store_path: Path


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, seeded: bool = True) -> AsyncIterator[UI]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    notable = await seed(store) if seeded else {}
    await store.close()
    app = create_app(Settings(policy=load_policy(write_policy(tmp_path)), store_url=f"sqlite:///{tmp_path}/store.db",
                              transports={"mock": httpx.ASGITransport(app=create_mock())}))
    if not any(getattr(r, "path", "").startswith("/ui") for r in app.router.routes):
        app.router.routes.extend(ui_routes())  # until the gateway wires the dashboard itself
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=ADMIN) as client, \
                httpx.AsyncClient(transport=transport, base_url=ORIGIN) as anonymous:
            yield UI(client, anonymous, app.state.gateway, notable, tmp_path / "store.db")


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[UI]:
    async with running(tmp_path) as started:
        yield started


_CELL = re.compile(r'data-figure="([^"]+)"[^>]*>(.*?)</(?:td|th|span|dd|p)>', re.S)
_TAG = re.compile(r"<[^>]+>")


def text_of(fragment: str) -> str:
    """What a browser shows of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def figures(page: str, row_attr: str, key: str) -> dict[str, str]:
    """The `data-figure` cells of the table row `<tr {row_attr}="{key}" …>` (first such row)."""
    match = re.search(rf'<tr {row_attr}="{re.escape(key)}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no row {row_attr}={key!r} on the page"
    return {name: text_of(value) for name, value in _CELL.findall(match.group(1))}


def rows_of(page: str, anchor: str, row_attr: str) -> dict[str, dict[str, str]]:
    """Every `<tr {row_attr}=…>` row of the card where `anchor` (e.g. `id="arms-h"`) stands: key -> its figures."""
    start = page.index(anchor)
    end = page.find("</section>", start)
    part = page[start:end]
    return {key: {n: text_of(v) for n, v in _CELL.findall(body)}
            for key, body in re.findall(rf'<tr {row_attr}="([^"]+)"[^>]*>(.*?)</tr>', part, re.S)}


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert match, "the page's form carries a CSRF token"
    return match.group(1)
