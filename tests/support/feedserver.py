"""A loopback HTTP server for feeds, with the behaviours of real and hostile servers, for
the tests (bench/ has its own, bench/feedserve.py). Every loop is bounded; it only binds
127.0.0.1."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[["Request"], "Response"]


class QuietServer(ThreadingHTTPServer):
    """A client that disconnects (a relay process killed by a test) is not an error here."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    method: str = "GET"
    body: bytes = b""  # a POST's (an alert's ping)


@dataclass
class Response:
    status: int = 200
    body: bytes | Callable[[], Any] = b""  # bytes, or a generator of chunks
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FeedServer:
    def __init__(self, latency: float = 0.0) -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: dict[str, int] = {}
        self.latency = latency
        self.lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.do_GET(self.rfile.read(min(length, 1_000_000)) if length else b"", "POST")

            def do_GET(self, body: bytes = b"", method: str = "GET") -> None:
                path = self.path.split("?")[0]
                with server.lock:
                    server.hits[path] = server.hits.get(path, 0) + 1
                handler = server.routes.get(path)
                if server.latency:
                    time.sleep(server.latency)
                if handler is None:
                    response = Response(404, b"not found")
                else:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    response = handler(Request(self.path, headers, method, body))
                if response.delay:
                    time.sleep(response.delay)
                try:
                    self.send_response(response.status)
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    if isinstance(response.body, bytes):
                        self.send_header("Content-Length", str(len(response.body)))
                        self.end_headers()
                        self.wfile.write(response.body)
                    else:
                        self.send_header("Connection", "close")
                        self.end_headers()
                        for chunk in response.body():
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def feed(
        self, path: str, body: bytes, content_type: str = "application/rss+xml; charset=utf-8", etag: str | None = None
    ) -> str:
        """A well-behaved feed with ETag / Last-Modified support."""
        tag = etag or f'"{zlib.crc32(body):08x}"'

        def handler(request: Request) -> Response:
            if request.headers.get("if-none-match") == tag:
                return Response(304, b"", {"ETag": tag})
            return Response(
                200, body, {"Content-Type": content_type, "ETag": tag, "Last-Modified": "Tue, 24 Nov 2026 08:00:00 GMT"}
            )

        return self.add(path, handler)


# hostile behaviours


def trickle(seconds: int = 60) -> Handler:
    """One byte a second, for at most `seconds` seconds."""

    def handler(request: Request) -> Response:
        def body() -> Any:
            yield b"<?xml version='1.0'?><rss version='2.0'><channel>"
            for _ in range(seconds):
                time.sleep(1)
                yield b" "

        return Response(200, body, {"Content-Type": "application/rss+xml"})

    return handler


def gzip_bomb(inflated: int = 1024 * 1024 * 1024) -> Handler:
    """A small gzip body that inflates to `inflated` bytes (1 GiB by default)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1024 * 1024)
    parts = [compressor.compress(block) for _ in range(inflated // len(block))]
    parts.append(compressor.flush())
    payload = b"".join(parts)

    def handler(request: Request) -> Response:
        return Response(200, payload, {"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"})

    return handler


def big_body(size: int = 40 * 1024 * 1024) -> Handler:
    """A feed of `size` bytes, streamed without Content-Length."""

    def handler(request: Request) -> Response:
        def body() -> Any:
            yield b"<?xml version='1.0'?><rss version='2.0'><channel><title>big</title>"
            chunk = b"<item><title>x</title><link>https://example.org/x</link></item>" * 1000
            sent = 0
            while sent < size:
                yield chunk
                sent += len(chunk)
            yield b"</channel></rss>"

        return Response(200, body, {"Content-Type": "application/rss+xml"})

    return handler


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: Response(code, b"error page", headers or {"Content-Type": "text/plain"})


def redirect_loop(path: str) -> Handler:
    return lambda request: Response(302, b"", {"Location": path})


def gzipped(body: bytes, content_type: str = "application/rss+xml") -> Handler:
    payload = gzip.compress(body)
    return lambda request: Response(200, payload, {"Content-Type": content_type, "Content-Encoding": "gzip"})


def static(body: bytes, content_type: str = "application/rss+xml", headers: dict[str, str] | None = None) -> Handler:
    return lambda request: Response(200, body, {"Content-Type": content_type, **(headers or {})})
