"""An OpenAI-compatible mock upstream with configurable per-model behaviour and fault injection.

Used by tests, the demo and the benchmark. `create_app()` gives the ASGI app (in process with
`httpx.ASGITransport`, or served by uvicorn); `serve()` runs it for `sluicegate mock-upstream`;
`MockServer` runs it on a free port in a background thread. Behaviour per model comes from
`MockConfig` (YAML via `load_config`), the `/_mock` control API, or `x-mock-*` request headers.
"""

from proxy.mock_upstream._app import create_app
from proxy.mock_upstream._config import MockConfig, MockModel, load_config
from proxy.mock_upstream._faults import MockConnectionReset
from proxy.mock_upstream._server import MockServer, serve
from proxy.mock_upstream._synth import synthesize

__all__ = [
    "MockConfig",
    "MockConnectionReset",
    "MockModel",
    "MockServer",
    "create_app",
    "load_config",
    "serve",
    "synthesize",
]
