"""A loopback HTTP server for the download tests (no network: 127.0.0.1 only)."""

import http.server
import threading

import pytest


@pytest.fixture(scope="module")
def http_server():
    """``start(handler_class) -> base URL``: serves on 127.0.0.1 until the module's tests are done."""
    servers = []

    def start(handler):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
