"""Fixtures for the data layer: a clean search path and a loopback server (the writers of tiny
files in the real formats are in tests/conftest.py, shared with the model × dataset matrix)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_search_path(tmp_path_factory, monkeypatch) -> Path:
    """No test sees the real cache, $ATTNACT_DATA or a mirror; the cache is an empty temp dir."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ATTNACT_DATA", raising=False)
    monkeypatch.delenv("ATTNACT_MIRROR", raising=False)
    return cache / "attnact"


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes]
    modes: dict[str, str]
    hits: list[str]

    def do_GET(self) -> None:  # the name http.server dispatches to
        self.hits.append(self.path)
        body = self.files.get(self.path)
        mode = self.modes.get(self.path, "ok")
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "truncate":
            # Announce the full length, send half, hang up: an interrupted transfer.
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path → bytes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.hits: list[str] = []
        handler = type(
            "Handler", (_Handler,), {"files": self.files, "modes": self.modes, "hits": self.hits}
        )
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    try:
        yield srv
    finally:
        srv.close()
