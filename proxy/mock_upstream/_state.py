"""Mutable state of one mock app: current models, cached behaviours, fault counters, request log, stats."""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from typing import Any

from proxy.mock_upstream._behaviour import Behaviour
from proxy.mock_upstream._config import MockConfig, MockModel

__all__ = ["MockState", "REQUEST_LOG_SIZE"]

REQUEST_LOG_SIZE = 200


class MockState:
    def __init__(self, config: MockConfig) -> None:
        self._initial = config
        self.config = config.model_copy(deep=True)
        self._behaviours: dict[str, Behaviour] = {}
        self._fault_hits: dict[str, int] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.by_model: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.total = 0
        self._tag = uuid.uuid4().hex[:8]
        self._seq = 0

    # --- ids ------------------------------------------------------------------------------
    def next_id(self) -> str:
        """A unique suffix for response / tool-call ids (per app instance, increasing)."""
        self._seq += 1
        return f"mock{self._tag}{self._seq:08d}"

    # --- behaviour ------------------------------------------------------------------------
    def behaviour(self, model: str) -> Behaviour:
        b = self._behaviours.get(model)
        if b is None:
            b = Behaviour.from_model(self.config.effective(model))
            if len(self._behaviours) > 10_000:  # any model name works; do not grow without bound
                self._behaviours.clear()
            self._behaviours[model] = b
        return b

    def take_fault(self, model: str, b: Behaviour) -> str:
        """The configured fault for this request, honouring `fault_count` (first N requests only)."""
        if b.fault == "none":
            return "none"
        if b.fault_count is None or b.fault_count < 0:
            return b.fault
        hits = self._fault_hits.get(model, 0)
        if hits >= b.fault_count:
            return "none"
        self._fault_hits[model] = hits + 1
        return b.fault

    def set_model(self, name: str, model: MockModel) -> None:
        """Replace one model's behaviour (its fault count starts again)."""
        self.config.models[name] = model
        self._behaviours.pop(name, None)
        self._fault_hits.pop(name, None)

    def delete_model(self, name: str) -> bool:
        found = self.config.models.pop(name, None) is not None
        self._behaviours.pop(name, None)
        self._fault_hits.pop(name, None)
        return found

    def set_default(self, model: MockModel) -> None:
        self.config.default = model
        self._changed()

    def _changed(self) -> None:
        self._behaviours.clear()
        self._fault_hits.clear()

    def reset(self) -> None:
        """Back to the configuration the app was created with; log, stats and counters cleared."""
        self.config = self._initial.model_copy(deep=True)
        self._changed()
        self.requests.clear()
        self.by_model.clear()
        self.by_path.clear()
        self.faults.clear()
        self.total = 0

    # --- log and stats --------------------------------------------------------------------
    def record(self, method: str, path: str, query: str, headers: dict[str, str], body: Any,
               model: str | None, body_text: str | None = None) -> None:
        entry: dict[str, Any] = {
            "time": time.time(), "method": method, "path": path, "query": query,
            "headers": headers, "body": body, "model": model,
        }
        if body_text is not None:
            entry["body_text"] = body_text
        self.requests.append(entry)
        self.total += 1
        self.by_path[path] += 1
        if model is not None:
            self.by_model[model] += 1

    def stats(self) -> dict[str, Any]:
        return {"total": self.total, "models": dict(self.by_model), "paths": dict(self.by_path),
                "faults": dict(self.faults)}
