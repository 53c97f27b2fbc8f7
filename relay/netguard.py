"""The guarded network path under every HTTP request relay makes: a total deadline per
request (DNS, connect, TLS, every read and write, every redirect hop), and, for URLs that
come from feed content, a policy that refuses any address that is not public.

A feed from feeds.yaml is trusted only at the host the user wrote: its first hop goes there
wherever that is (feeds may be on an intranet), but a redirect to any other host must reach
a public address, unless the feed's own host was reached at a non-public address (an
intranet feed may redirect inside the intranet) or the configuration allows private
addresses. A public feed therefore cannot send relay to a cloud metadata service or an
intranet page.

The check and the connection use the same resolution: the host is resolved once, every
address is checked, and the socket connects to a checked address, so a DNS answer that
changes between the check and the connect (rebinding) cannot reach a private address.
TLS still verifies the certificate against the host name, which httpcore passes to
start_tls."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpx
from httpcore._backends.sync import SyncStream

from relay.errors import FetchError

T = TypeVar("T")
_state = threading.local()  # each worker thread runs its own request, with its own deadline


class RefusedAddress(FetchError):
    """The host resolves to an address the network policy refuses."""


class _Trust:
    """The feed host (host, port) the user configured, for the request this thread makes."""

    __slots__ = ("allow_private", "origin", "public")

    def __init__(self, origin: tuple[str, int] | None, allow_private: bool) -> None:
        self.origin = origin
        self.allow_private = allow_private
        self.public: bool | None = None  # whether this request reached it at a public address


def origin_of(url: str) -> tuple[str, int] | None:
    """(host, port) as the connection pool names them: IDNA host, lower case, default port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if not parsed.raw_host:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.raw_host.decode("ascii").lower(), port


@contextmanager
def trusting(url: str, *, allow_private: bool = False) -> Iterator[None]:
    """This thread's request inside the block trusts the host and port of `url` to be
    anywhere; a redirect to another host must reach a public address, unless `url`'s host
    was itself reached at a non-public address or `allow_private`."""
    previous = getattr(_state, "trust", None)
    _state.trust = _Trust(origin_of(url), allow_private)
    try:
        yield
    finally:
        _state.trust = previous


class DeadlineExceeded(FetchError):
    """The request's total deadline passed."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Everything this thread sends or receives inside the block ends within `seconds`."""
    previous = getattr(_state, "deadline", None)
    _state.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _state.deadline = previous


def time_left() -> float | None:
    """Seconds before this thread's deadline, or None when no deadline is set."""
    end: float | None = getattr(_state, "deadline", None)
    return None if end is None else end - time.monotonic()


def deadline_passed() -> bool:
    left = time_left()
    return left is not None and left <= 0


