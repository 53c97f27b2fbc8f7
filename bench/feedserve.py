"""The benchmarks' own loopback HTTP servers (bench/ does not import tests/): fixed answers
by path, an ETag on feeds so a conditional GET gets 304, an optional latency per request,
and bodies streamed without a length; and the hostile answers of the hostile benches.
BenchServer speaks HTTP/1.1; TlsBenchServer (hypercorn, a certificate from a CA of its own
made by trustme) speaks HTTP/2, or HTTP/1.1 over TLS. Both count the connections they
accept."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Stream = Callable[[], Iterator[bytes]]
RSS = (("Content-Type", "application/rss+xml"),)
_OPENING = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes | Stream = b""  # a stream is sent without Content-Length, then the connection closes
    headers: tuple[tuple[str, str], ...] = ()


class BenchServer:
    def __init__(self, latency: float = 0.0) -> None:
        self.answers: dict[str, Answer] = {}
        self.latency = latency
        self.requests = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, answer: Answer) -> str:
        self.answers[path] = answer
        return self.base + path

    def feed(self, path: str, body: bytes) -> str:
        return self.serve(
            path, Answer(200, body, (("Content-Type", "application/rss+xml"), ("ETag", f'"{zlib.crc32(body)}"')))
        )

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle(self) -> None:
                with server._lock:
                    server.connections += 1
                # relay closed a kept-alive connection, or gave up on an answer (a size
                # limit, a timeout): the connection ends quietly
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def do_GET(self) -> None:
                server._answer(self)

        return Handler

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        time.sleep(self.latency)
        answer = self.answers.get(request.path, Answer(404, b"not found"))
        etag = dict(answer.headers).get("ETag")
        if etag is not None and request.headers.get("If-None-Match") == etag:
            answer = Answer(304, b"", (("ETag", etag),))
        request.send_response(answer.status)
        for name, value in answer.headers:
            request.send_header(name, value)
        if isinstance(answer.body, bytes):
            request.send_header("Content-Length", str(len(answer.body)))
            request.end_headers()
            request.wfile.write(answer.body)
            return
        request.send_header("Connection", "close")
        request.end_headers()
        request.close_connection = True
        for chunk in answer.body():
            request.wfile.write(chunk)
            request.wfile.flush()


class TlsBenchServer:
    """Feeds over TLS from hypercorn, HTTP/2 (or HTTP/1.1 only when http2 is False), with
    `latency` added to every answer in the ASGI app; a conditional GET with the feed's ETag
    gets 304. connections counts the client addresses that sent requests (one each)."""

    def __init__(self, *, http2: bool = True, latency: float = 0.0) -> None:
        import trustme
        from hypercorn.config import Config

        self.latency = latency
        self.answers: dict[str, tuple[bytes, str]] = {}  # path: body, ETag
        self.requests = 0
        self._clients: set[tuple[str, int]] = set()
        self._ca = trustme.CA()
        self._folder = tempfile.TemporaryDirectory(prefix="relay-bench-tls-")
        pem = Path(self._folder.name) / "server.pem"
        self._ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.base = f"https://127.0.0.1:{listener.getsockname()[1]}"
        self._config = Config()
        self._config.bind = [f"fd://{listener.detach()}"]
        self._config.certfile = self._config.keyfile = str(pem)
        self._config.alpn_protocols = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        self._config.errorlog = None
        self._config.accesslog = None
        self._config.graceful_timeout = 0.5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready)), daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def connections(self) -> int:
        return len(self._clients)

    def reset(self) -> None:
        self.requests = 0
        self._clients.clear()

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's CA only."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ca.configure_trust(context)
        return context

    def feed(self, path: str, body: bytes) -> str:
        self.answers[path] = (body, f'"{zlib.crc32(body)}"')
        return self.base + path

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._folder.cleanup()

    async def _serve(self, ready: threading.Event) -> None:
        from hypercorn.asyncio import serve

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        ready.set()
        await serve(self._app, self._config, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.requests += 1
        self._clients.add(tuple(scope["client"]))
        await asyncio.sleep(self.latency)
        answer = self.answers.get(scope["path"])
        if answer is None:
            status, body, headers = 404, b"not found", []
        else:
            body, etag = answer
            headers = [(b"etag", etag.encode())]
            if dict(scope["headers"]).get(b"if-none-match") == etag.encode():
                status, body = 304, b""
            else:
                status = 200
                headers.append((b"content-type", b"application/rss+xml"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def rss_feed(count: int, *, now: datetime, prefix: str, host: str) -> bytes:
    """count items an hour apart, newest first, each with a guid, a link and a summary."""
    items = "".join(
        f"<item><title>{prefix} {n}</title><link>https://{host}/{prefix}/{n}</link><guid>{prefix}-{n}</guid>"
        f"<description>Résumé de l'article {n}.</description>"
        f"<pubDate>{format_datetime(now - timedelta(hours=count - n))}</pubDate></item>"
        for n in reversed(range(count))
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>bench</title>"
        f"<link>https://{host}/</link>{items}</channel></rss>"
    ).encode()


def trickle() -> Answer:
    """A feed that sends one byte a second, for a minute."""

    def body() -> Iterator[bytes]:
        yield _OPENING
        for _ in range(60):
            time.sleep(1)
            yield b" "

    return Answer(200, body, RSS)


def forty_megabytes() -> Answer:
    """A 40 MB feed, streamed without a length."""

    def body() -> Iterator[bytes]:
        yield _OPENING
        block = b"<item><title>x</title><link>https://example.org/x</link></item>" * 2000
        for _ in range(40 * 1024 * 1024 // len(block) + 1):
            yield block
        yield b"</channel></rss>"

    return Answer(200, body, RSS)


def gzip_bomb() -> Answer:
    """About 1 MB of gzip that inflates to 1 GiB of zeros."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    megabyte = bytes(1024 * 1024)
    payload = b"".join([*(gzip.compress(megabyte) for _ in range(1024)), gzip.flush()])
    return Answer(200, payload, (*RSS, ("Content-Encoding", "gzip")))
