"""A small Mastodon-API server of relay's own, on loopback, for the delivery engine's tests:
it records every status, honours Idempotency-Key per token, and injects faults (an HTTP
status instead of a post or after accepting it, a hang before or after it accepted a post). Controlled in-process or over HTTP
(POST /_fake/faults) so a relay subprocess can be tested and killed against it."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from tests.support.feedserver import QuietServer


@dataclass
class Fault:
    status: int = 0  # answer with this HTTP status instead of posting
    accept_first: bool = False  # with status: create the post, then answer with that status
    hang_before: float = 0.0  # sleep before accepting
    hang_after: float = 0.0  # accept (create the status), then sleep before answering
    headers: dict[str, str] = field(default_factory=dict)
    error: str = "fault injected"
    count: int = 1
    path: str = "/api/v1/statuses"


class FakeMastodon:
    def __init__(self, tokens: dict[str, str] | None = None, max_characters: int = 500) -> None:
        self.tokens = tokens or {"good-token": "collectif"}
        self.max_characters = max_characters
        self.statuses: list[dict[str, Any]] = []
        self.media: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.idempotency: dict[tuple[str, str], dict[str, Any]] = {}
        self.faults: list[Fault] = []
        # statuses of other instances this one can fetch (GET /api/v2/search?resolve=true):
        # their URL → their id here; and the reblogs made, (token, status id) → the reblog
        self.remote: dict[str, str] = {}
        self.reblogs: dict[tuple[str, str], dict[str, Any]] = {}
        self.searches: list[dict[str, list[str]]] = []
        self.latency = 0.0
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # one write per response: no delayed-ACK stall between headers and body

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(**kwargs))

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path == path and fault.count > 0:
                    fault.count -= 1
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?")[0].rstrip("/")
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if len(raw) < length:
            return None  # the client died while sending: like a real server, ignore the incomplete request
        with self.lock:
            self.requests.append((method, path))
        if self.latency:
            time.sleep(self.latency)
        if path.startswith("/_fake/"):
            return self._control(handler, path, raw)
        fault = self._take_fault(path)
        if fault and fault.hang_before:
            time.sleep(fault.hang_before)
        if fault and fault.status and not fault.accept_first:
            return self._send(handler, fault.status, {"error": fault.error}, fault.headers)
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if path == "/api/v2/instance":
            return self._send(
                handler,
                200,
                {
                    "domain": "fake.example",
                    "version": "4.3.0",
                    "configuration": {
                        "statuses": {"max_characters": self.max_characters, "characters_reserved_per_url": 23},
                        "media_attachments": {
                            "image_size_limit": 16_777_216,
                            "supported_mime_types": ["image/jpeg", "image/png"],
                        },
                    },
                },
            )
        if path == "/api/v1/instance":  # Mastodon.py reads it before an upload
            return self._send(handler, 200, {"uri": "fake.example", "title": "fake", "version": "4.3.0"})
        if token not in self.tokens:
            return self._send(handler, 401, {"error": "The access token is invalid"})
        if path == "/api/v1/accounts/verify_credentials":
            return self._send(
                handler,
                200,
                {"id": "1", "acct": self.tokens[token], "display_name": "Collectif", "username": self.tokens[token]},
            )
        if path == "/api/v2/search" and method == "GET":
            query = parse_qs(handler.path.partition("?")[2])
            with self.lock:
                self.searches.append(query)
            q, resolve = query.get("q", [""])[0], query.get("resolve", [""])[0] in ("true", "1", "True")
            found = self.remote.get(q) if resolve else None
            return self._send(
                handler, 200, {"accounts": [], "hashtags": [], "statuses": [{"id": found, "url": q}] if found else []}
            )
        if path.startswith("/api/v1/statuses/") and path.endswith("/reblog") and method == "POST":
            status_id = path.split("/")[4]
            with self.lock:
                if status_id not in self.remote.values() and not any(s["id"] == status_id for s in self.statuses):
                    return self._send(handler, 404, {"error": "Record not found"})
                reblog = self.reblogs.setdefault(
                    (token, status_id), {"id": str(next(self.ids)), "reblog": {"id": status_id}}
                )  # reblogging again gives the same reblog, as Mastodon does
            return self._send(handler, 200, reblog)
        if path == "/api/v2/media" and method == "POST":
            media = {
                "id": str(next(self.ids)),
                "type": "image",
                "url": f"{self.url}/media/1",
                "bytes": len(raw),
                "raw": raw[:0],
            }
            with self.lock:
                self.media.append({"id": media["id"], "bytes": len(raw), "body": raw})
            return self._send(handler, 200, {k: v for k, v in media.items() if k != "raw"})
        if path == "/api/v1/statuses" and method == "POST":
            params = self._params(handler, raw)
            key = handler.headers.get("Idempotency-Key")
            with self.lock:
                if key and (token, key) in self.idempotency:
                    status = self.idempotency[(token, key)]
                else:
                    text = str(params.get("status", ""))
                    if len(text) > self.max_characters:
                        return self._send(
                            handler, 422, {"error": "Validation failed: Text character limit of 500 exceeded"}
                        )
                    number = next(self.ids)
                    status = {
                        "id": str(number),
                        "url": f"{self.url}/@{self.tokens[token]}/{number}",
                        "uri": f"{self.url}/statuses/{number}",
                        "content": text,
                        "visibility": params.get("visibility"),
                        "language": params.get("language"),
                        "spoiler_text": params.get("spoiler_text") or "",
                        "sensitive": params.get("sensitive"),
                        "media_ids": params.get("media_ids"),
                        "quoted_status_id": params.get("quoted_status_id"),
                        "account": self.tokens[token],
                        "idempotency_key": key,
                    }
                    self.statuses.append(status)
                    if key:
                        self.idempotency[(token, key)] = status
            if fault and fault.hang_after:
                time.sleep(fault.hang_after)
            if fault and fault.status:  # accepted, yet the client is told it failed
                return self._send(handler, fault.status, {"error": fault.error}, fault.headers)
            return self._send(handler, 200, status)
        return self._send(handler, 404, {"error": "Record not found"})

    def _params(self, handler: BaseHTTPRequestHandler, raw: bytes) -> dict[str, Any]:
        kind = handler.headers.get("Content-Type", "")
        if "json" in kind:
            return dict(json.loads(raw or b"{}"))
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        return {k.removesuffix("[]"): (v if k.endswith("[]") else v[0]) for k, v in parsed.items()}

    def _control(self, handler: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
        if path == "/_fake/faults":
            self.fault(**json.loads(raw))
            return self._send(handler, 200, {"ok": True})
        if path == "/_fake/statuses":
            with self.lock:
                return self._send(handler, 200, list(self.statuses))
        return self._send(handler, 404, {"error": "unknown control"})

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
