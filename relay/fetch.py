"""HTTP and local fetching of feeds, pages and images: a total deadline per request (DNS,
connect, headers, body and redirects, through relay.netguard), a body cap enforced while
streaming and after decompression, conditional GET, redirects capped, concurrency with at
most two connections per host: HTTP/2 where an https host offers it (the feeds of one host
as streams on one connection), HTTP/1.1 with keep-alive elsewhere. Feeds from feeds.yaml
are fetched from wherever the user says, but a redirect to another host only to a public
address (unless the feed's own host is private, an intranet feed, or the configuration
allows private addresses); pages and images named by feed content only from public
addresses, unless the configuration lifts that policy. Returns bytes; never parses."""

from __future__ import annotations

import email.utils
import queue
import re
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from relay import __version__
from relay.errors import FetchError
from relay.netguard import RefusedAddress, deadline, deadline_passed, ended_by_another, make_transport, trusting

USER_AGENT = f"relay/{__version__} (+https://github.com/relay-campaigns/relay; feed relay bot)"
MAX_REDIRECTS = 5
PER_HOST = 2  # requests in flight to a host until it answers over HTTP/2: one per connection
# streams in flight on a host's one HTTP/2 connection (servers allow 100 or more); for 200
# feeds at 50 ms, bench/one_host.py measured 0.9 s with 16 and 0.6 s with 32
PER_HTTP2_HOST = 32
# requests in flight in all, and the connections a client keeps: 1000 feeds on 1000 hosts,
# all answering 304 after 50 ms, took 1.85 s of fetching with 32 and 1.5 s with 64 (the
# bound is relay's CPU by then, about 1 ms per request); the client's pool must be as large,
# or requests queue in it and close each other's idle connections
WORKERS = 64
PAGE_MAX_BYTES = 2_000_000  # an article page read for its OpenGraph tags (a link card)
OPEN_GRAPH_MAX_BYTES = 65_536  # the og: tags are read from the page's first 64 KB only
OPEN_GRAPH_MAX_CHARS = 1_000  # each og: value is cut to this before it is cleaned
ERROR_PAGE = 64 * 1024  # an error page up to this size is read, to keep its connection
ATTEMPTS = 3  # tries of a request whose shared HTTP/2 connection another request's deadline closed
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchRequest:
    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    max_bytes: int = 10_000_000
    timeout: float = 30.0
    content_types: tuple[str, ...] = ()  # when set, any other type is refused before reading


@dataclass(frozen=True)
class FetchResult:
    name: str
    url: str
    status: str  # ok | not_modified | error
    body: bytes = b""
    content_type: str = ""
    final_url: str = ""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    retry_after: datetime | None = None
    refused: bool = False  # the network policy refused the address
    http_version: str = ""  # of the answer, "HTTP/2" or "HTTP/1.1", when there was one


def make_client(
    max_connections: int = WORKERS, *, public_only: bool = False, verify: ssl.SSLContext | None = None
) -> httpx.Client:
    """A client over the guarded transport, offering HTTP/2 to https hosts; public_only for
    URLs that came from feed content (every redirect hop goes through the same transport, so
    each is checked again). verify is for tests and bench/ only, whose local servers have a
    CA of their own: without it, certificates are checked against the default CA bundle."""
    return httpx.Client(
        transport=make_transport(public_only=public_only, max_connections=max_connections, http2=True, verify=verify),
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1",
            "Accept-Encoding": "gzip, deflate",
        },
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=httpx.Timeout(10.0),
    )


def fetch_all(
    requests: Iterable[FetchRequest],
    client: httpx.Client,
    *,
    workers: int = WORKERS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_private: bool = False,
) -> list[FetchResult]:
    """Fetch every request concurrently; results come back in the order of requests.
    allow_private (network.allow_private) lets a feed redirect to a private address. Holds
    every body until the end: fetch_each hands each one over as it arrives."""
    requests = list(requests)
    results: list[FetchResult | None] = [None] * len(requests)
    for index, result in fetch_each(requests, client, workers=workers, now=now, allow_private=allow_private):
        results[index] = result
    return [result for result in results if result is not None]


