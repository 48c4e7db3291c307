"""Which `Host` names this gateway answers to (`server.allowed_hosts`): DNS rebinding.

A page on evil.example whose name is made to resolve to 127.0.0.1 is, to the browser, same-origin
with a gateway listening there: it may read every answer. What gives it away is `Host:
evil.example`, which the browser always sends. So `Host` is checked before anything else (421,
OpenAI's error shape). Default: an open gateway (no `auth.keys`) answers to loopback names only;
one with keys to any name (a key is what a rebinding page does not have).

Not starlette's `TrustedHostMiddleware`: it answers in plain text, reads its list once (a reload
changes `allowed_hosts`, and the default follows `auth.keys`) and ignores ports. Its pattern
language is kept: `name`, `*.domain` (subdomains only), `*`; here `:port` may follow.
`/healthz` is exempt (it says only "ok"; probes send the pod's address as Host).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from proxy.errors import HostNotAllowed, error_response
from proxy.logs import get_logger

__all__ = ["EXEMPT_PATHS", "LOOPBACK_HOSTS", "HostAllowList", "HostCheck", "parse_host"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
EXEMPT_PATHS = frozenset({"/healthz"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")

log = get_logger("sluicegate.hosts")


def parse_host(value: str | None) -> tuple[str, int | None] | None:
    """`Host` as (name, port): lower case, an IPv6 address in brackets, a trailing dot dropped; None
    when it is not a host (empty, a path, user info, a bad port)."""
    if not value:
        return None
    value = value.lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not _ipv6_chars(value[1:end]):
            return None
        name, rest = value[:end + 1], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port_text = port_text if colon else None
        name = name[:-1] if name.endswith(".") else name
        if not name or not _NAME_CHARS.issuperset(name):
            return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        return None
    return name, int(port_text)


def _ipv6_chars(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef:." for c in text)


@dataclasses.dataclass(frozen=True, slots=True)
class HostAllowList:
    """Compiled `server.allowed_hosts`: names on any port, names on one port, `*.domain` suffixes."""

    any_host: bool
    names: frozenset[str] = frozenset()
    name_ports: frozenset[tuple[str, int]] = frozenset()
    suffixes: tuple[tuple[str, int | None], ...] = ()  # (".example.com", port or None)
    configured: bool = True  # False: the loopback default of an open gateway (said so in the refusal)

    @classmethod
    def from_patterns(cls, patterns: Sequence[str], configured: bool = True) -> HostAllowList:
        names: set[str] = set()
        name_ports: set[tuple[str, int]] = set()
        suffixes: list[tuple[str, int | None]] = []
        for pattern in patterns:
            if pattern == "*":
                return cls(any_host=True)
            host, port = pattern, None
            if not pattern.endswith("]") and pattern.rpartition(":")[2].isdigit():
                head, _, tail = pattern.rpartition(":")
                host, port = head, int(tail)
            host = host[:-1] if host.endswith(".") else host
            if host.startswith("*."):
                suffixes.append((host[1:], port))
            elif port is None:
                names.add(host)
            else:
                name_ports.add((host, port))
        return cls(False, frozenset(names), frozenset(name_ports), tuple(suffixes), configured)

    @classmethod
    def for_policy(cls, policy: Any) -> HostAllowList:
        configured = policy.server.allowed_hosts
        if configured is not None:
            return cls.from_patterns(configured)
        if policy.auth.keys:
            return cls(any_host=True)
        return cls.from_patterns(LOOPBACK_HOSTS, configured=False)

    def admits(self, host: str | None) -> bool:
        if self.any_host:
            return True
        parsed = parse_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.names or (port is not None and (name, port) in self.name_ports):
            return True
        return any(name.endswith(suffix) and (want is None or want == port) for suffix, want in self.suffixes)

    def refusal(self, host: str | None) -> HostNotAllowed:
        shown = repr(host[:100]) if host else "(none)"
        if self.configured:
            where = "it is not in the policy's server.allowed_hosts"
        else:
            where = (f"an open gateway (no auth.keys) answers only to {', '.join(LOOPBACK_HOSTS)}, so that a page "
                     "whose name is made to resolve here (DNS rebinding) cannot use it")
        return HostNotAllowed(f"this gateway does not answer to Host {shown}: {where}. Connect with an allowed name, "
                              "or add the name clients use to server.allowed_hosts in the policy", param="host")


def _host_header(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return value.decode("latin-1")
    return None


class HostCheck:
    """ASGI middleware: a request whose `Host` the current policy does not allow gets a 421 before
    any other middleware or endpoint runs. The allow-list is compiled once per policy (a reload
    swaps the policy; the next request compiles the new one)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._compiled: tuple[Any, HostAllowList] | None = None

    def _allow_list(self, policy: Any) -> HostAllowList:
        compiled = self._compiled
        if compiled is None or compiled[0] is not policy:
            compiled = self._compiled = (policy, HostAllowList.for_policy(policy))
        return compiled[1]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "app" in scope:
            gateway = getattr(scope["app"].state, "gateway", None)
            if gateway is not None:
                allowed = self._allow_list(gateway.policy)
                if not allowed.any_host and scope["path"] not in EXEMPT_PATHS:
                    host = _host_header(scope)
                    if not allowed.admits(host):
                        log.warning("host_refused", host=(host or "")[:100], path=scope["path"][:200])
                        await error_response(allowed.refusal(host))(scope, receive, send)
                        return
        await self.app(scope, receive, send)
