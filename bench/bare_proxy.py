"""The "bare stack": uvicorn + aiohttp forwarding bytes, no logic — what the Python stack alone costs.

    python -m bench.bare_proxy --port 9102 --upstream http://127.0.0.1:9101

Uvicorn (uvloop, httptools, no access log, no proxy headers, no server header) serving a bare ASGI
app: POST bodies are forwarded as bytes to `<upstream>/v1/chat/completions` with one module-level
aiohttp.ClientSession (TCPConnector limit 256, DummyCookieJar, created in the lifespan) and the
answer's bytes returned as they are. A request whose body asks for `"stream": true` is relayed
chunk by chunk as the upstream sends it (`content.iter_any()`, `more_body`). No parsing, routing,
validation, recording or logging: Sluicegate's own logic = Sluicegate minimal minus this.
GET /healthz answers 200.
"""

from __future__ import annotations

import argparse
import re

import aiohttp
import uvicorn

UPSTREAM = "http://127.0.0.1:9101"
_session: aiohttp.ClientSession | None = None
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_FORWARD = {"content-type": "application/json"}


async def _lifespan(receive, send) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            connector = aiohttp.TCPConnector(limit=256)
            _session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _reply(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await _reply(send, 200, _JSON, b'{"status":"ok"}')
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    assert _session is not None
    async with _session.post(UPSTREAM + "/v1/chat/completions", data=body, headers=_FORWARD) as resp:
        if not _STREAM.search(body):
            await _reply(send, resp.status, _JSON, await resp.read())
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": _SSE})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def main(argv: list[str] | None = None) -> None:
    global UPSTREAM
    p = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL of the mock, e.g. http://127.0.0.1:9101")
    a = p.parse_args(argv)
    UPSTREAM = a.upstream.rstrip("/")
    uvicorn.run(app, host=a.host, port=a.port, loop="uvloop", http="httptools", lifespan="on",
                access_log=False, proxy_headers=False, server_header=False, log_level="warning")


if __name__ == "__main__":
    main()
