"""Records: the replayable trace of every call, its capture modes, store and recorder."""

from proxy.records._capture import (
    CAPTURE_MODES,
    capture_request,
    capture_response,
    extract_params,
    request_hash,
)
from proxy.records._model import Outcome, Record, new_id
from proxy.records._recorder import Recorder
from proxy.records._redact import DETECTORS, MASKS, Detector, find_pii, luhn_ok, redact_text, redact_value, scan
from proxy.records._store import RecordStore, SQLiteStore, StoreURLError, open_store

__all__ = [
    "CAPTURE_MODES",
    "DETECTORS",
    "MASKS",
    "Outcome",
    "Detector",
    "Record",
    "RecordStore",
    "Recorder",
    "SQLiteStore",
    "StoreURLError",
    "capture_request",
    "capture_response",
    "extract_params",
    "find_pii",
    "luhn_ok",
    "new_id",
    "open_store",
    "redact_text",
    "redact_value",
    "request_hash",
    "scan",
]
