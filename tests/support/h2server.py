"""A loopback TLS feed server that speaks HTTP/2 (hypercorn, with a certificate from a CA
of its own made by trustme), or HTTP/1.1 only, for the tests. It counts the connections it
sees (a connection is the client's address and port), and answers through handlers like
tests/support/feedserver.py's; a handler may be a coroutine function, to wait without
holding the server, and may answer None to hold the request until the client goes away. It only binds a loopback address; the client trusts its CA through
client_context(), so nothing else is trusted less."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import tempfile
import threading
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.support.feedserver import Request, Response

# a handler's None: no answer, the request is held until the client goes away
Handler = Callable[[Request], Response | Awaitable[Response | None] | None]


class TlsFeedServer:
    def __init__(self, *, http2: bool = True, host: str = "127.0.0.1", latency: float = 0.0) -> None:
        self.host = host
        self.latency = latency
        self.routes: dict[str, Handler] = {}
        self.hits: dict[str, int] = {}
        self.clients: set[tuple[str, int]] = set()  # one per connection that sent a request
        self.versions: set[str] = set()  # the HTTP versions requests came in
        self.ca = trustme.CA()
        self._folder = tempfile.TemporaryDirectory(prefix="relay-tls-")
        pem = Path(self._folder.name) / "server.pem"
        self.ca.issue_cert(host, "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
        listener = socket.create_server((host, 0))
        self.port = listener.getsockname()[1]
        self._config = Config()
        self._config.bind = [f"fd://{listener.detach()}"]
        self._config.certfile = self._config.keyfile = str(pem)
        self._config.alpn_protocols = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        self._config.errorlog = None
        self._config.accesslog = None
        self._config.graceful_timeout = 0.5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TlsFeedServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._folder.cleanup()

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's CA only."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and host name
        self.ca.configure_trust(context)
        return context

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"

    def add(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def feed(self, path: str, body: bytes) -> str:
        """A well-behaved feed with an ETag: a conditional GET with it gets 304."""
        tag = f'"{zlib.crc32(body):08x}"'

        def handler(request: Request) -> Response:
            if request.headers.get("if-none-match") == tag:
                return Response(304, b"", {"ETag": tag})
            return Response(200, body, {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": tag})

        return self.add(path, handler)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
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
        path = scope["path"]
        self.clients.add(tuple(scope["client"]))
        self.versions.add(scope["http_version"])
        self.hits[path] = self.hits.get(path, 0) + 1
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.latency:
            await asyncio.sleep(self.latency)
        handler = self.routes.get(path)
        if handler is None:
            response = Response(404, b"not found")
        else:
            answer = handler(Request(path, headers))
            response = await answer if inspect.isawaitable(answer) else answer
        if response is None:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if response.delay:
            await asyncio.sleep(response.delay)
        body = response.body if isinstance(response.body, bytes) else b"".join(response.body())
        fields = [(key.lower().encode(), value.encode()) for key, value in response.headers.items()]
        fields.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": fields})
        await send({"type": "http.response.body", "body": body})