def fetch_each(
    requests: Iterable[FetchRequest],
    client: httpx.Client,
    *,
    workers: int = WORKERS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_private: bool = False,
) -> Iterator[tuple[int, FetchResult]]:
    """Fetch every request concurrently and yield (index in requests, result) for each as
    soon as it is done, in the order they finish; every index exactly once.

    At most `workers` results exist at a time, fetching or done and not yet taken: a request
    starts only when the caller has taken an earlier result. So a caller that parses and
    records each result, and drops it, before taking the next holds at most workers + 1
    bodies (each within its max_bytes) however many feeds there are. Fetching goes on in
    worker threads while the caller works on a result.

    Politeness per host (scheme, host and port of the request's URL): 2 requests in flight,
    one per connection, until an answer from the host comes over HTTP/2; then up to
    PER_HTTP2_HOST as streams on its one connection, back to 2 if an answer comes over
    HTTP/1.1. Hosts take turns, so one host with many feeds does not hold up the others.

    Leaving the loop early (break, an exception) starts nothing more and waits for the
    requests in flight, each within its timeout, before the generator closes. Errors of a
    feed are in its result; an exception here is a bug."""
    requests = list(requests)
    if len(requests) <= 1:
        for index, request in enumerate(requests):
            yield index, fetch_one(request, client, now=now, allow_private=allow_private)
        return
    schedule = _Schedule(requests, max(1, workers))

    def run(index: int, request: FetchRequest) -> tuple[int, FetchResult]:
        return index, fetch_one(request, client, now=now, allow_private=allow_private)

    with ThreadPoolExecutor(max_workers=min(max(1, workers), len(requests)), thread_name_prefix="relay-fetch") as pool:

        def start() -> None:
            for index, request in schedule.next_batch():
                try:
                    pool.submit(run, index, request).add_done_callback(finished)
                except RuntimeError:  # the pool shut down: the caller left the loop
                    return

        def finished(future: Future[tuple[int, FetchResult]]) -> None:
            schedule.done(future)
            start()

        try:
            start()
            for _ in requests:
                index, result = schedule.take()
                start()
                yield index, result
        finally:
            schedule.close()


