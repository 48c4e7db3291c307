"""Callers' keys as hashes: `sluicegate keys hash` reads the key from stdin and prints its sha256 form."""

from __future__ import annotations

import hashlib
import io

from proxy.cli import main
from proxy.keys import bearer_token, hash_key


def test_hash_key_is_prefixed_sha256() -> None:
    assert hash_key("sk-abc") == "sha256:" + hashlib.sha256(b"sk-abc").hexdigest()


def test_bearer_token_reads_only_bearer_authorization() -> None:
    assert bearer_token({"authorization": "Bearer  sk-1 "}) == "sk-1"
    assert bearer_token({"authorization": "Basic dXNlcg=="}) is None
    assert bearer_token({"authorization": "Bearer "}) is None and bearer_token({}) is None


def test_cli_hashes_the_key_from_stdin(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-partner-123\n"))
    assert main(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-partner-123")


def test_cli_refuses_an_empty_key(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["keys", "hash"]) == 2
    assert "pipe it in" in capsys.readouterr().err
