"""A gateway in-process for the cross-site, Host and disclosure tests.

The dashboard's seeded store and policy (a caller key, an admin key, a canary route, a review
queue, outcomes), written to a file so `/admin/reload` has something to reload, and a mock
upstream that counts the requests reaching it. `counts()` is what the tests compare before and
after an attack: everything a state-changing endpoint can write.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from proxy.mock_upstream import create_app as create_mock
from proxy.records import SQLiteStore
from proxy.server import Settings, create_app
from tests.ui._seed import ADMIN_KEY, CALLER_KEY, seed, write_policy

__all__ = ["ADMIN", "ADMIN_KEY", "CALLER", "CALLER_KEY", "Counting", "Site", "basic", "running_site"]

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CALLER = {"authorization": f"Bearer {CALLER_KEY}"}


# a gateway with no keys at all: the Host and cross-site defaults for open gateways apply
OPEN_POLICY = """
providers:
  mock: {kind: openai, base_url: "{mock}"}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  faq: {model: prod}
"""


def basic(password: str, user: str = "admin") -> dict[str, str]:
    """What a browser that logged in to the dashboard attaches by itself to every request to the gateway."""
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Counting:
    """ASGI wrapper: how many HTTP requests reached the app (the upstream must receive nothing)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


@dataclasses.dataclass
class Site:
    app: Any
    client: httpx.AsyncClient  # no credentials of its own
    upstream: Counting
    notable: dict[str, Any]
    policy_path: Path

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    async def counts(self) -> dict[str, int]:
        """Everything a state change could have written, counted in the store (after a flush)."""
        await self.gateway.recorder.flush()
        out = {}
        for name, sql in (("records", "SELECT count(*) FROM records"), ("outcomes", "SELECT count(*) FROM outcomes"),
                          ("reviews", "SELECT count(*) FROM reviews"),
                          ("human_labels", "SELECT count(*) FROM scores WHERE kind = 'human'"),
                          ("canary_decisions", "SELECT count(*) FROM canary_decisions")):
            (out[name],), = await self.gateway.store.fetch(sql)
        out["reloads"] = self.app.state.reloader.reloads
        out["upstream_requests"] = self.upstream.requests
        return out


@contextlib.asynccontextmanager
async def running_site(tmp_path: Path, *, policy_text: str | None = None, seeded: bool = True,
                       base_url: str = "http://localhost:8080", providers: tuple[str, ...] = ("mock",),
                       ) -> AsyncIterator[Site]:
    """`policy_text`: another policy (its `{mock}` is the mock's base URL); default: the dashboard's.
    `providers`: the policy's provider names, each answered by the (one, counting) mock."""
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    notable = await seed(store) if seeded else {}
    await store.close()
    policy_path = write_policy(tmp_path)
    if policy_text is not None:
        policy_path.write_text(policy_text.replace("{mock}", "http://mock.test/v1"))
    upstream = Counting(create_mock())
    app = create_app(Settings(policy_path=policy_path, store_url=f"sqlite:///{tmp_path}/store.db",
                              transports={name: httpx.ASGITransport(app=upstream) for name in providers},
                              report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            yield Site(app, client, upstream, notable, policy_path)