class _Schedule:
    """Which request starts next: per-host slots (2, or PER_HTTP2_HOST once the host answers
    over HTTP/2), hosts in turn, at most `limit` results fetching or waiting to be taken."""

    def __init__(self, requests: list[FetchRequest], limit: int) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._outstanding = 0  # started and not yet taken by the caller
        self._closed = False
        self._waiting: dict[str, deque[tuple[int, FetchRequest]]] = {}
        for index, request in enumerate(requests):
            self._waiting.setdefault(_host_of(request.url), deque()).append((index, request))
        self._in_flight = dict.fromkeys(self._waiting, 0)
        self._slots = dict.fromkeys(self._waiting, PER_HOST)
        self._turns = deque(self._waiting)  # hosts that may have a request to start
        self._hosts: dict[int, str] = {}
        self._finished: queue.SimpleQueue[Future[tuple[int, FetchResult]]] = queue.SimpleQueue()

    def next_batch(self) -> list[tuple[int, FetchRequest]]:
        """Requests to start now, each counted as in flight for its host."""
        batch: list[tuple[int, FetchRequest]] = []
        with self._lock:
            skipped = 0
            while self._turns and self._outstanding < self._limit and not self._closed and skipped < len(self._turns):
                host = self._turns[0]
                waiting = self._waiting[host]
                if not waiting:
                    self._turns.popleft()
                    continue
                if self._in_flight[host] >= self._slots[host]:
                    self._turns.rotate(-1)
                    skipped += 1
                    continue
                index, request = waiting.popleft()
                self._in_flight[host] += 1
                self._outstanding += 1
                self._hosts[index] = host
                batch.append((index, request))
                self._turns.rotate(-1)
                skipped = 0
        return batch

    def done(self, future: Future[tuple[int, FetchResult]]) -> None:
        """A request ended (in its worker thread): free its host's slot, learn the host's
        protocol from the answer, and hand the result to take()."""
        try:
            if future.exception() is None:
                index, result = future.result()
                with self._lock:
                    host = self._hosts.pop(index)
                    self._in_flight[host] -= 1
                    if _host_of(result.final_url or result.url) == host:
                        if result.http_version == "HTTP/2":
                            self._slots[host] = PER_HTTP2_HOST
                        elif result.http_version:
                            self._slots[host] = PER_HOST
        finally:
            self._finished.put(future)  # whatever happened, take() must not wait for ever

    def take(self) -> tuple[int, FetchResult]:
        """The next finished result, waiting for one; the caller now holds it."""
        future = self._finished.get()
        with self._lock:
            self._outstanding -= 1
        return future.result()  # a bug in fetch_one is raised here, in the caller's thread

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def fetch_one(
    request: FetchRequest,
    client: httpx.Client,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_private: bool = False,
    trusted: str | None = None,
) -> FetchResult:
    """One request. Its host is trusted as the user wrote it; a redirect to another host
    must reach a public address unless that host is private or allow_private. trusted: the
    address the user wrote, when request.url was found from it (relay add: a feed named by
    a page): request.url is then held to the rules of a redirect from there."""
    try:
        scheme = urlsplit(request.url).scheme.lower()
        if scheme == "file":
            return _fetch_file(request)
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {scheme!r}")
        with deadline(request.timeout), trusting(trusted or request.url, allow_private=allow_private):
            ends = time.monotonic() + request.timeout
            for _ in range(ATTEMPTS - 1):
                try:
                    return _fetch_http(request, client, now, ends)
                except _SharedConnectionEnded:
                    continue  # on a new connection, within the same deadline
            return _fetch_http(request, client, now, ends, last_attempt=True)
    except RefusedAddress as exc:
        return FetchResult(request.name, request.url, "error", error=str(exc), refused=True)
    except FetchError as exc:
        return FetchResult(request.name, request.url, "error", error=str(exc))
    except _HttpStatusError as exc:
        return FetchResult(
            request.name,
            request.url,
            "error",
            error=str(exc),
            retry_after=exc.retry_after,
        )


class _SharedConnectionEnded(Exception):
    """Another request's deadline closed the HTTP/2 connection this one was using."""


class _HttpStatusError(Exception):
    def __init__(self, message: str, status: int, retry_after: datetime | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _fetch_file(request: FetchRequest) -> FetchResult:
    path = Path(unquote(urlsplit(request.url).path))
    try:
        with path.open("rb") as handle:
            body = handle.read(request.max_bytes + 1)
    except FileNotFoundError:
        raise FetchError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise FetchError(f"is a folder, not a feed: {path}") from None
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror}") from None
    if len(body) > request.max_bytes:
        raise FetchError(f"body over {request.max_bytes:,} bytes (raise max_bytes to allow it)")
    if not body.strip():
        raise FetchError("empty body")
    return FetchResult(request.name, request.url, "ok", body=body, final_url=request.url)


