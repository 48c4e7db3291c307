"""Records: the replayable trace of every call, its capture modes, store and recorder."""

from proxy.records._model import Record, new_id

__all__ = ["Record", "new_id"]
