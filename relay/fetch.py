"""HTTP and local fetching of feeds, pages and images: a total deadline per request (DNS,
connect, headers, body and redirects, through relay.netguard), a body cap enforced while
streaming and after decompression, conditional GET, redirects capped, concurrency with at
most two connections per host. Feeds from feeds.yaml are fetched from wherever the user
says, but a redirect to another host only to a public address (unless the feed's own host
is private, an intranet feed, or the configuration allows private addresses); pages and
images named by feed content only from public addresses, unless the configuration lifts
that policy. Returns bytes; never parses."""

from __future__ import annotations

import email.utils
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from relay import __version__
from relay.errors import FetchError
from relay.netguard import RefusedAddress, deadline, deadline_passed, make_transport, trusting

USER_AGENT = f"relay/{__version__} (+https://github.com/relay-campaigns/relay; feed relay bot)"
MAX_REDIRECTS = 5
PER_HOST = 2
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


def make_client(max_connections: int = 32, *, public_only: bool = False) -> httpx.Client:
    """A client over the guarded transport; public_only for URLs that came from feed content
    (every redirect hop goes through the same transport, so each is checked again)."""
    return httpx.Client(
        transport=make_transport(public_only=public_only, max_connections=max_connections),
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
    workers: int = 32,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_private: bool = False,
) -> list[FetchResult]:
    """Fetch every request concurrently; results come back in the order of requests.
    allow_private (network.allow_private) lets a feed redirect to a private address."""
    requests = list(requests)
    host_locks: dict[str, threading.Semaphore] = {}
    guard = threading.Lock()

    def one(request: FetchRequest) -> FetchResult:
        host = urlsplit(request.url).netloc.lower()
        with guard:
            semaphore = host_locks.setdefault(host, threading.Semaphore(PER_HOST))
        with semaphore:
            return fetch_one(request, client, now=now, allow_private=allow_private)

    if len(requests) <= 1:
        return [one(r) for r in requests]
    with ThreadPoolExecutor(max_workers=min(workers, len(requests))) as pool:
        return list(pool.map(one, requests))


def fetch_one(
    request: FetchRequest,
    client: httpx.Client,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_private: bool = False,
) -> FetchResult:
    """One request. Its host is trusted as the user wrote it; a redirect to another host
    must reach a public address unless that host is private or allow_private."""
    try:
        scheme = urlsplit(request.url).scheme.lower()
        if scheme == "file":
            return _fetch_file(request)
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {scheme!r}")
        with deadline(request.timeout), trusting(request.url, allow_private=allow_private):
            return _fetch_http(request, client, now)
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


def _fetch_http(request: FetchRequest, client: httpx.Client, now: Callable[[], datetime]) -> FetchResult:
    headers = {}
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    ends = time.monotonic() + request.timeout
    per_read = min(10.0, request.timeout)
    timeout = httpx.Timeout(per_read, connect=min(10.0, request.timeout), pool=request.timeout)
    try:
        with client.stream("GET", request.url, headers=headers, timeout=timeout) as response:
            if response.status_code == 304:
                return FetchResult(
                    request.name,
                    request.url,
                    "not_modified",
                    final_url=str(response.url),
                    etag=response.headers.get("etag") or request.etag,
                    last_modified=response.headers.get("last-modified") or request.last_modified,
                )
            if response.status_code >= 400:
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
            )
    except httpx.TooManyRedirects:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)") from None
    except httpx.TimeoutException:
        if deadline_passed() or per_read >= request.timeout:
            raise FetchError(f"timed out: no complete answer within {request.timeout:g}s") from None
        raise FetchError(f"timed out: no answer for {per_read:g}s") from None
    except httpx.ConnectError as exc:
        reason = str(exc) or "connection failed"
        if "refused" in reason.lower():
            reason = "connection refused"
        raise FetchError(reason) from None
    except httpx.UnsupportedProtocol as exc:
        raise FetchError(f"redirected to an unsupported URL: {exc}") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


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