def _fetch_http(
    request: FetchRequest,
    client: httpx.Client,
    now: Callable[[], datetime],
    ends: float,
    *,
    last_attempt: bool = False,
) -> FetchResult:
    headers = {}
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    per_read = min(10.0, request.timeout)
    timeout = httpx.Timeout(per_read, connect=min(10.0, request.timeout), pool=request.timeout)
    try:
        with client.stream("GET", request.url, headers=headers, timeout=timeout) as response:
            if response.status_code == 304:
                _drain(response, 0)
                return FetchResult(
                    request.name,
                    request.url,
                    "not_modified",
                    final_url=str(response.url),
                    etag=response.headers.get("etag") or request.etag,
                    last_modified=response.headers.get("last-modified") or request.last_modified,
                    http_version=response.http_version,
                )
            if response.status_code >= 400:
                _drain(response, ERROR_PAGE)
                retry_after = None
                if response.status_code in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), now())
                raise _HttpStatusError(
                    f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
                    response.status_code,
                    retry_after,
                )
            if response.status_code != 200:
                raise FetchError(f"unexpected HTTP {response.status_code}")
            if request.content_types:
                mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if mime not in request.content_types:
                    raise FetchError(f"not a page ({mime or 'no content type'})")
            body = _read_capped(
                response.iter_raw(),
                response.headers.get("content-encoding", ""),
                request.max_bytes,
                ends,
                request.timeout,
            )
            if not body.strip():
                raise FetchError("empty body")
            return FetchResult(
                request.name,
                request.url,
                "ok",
                body=body,
                content_type=response.headers.get("content-type", ""),
                final_url=str(response.url),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                http_version=response.http_version,
            )
    except httpx.TransportError as exc:
        if not last_attempt and ended_by_another(exc):
            raise _SharedConnectionEnded from None
        raise _transport_error(exc, request, per_read) from None
    except httpx.TooManyRedirects:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


def _drain(response: httpx.Response, limit: int) -> None:
    """Read an answer that is not kept to its end (a 304 has none; an error page is
    usually short), so its connection can be reused: HTTP/1.1 closes a connection whose
    answer was left unread. One longer than `limit` is left, and its connection closed;
    one that fails on the way too (what the caller reports is the status)."""
    size = 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > limit:
                return
    except httpx.HTTPError:
        return


def _transport_error(exc: httpx.TransportError, request: FetchRequest, per_read: float) -> FetchError:
    """The one-line reason for a request that failed on the way."""
    if isinstance(exc, httpx.TimeoutException):
        if deadline_passed() or per_read >= request.timeout:
            return FetchError(f"timed out: no complete answer within {request.timeout:g}s")
        return FetchError(f"timed out: no answer for {per_read:g}s")
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        if "refused" in reason.lower():
            reason = "connection refused"
        return FetchError(reason)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError(f"redirected to an unsupported URL: {exc}")
    return FetchError(f"{type(exc).__name__}: {exc}".rstrip(": "))


def _read_capped(chunks: Iterator[bytes], encoding: str, cap: int, deadline: float, total: float) -> bytes:
    """Read raw chunks, decompress them ourselves with a bounded output, stop at the cap or
    the deadline. A gzip bomb never inflates past cap + one chunk."""
    encoding = encoding.strip().lower()
    decompressor = None
    if encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(wbits=47)  # auto-detect gzip or zlib header
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise FetchError(f"unsupported Content-Encoding {encoding!r}")
    parts: list[bytes] = []
    size = 0
    raw_deflate_tried = False
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise FetchError(f"timed out: no complete answer within {total:g}s")
        if decompressor is None:
            pieces = [chunk]
        else:
            pieces = []
            data = chunk
            while data:
                try:
                    piece = decompressor.decompress(data, CHUNK)
                except zlib.error:
                    if encoding == "deflate" and not raw_deflate_tried and size == 0:
                        raw_deflate_tried = True  # some servers send raw deflate
                        decompressor = zlib.decompressobj(-15)
                        continue
                    raise FetchError(f"corrupt {encoding} body") from None
                pieces.append(piece)
                data = decompressor.unconsumed_tail
                if size + sum(map(len, pieces)) > cap:
                    break
        for piece in pieces:
            size += len(piece)
            if size > cap:
                raise FetchError(f"body over {cap:,} bytes (raise max_bytes to allow it)")
            parts.append(piece)
    if time.monotonic() > deadline:
        raise FetchError(f"timed out: no complete answer within {total:g}s")
    return b"".join(parts)


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After as seconds or an HTTP date; capped at one week."""
    if not value:
        return None
    value = value.strip()
    when: datetime | None = None
    if value.isdigit():
        when = now + timedelta(seconds=int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return min(when, now + timedelta(days=7))


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str


def fetch_image(
    url: str,
    *,
    max_bytes: int = 8_000_000,
    timeout: float = 15.0,
    client: httpx.Client | None = None,
    allow_private: bool = False,
) -> Image:
    """An image for a post or a link card: http(s) only, from a public address unless
    allow_private, an image/* content type checked before the body is read, bounded in
    time (in total, redirects included) and in size."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise FetchError(f"image URL is not http(s): {url[:60]!r}")
    own = client is None
    client = client or make_client(max_connections=2, public_only=not allow_private)
    try:
        with (
            deadline(timeout),
            client.stream(
                "GET", url, headers={"Accept": "image/*"}, timeout=httpx.Timeout(min(10.0, timeout))
            ) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"image: HTTP {response.status_code}")
            mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not mime.startswith("image/"):
                raise FetchError(f"image: not an image ({mime or 'no content type'})")
            body = _read_capped(
                response.iter_raw(),
                response.headers.get("content-encoding", ""),
                max_bytes,
                time.monotonic() + timeout,
                timeout,
            )
            return Image(body, mime)
    except FetchError as exc:
        raise FetchError(f"image: {exc}" if not str(exc).startswith("image:") else str(exc)) from None
    except httpx.TooManyRedirects:
        raise FetchError(f"image: more than {MAX_REDIRECTS} redirects") from None
    except httpx.TimeoutException:
        raise FetchError(f"image: timed out: no complete answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"image: {type(exc).__name__}: {exc}") from None
    finally:
        if own:
            client.close()


class _OpenGraph(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values = dict(attrs)
        key = values.get("property") or values.get("name") or ""
        if key in ("og:title", "og:description", "og:image", "description") and values.get("content"):
            self.found.setdefault("og:description" if key == "description" else key, values["content"] or "")


def open_graph(url: str, *, allow_private: bool, timeout: float = 15.0) -> tuple[dict[str, str], str]:
    """og: tags of the article page, fetched with the same bounds as feeds and, unless
    allow_private, from a public address only; an HTML page only. Only the page's first
    64 KB, up to </head>, is read for them, and each value is cut to 1,000 characters
    before it is cleaned: the page is the attacker's, and the time it costs must not depend
    on its size. ({}, reason) when the network policy refused the page or its HTML could
    not be read (the card then comes from the item alone); ({}, "") on any other error."""
    with make_client(max_connections=2, public_only=not allow_private) as client:
        result = fetch_one(
            FetchRequest(
                "card",
                url,
                max_bytes=PAGE_MAX_BYTES,
                timeout=min(15.0, timeout),
                content_types=("text/html", "application/xhtml+xml"),
            ),
            client,
        )
    if result.status != "ok":
        return {}, (result.error or "") if result.refused else ""
    try:
        return _read_open_graph(result.body), ""
    except Exception as exc:  # hostile HTML that breaks a parser means no OpenGraph, not no post
        return {}, f"the page's HTML could not be read: {type(exc).__name__}"


def _read_open_graph(body: bytes) -> dict[str, str]:
    from relay.text import clean_text

    head = body[:OPEN_GRAPH_MAX_BYTES].decode("utf-8", "replace")
    end = head.lower().find("</head>")
    if end >= 0:
        head = head[:end]
    parser = _OpenGraph()
    parser.feed(head)
    found = {k: clean_text(v[:OPEN_GRAPH_MAX_CHARS]) for k, v in parser.found.items()}
    found = {k: v for k, v in found.items() if v}
    if "og:image" in found and not re.match(r"^https?://", found["og:image"]):
        del found["og:image"]
    return found
