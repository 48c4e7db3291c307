"""Who may call: callers' keys and admin keys, held as SHA-256 hashes in the policy.

A presented key is hashed and looked up; the digest found is confirmed with `hmac.compare_digest`,
so neither the look-up nor the comparison leaks anything about a key through timing (an attacker
would need SHA-256 preimages). The key itself is never logged, recorded, forwarded upstream or put
in an error. With no caller keys configured the gateway is open, and `sluicegate serve` then binds
to 127.0.0.1 only unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import AuthenticationFailed, PermissionDenied, error_response
from proxy.keys import hash_key, presented_key

__all__ = ["Authenticator", "Caller", "admin_only"]

_NO_KEY = ("no API key: send `Authorization: Bearer <your key>` (this gateway's key, not a provider's)")
_BAD_KEY = "the API key is not one this gateway knows (check it, or ask for one: `sluicegate keys hash`)"


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    name: str
    routes: frozenset[str] | None  # None: every route
    rate_limit: Any = None  # proxy.config.RateLimit
    digest: str = dataclasses.field(default="", repr=False)
    max_concurrent: int | None = None  # None: the policy's server.max_concurrent_per_key

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


class Authenticator:
    def __init__(self, auth: Any) -> None:
        self._callers: dict[str, Caller] = {}
        for name, key in auth.keys.items():
            routes = None if "*" in key.routes else frozenset(key.routes)
            self._callers[key.hash] = Caller(name, routes, key.rate_limit, key.hash, key.max_concurrent)
        self._admin = list(auth.admin_keys)

    @property
    def open(self) -> bool:
        """No caller keys: anyone on the network this binds to may call."""
        return not self._callers

    def caller(self, headers: Mapping[str, str]) -> Caller | None:
        """The caller of a request (None when the gateway is open); 401 without a known key."""
        if self.open:
            return None
        token = presented_key(headers)
        if token is None:
            raise AuthenticationFailed(_NO_KEY)
        digest = hash_key(token)
        found = self._callers.get(digest)
        if found is None or not hmac.compare_digest(digest, found.digest):
            raise AuthenticationFailed(_BAD_KEY)
        return found

    def allow(self, caller: Caller | None, route: str) -> None:
        if caller is not None and not caller.may_use(route):
            raise PermissionDenied(f"key '{caller.name}' may not use route '{route}'", param="model",
                                   code="route_not_allowed")

    def admin(self, headers: Mapping[str, str]) -> None:
        """Admin endpoints: open with the gateway; else an admin key (403 when none is configured)."""
        if self.open and not self._admin:
            return
        token = presented_key(headers)
        if token is None:
            raise AuthenticationFailed(_NO_KEY + "; this endpoint needs an admin key")
        digest = hash_key(token)
        if not any(hmac.compare_digest(digest, admin) for admin in self._admin):
            if not self._admin:
                raise PermissionDenied("this endpoint needs an admin key, and the policy has none "
                                       "(`auth.admin_keys`)", code="admin_key_required")
            raise PermissionDenied("this endpoint needs an admin key", code="admin_key_required")

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        """Whether these headers may use the admin endpoints (always, on an open gateway without admin keys)."""
        try:
            self.admin(headers)
        except (AuthenticationFailed, PermissionDenied):
            return False
        return True


def admin_only(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that needs an admin key (when the gateway has keys at all)."""

    async def guarded(request: Request) -> Response:
        try:
            request.app.state.gateway.auth.admin(request.headers)
        except (AuthenticationFailed, PermissionDenied) as exc:
            # pages: let the browser ask for the admin key (as the password of its login prompt)
            page = request.url.path.startswith(("/ui", "/review")) and "/api/" not in request.url.path
            challenge = {"www-authenticate": 'Basic realm="sluicegate admin", charset="UTF-8"'} if page else None
            return error_response(exc, challenge)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    return guarded
