"""Fixtures for the data tests: small corpora, and no network (connections are refused)."""

from __future__ import annotations

import socket

import pytest

from lmjax.data import sources


def make_corpus(n_chars: int = 20000) -> str:
    """Shakespeare with multi-byte characters sprinkled in (also in the last 10%), so bytes != chars."""
    lines = sources.embedded_text()[:n_chars].splitlines()
    return "\n".join(line + (" — café ✓ 日本" if i % 20 == 0 else "") for i, line in enumerate(lines)) + "\n"


@pytest.fixture(scope="session")
def corpus() -> str:
    return make_corpus()


@pytest.fixture
def corpus_file(tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Data tests never touch the network: any connection attempt is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in lmjax's data tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts
