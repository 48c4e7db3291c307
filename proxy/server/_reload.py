"""Atomic policy reload: on SIGHUP, `POST /admin/reload`, or (`serve --watch-policy`) when the file changes.

The new file is parsed and validated completely (strict models, then cross-references) before
anything changes; then the gateway is swapped in ONE assignment. A request reads the gateway once
when it starts, so in-flight requests finish on the policy they started with. A bad file is
refused with file, line and field; the old policy keeps serving; the refusal is logged and shown
in `/readyz`. Provider adapters whose configuration did not change are kept (their connection
pools too); the others are closed after a grace period, once the requests that use them are done.
Sticky assignment survives weight changes as well as it can: buckets are contiguous ranges, so
when weights change only the users in buckets that changed hands move.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.config import PolicyError, load_policy
from proxy.errors import InvalidRequest, error_response
from proxy.logs import get_logger, set_secrets
from proxy.providers import build_provider
from proxy.server._auth import Authenticator
from proxy.server._gateway import compile_routes
from proxy.server._limits import ProviderSlots
from proxy.server._state import Gateway

__all__ = ["PolicyRefused", "Reloader", "admin_reload", "watch_policy_file"]

log = get_logger("sluicegate.reload")

CLOSE_AFTER_S = 300.0  # a replaced provider's pool is closed this long after the swap


class PolicyRefused(InvalidRequest):
    code = "policy_invalid"


class Reloader:
    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = asyncio.Lock()
        self.last: dict[str, Any] | None = None
        self.reloads = 0
        self._closing: set[asyncio.Task[None]] = set()
        self._dropped: list[Any] = []

    async def reload(self) -> dict[str, Any]:
        """Load the policy file again and swap it in; raises `PolicyRefused` (old policy kept)."""
        async with self._lock:
            settings = self._app.state.settings
            old: Gateway = self._app.state.gateway
            if settings.policy_path is None:
                raise PolicyRefused("this gateway was started without a policy file; there is nothing to reload")
            try:
                policy = await asyncio.to_thread(load_policy, settings.policy_path)
            except (PolicyError, OSError) as exc:
                message = str(exc) if isinstance(exc, PolicyError) else f"{settings.policy_path}: {exc.strerror}"
                self.last = {"at": time.time(), "ok": False, "error": message, "serving": old.policy.version}
                log.error("policy_reload_refused", error=message, serving=old.policy.version)
                raise PolicyRefused(f"policy refused, the old one keeps serving: {message}") from None
            providers, dropped = self._providers(old, policy)
            set_secrets([*old.policy.secrets(), *policy.secrets()])  # old pools may still answer for a while
            scoring = self._scoring(old, policy, providers)
            new = dataclasses.replace(old, policy=policy, routes=compile_routes(policy), providers=providers,
                                      max_body_bytes=policy.server.max_body_bytes, scoring=scoring,
                                      auth=Authenticator(policy.auth), slots=ProviderSlots(policy, old.slots))
            self._app.state.gateway = new  # the swap: one assignment
            self._restart_scoring(scoring)
            self._close_later(dropped)
            self.reloads += 1
            self.last = {"at": time.time(), "ok": True, "version": policy.version, "previous": old.policy.version}
            log.info("policy_reloaded", version=policy.version, previous=old.policy.version,
                     routes=sorted(policy.routes))
            return self.last

    def _providers(self, old: Gateway, policy: Any) -> tuple[dict[str, Any], list[Any]]:
        """Keep the adapters whose provider config is unchanged; build the others."""
        transports = self._app.state.settings.transports or {}
        kept: dict[str, Any] = {}
        for name, config in policy.providers.items():
            before = old.policy.providers.get(name)
            if before is not None and name in old.providers and _same(before, config):
                kept[name] = old.providers[name]
            else:
                try:
                    kept[name] = build_provider(name, config, transports.get(name))
                except NotImplementedError as exc:
                    log.warning("provider_skipped", provider=name, reason=str(exc))
        dropped = [adapter for name, adapter in old.providers.items() if kept.get(name) is not adapter]
        return kept, dropped

    def _scoring(self, old: Gateway, policy: Any, providers: dict[str, Any]) -> Any:
        if old.scoring is None and self._app.state.settings.scoring != "inprocess":
            return None
        from proxy.scoring import build_scoring

        spent = old.scoring.stats()["judge_budget"]["spent_today_usd"] if old.scoring is not None else 0.0
        scoring = build_scoring(policy, providers, old.recorder, old.store, spent)
        if scoring is not None and old.scoring is not None:
            scoring.queue = old.scoring.queue  # jobs already sampled are scored by the new scorers
        return scoring

    def _restart_scoring(self, scoring: Any) -> None:
        task = getattr(self._app.state, "scoring_task", None)
        if task is not None:
            task.cancel()  # a job it had claimed is delivered again after the visibility timeout
        consume = self._app.state.settings.scoring == "inprocess"  # external: `sluicegate worker` consumes
        self._app.state.scoring_task = (asyncio.create_task(scoring.run(), name="sluicegate-scoring")
                                        if scoring is not None and consume else None)

    def _close_later(self, adapters: list[Any]) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_AFTER_S)
            for adapter in adapters:
                self._dropped.remove(adapter)
                await adapter.close()

        if adapters:
            self._dropped.extend(adapters)
            task = asyncio.create_task(close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close_pending(self) -> None:
        """At shutdown: close the replaced pools now."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for adapter in self._dropped:
            await adapter.close()
        self._dropped.clear()


def _same(a: Any, b: Any) -> bool:
    return bool(a == b)  # frozen pydantic models: field by field, keys (SecretStr) by value


async def admin_reload(request: Request) -> Response:
    reloader: Reloader = request.app.state.reloader
    try:
        result = await reloader.reload()
    except PolicyRefused as exc:
        return error_response(exc)
    return Response(orjson.dumps({"object": "policy.reload", **result}), media_type="application/json")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes ConfigMap update swaps a symlink
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def watch_policy_file(reloader: Reloader, path: str | Path, interval_s: float = 1.0) -> asyncio.Task[None]:
    """Reload when the file's mtime, size or inode changes (polling: works on every filesystem and
    for ConfigMap volumes). A refused file is logged and shown in /readyz once, not retried until
    it changes again; a file that is missing for a moment (an editor's save) is waited for."""
    seen = _signature(Path(path))  # now, not when the task first runs: a change in between counts
    return asyncio.create_task(_watch(reloader, Path(path), interval_s, seen), name="sluicegate-policy-watch")


async def _watch(reloader: Reloader, path: Path, interval_s: float, seen: tuple[int, int, int] | None) -> None:
    while True:
        await asyncio.sleep(interval_s)
        now = _signature(path)
        if now is None or now == seen:
            continue
        seen = now
        log.info("policy_file_changed", path=str(path))
        try:
            await reloader.reload()
        except PolicyRefused:
            pass  # already logged, and in /readyz
