"""A loopback HTTP server and an empty cache for the weights download tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest


@pytest.fixture(autouse=True)
def clean_cache(tmp_path_factory, monkeypatch):
    """No test sees the real cache or $ATTNACT_WEIGHTS."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("ATTNACT_WEIGHTS", raising=False)


@pytest.fixture
def http_files() -> Iterator[SimpleNamespace]:
    """``files`` (URL path → bytes) served at ``url``; a path in ``truncate`` announces its full
    length and hangs up halfway."""
    state = SimpleNamespace(files={}, truncate=set(), hits=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server dispatches to
            state.hits.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path in state.truncate else body)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