def _bounded(timeout: float | None) -> float | None:
    """The smaller of an operation's own timeout and the time left; raises when none is left."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("deadline passed")
    return left if timeout is None else min(timeout, left)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one: mapped, 6to4, Teredo (both ends), NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client; the server is checked by is_public below
    packed = address.packed
    if packed[:12] == bytes.fromhex("0064ff9b0000000000000000"):  # 64:ff9b::/96
        return ipaddress.IPv4Address(packed[12:])
    if packed[:6] == bytes.fromhex("0064ff9b0001"):  # 64:ff9b:1::/48, local-use NAT64
        return ipaddress.IPv4Address(packed[12:])
    if packed[:12] == bytes(12):  # ::a.b.c.d, the deprecated IPv4-compatible form
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_public(text: str) -> bool:
    """Whether an address is a public, routable unicast address (IPv4 or IPv6)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if (
        not address.is_global
        or address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None and not is_public(str(address.teredo[0])):
            return False
        inner = embedded_ipv4(address)
        if inner is not None and not is_public(str(inner)):
            return False
    return True


class Abandoned(Exception):
    """A call did not finish in time; it was left running in its daemon thread."""


def call_abandonable(function: Callable[[], T], timeout: float | None, name: str) -> T:
    """function() in a daemon thread, waited for at most `timeout` seconds, for calls that
    have no total deadline of their own (getaddrinfo, an SDK's request): one that overruns
    is abandoned (it dies with the process) and Abandoned is raised; its errors are raised
    here, in the caller's thread."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Abandoned(name)
    if failure:
        raise failure[0]
    return outcome[0]


def resolve(host: str, port: int, timeout: float | None) -> list[tuple[Any, ...]]:
    """getaddrinfo with a deadline: it has none of its own."""
    try:
        found = call_abandonable(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout, "relay-dns")
    except Abandoned:
        raise httpcore.ConnectTimeout(f"no DNS answer for {host} in time") from None
    except Exception as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
    if not found:
        raise httpcore.ConnectError(f"cannot resolve {host}")
    return found


class GuardedStream(httpcore.NetworkStream):
    """A socket stream whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return GuardedStream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _refuse_private(host: str, addresses: list[tuple[Any, Any]], *, redirected: bool) -> None:
    """Raises RefusedAddress when any of the host's addresses is not public."""
    refused = [str(address[0]) for _, address in addresses if not is_public(str(address[0]))]
    if not refused:
        return
    if redirected:
        what = f"{host}," if refused[0] == host else f"{host}, which resolves to {refused[0]},"
        raise RefusedAddress(f"redirected to {what} a private or local address; not fetched")
    what = host if refused[0] == host else f"{host} resolves to {refused[0]}, which"
    raise RefusedAddress(f"{what} is a private or local address; not fetched")


class GuardedBackend(httpcore.SyncBackend):
    """Resolves once, checks every address when `public_only` (or, for a feed, when a
    redirect leaves a public feed host), connects to a checked one."""

    def __init__(self, *, public_only: bool) -> None:
        self.public_only = public_only
        # whether the latest connection to (host, port) reached a public address: a request
        # whose first hop reuses a pooled connection learns its feed host's from here
        self._reached_public: dict[tuple[str, int], bool] = {}

    def _must_be_public(self, key: tuple[str, int]) -> bool:
        """Whether this thread's feed request may reach `key` only at a public address."""
        trust: _Trust | None = getattr(_state, "trust", None)
        if trust is None or trust.allow_private or key == trust.origin:
            return False
        if trust.public is not None:
            return trust.public
        # unknown (no connection to the feed host yet): check, the safe side
        return self._reached_public.get(trust.origin, True) if trust.origin else True

    def _reached(self, key: tuple[str, int], address: str) -> None:
        public = is_public(address)
        self._reached_public[key] = public
        trust: _Trust | None = getattr(_state, "trust", None)
        if trust is not None and key == trust.origin:
            trust.public = public

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        infos = resolve(host, port, _bounded(timeout))
        addresses = [(family, address) for family, _, _, _, address in infos]
        key = (host.lower(), port)
        if self.public_only:
            _refuse_private(host, addresses, redirected=False)
        elif self._must_be_public(key):
            _refuse_private(host, addresses, redirected=True)
        last: Exception | None = None
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(_bounded(timeout))
                if local_address is not None:
                    sock.bind((local_address, 0))
                sock.connect(address)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except TimeoutError as exc:
                sock.close()
                last = httpcore.ConnectTimeout(f"connecting to {host} timed out")
                last.__cause__ = exc
            except OSError as exc:
                sock.close()
                last = httpcore.ConnectError(exc.strerror or str(exc))
            except BaseException:
                sock.close()
                raise
            else:
                self._reached(key, str(address[0]))
                return GuardedStream(SyncStream(sock))
        assert last is not None
        raise last


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process (building one reads the CA bundle, ~25 ms)."""
    return httpx.create_ssl_context()


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport, its connection pool running on the guarded backend. (The pool is
    all that HTTPTransport.__init__ builds, so it is built here instead, once.)"""

    def __init__(self, *, public_only: bool, max_connections: int = 32) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(public_only=public_only),
        )


def make_transport(*, public_only: bool, max_connections: int = 32) -> httpx.HTTPTransport:
    return GuardedTransport(public_only=public_only, max_connections=max_connections)
