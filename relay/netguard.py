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
start_tls.

Over HTTP/2 many requests share one connection, and one socket read serves them all, so a
read on a shared connection ends at the earliest deadline of the requests still using it:
the request whose time is up ends on time, and the others, whose connection it closed, can
tell (ended_by_another) and try again on a new one."""

from __future__ import annotations

import functools
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TypeVar

import httpcore
import httpx
from httpcore._backends.sync import SyncStream

from relay.errors import FetchError

T = TypeVar("T")
SLICE = 0.1  # seconds: how late a shared (HTTP/2) read may notice a deadline that joined it
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


class _Deadline:
    """One request's deadline; no longer active once its block is left."""

    __slots__ = ("active", "ends")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.active = True


class DeadlineTimeout(httpcore.ReadTimeout):
    """A read or write stopped at a request's deadline: `owner`'s, which on a shared
    (HTTP/2) connection may be another request's than the one that was reading."""

    def __init__(self, owner: _Deadline) -> None:
        super().__init__("deadline passed")
        self.owner = owner


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Everything this thread sends or receives inside the block ends within `seconds`."""
    previous = getattr(_state, "deadline", None)
    current = _Deadline(time.monotonic() + seconds)
    _state.deadline = current
    try:
        yield
    finally:
        current.active = False
        _state.deadline = previous


def _own_deadline() -> _Deadline | None:
    own: _Deadline | None = getattr(_state, "deadline", None)
    return own


def time_left() -> float | None:
    """Seconds before this thread's deadline, or None when no deadline is set."""
    own = _own_deadline()
    return None if own is None else own.ends - time.monotonic()


def deadline_passed() -> bool:
    left = time_left()
    return left is not None and left <= 0


def ended_by_another(error: BaseException) -> bool:
    """Whether `error` is another request's deadline closing the HTTP/2 connection this
    thread's request shared, while this thread still has time: worth one more try."""
    own = _own_deadline()
    if own is not None and own.ends <= time.monotonic():
        return False
    seen: BaseException | None = error
    for _ in range(5):  # httpx wraps httpcore's error once; the chain is short
        if seen is None:
            return False
        if isinstance(seen, DeadlineTimeout):
            return seen.owner is not own
        seen = seen.__cause__ or seen.__context__
    return False


def _bounded(timeout: float | None, limit: _Deadline | None = None) -> float | None:
    """The smaller of an operation's own timeout and the time left before `limit` (this
    thread's deadline unless given); raises when none is left."""
    limit = limit or _own_deadline()
    if limit is None:
        return timeout
    left = limit.ends - time.monotonic()
    if left <= 0:
        raise DeadlineTimeout(limit)
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
    """A socket stream whose every read, write and TLS handshake ends by the deadline. A
    shared stream (HTTP/2) reads until the earliest deadline of the requests using it,
    since whichever thread reads, reads for all of them, and the others wait for it; it
    waits for data outside its lock and reads and writes one thread at a time."""

    def __init__(self, inner: httpcore.NetworkStream, *, address: str, shared: bool = False) -> None:
        self._inner = inner
        self.address = address  # the address connected to, checked by the policy
        self.shared = shared
        self._users: set[_Deadline] = set()
        self._users_lock = threading.Lock()
        self.ended_by: _Deadline | None = None  # the deadline that closed this shared stream
        # one thread at a time in the TLS connection: OpenSSL's are not to be used from two
        # threads at once (httpcore reads in one thread while others send), and a read and a
        # write would each set the socket's timeout for the other
        self._io = threading.Lock()

    def _earliest(self) -> _Deadline | None:
        """The deadline that ends this thread's next read or write: its own, or on a shared
        stream the earliest of the requests still waiting on it (this one included)."""
        own = _own_deadline()
        if not self.shared:
            return own
        with self._users_lock:
            if own is not None:
                self._users.add(own)
            self._users = {user for user in self._users if user.active}
            return min(self._users, key=lambda user: user.ends, default=None)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self.shared:
            return self._inner.read(max_bytes, _bounded(timeout))
        # A request with an earlier deadline may join while this read waits: read in short
        # slices, looking again at the deadlines between them (a timed-out socket read
        # loses nothing, TLS included, so the next slice goes on where it stopped).
        gives_up = None if timeout is None else time.monotonic() + timeout
        while True:
            limit = self._earliest()
            if self.ended_by is not None:
                raise DeadlineTimeout(self.ended_by)
            now = time.monotonic()
            if limit is not None and limit.ends <= now:
                self._end(limit)
            if gives_up is not None and gives_up <= now:
                raise httpcore.ReadTimeout("no answer in time")
            ends = [end for end in (gives_up, limit.ends if limit else None) if end is not None]
            if not self._readable(min([SLICE, *(end - now for end in ends)])):
                continue
            with self._io:
                try:
                    return self._inner.read(max_bytes, SLICE)  # at most the rest of a TLS record
                except httpcore.ReadTimeout:
                    continue

    def _readable(self, wait: float) -> bool:
        """Whether there is something to read, waiting at most `wait` seconds for it, without
        holding the socket (other threads send on it meanwhile)."""
        sock = self._inner.get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return True  # not a socket: let its own read wait
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(max(0.0, wait) * 1000))

    def _end(self, limit: _Deadline) -> NoReturn:
        """The earliest deadline of the requests on this shared stream passed: the stream
        closes (httpcore would keep an HTTP/2 connection whose read failed open until its
        keep-alive expires), and every request still on it learns whose deadline it was."""
        self.ended_by = limit
        with self._io:  # not while another thread sends on it
            self._inner.close()
        raise DeadlineTimeout(limit)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._earliest()  # a request joins a shared stream by sending on it
        if self.ended_by is not None:
            raise DeadlineTimeout(self.ended_by)
        if not self.shared:
            self._inner.write(buffer, _bounded(timeout))
            return
        with self._io:
            if self.ended_by is not None:
                raise DeadlineTimeout(self.ended_by)
            self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        secure = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout))
        tls = secure.get_extra_info("ssl_object")
        shared = tls is not None and tls.selected_alpn_protocol() == "h2"
        return GuardedStream(secure, address=self.address, shared=shared)

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
                return GuardedStream(SyncStream(sock), address=str(address[0]))
        assert last is not None
        raise last


class _SerialH2:
    """h2's state machine for one HTTP/2 connection, which httpcore's sync code drives from
    every thread sharing the connection without a lock of its own: h2 is not thread-safe,
    and two threads could take the same stream id (h2 hands out the next id without
    reserving it). Here every call is made under one lock, and the lock taken with a stream
    id is held until that thread has sent the stream's headers, so ids are used once and in
    order (a known httpcore limitation: encode/httpx#3072, pydantic/httpx2#1153)."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_holding", threading.local())  # this thread took an id

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)  # httpcore sets local_settings before the preamble

    def get_next_available_stream_id(self) -> int:
        self._lock.acquire()  # released once this thread has sent the stream's headers
        try:
            stream_id: int = self._inner.get_next_available_stream_id()
        except BaseException:
            self._lock.release()
            raise
        self._holding.stream = True
        return stream_id

    def send_headers(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._lock:
                return self._inner.send_headers(*args, **kwargs)
        finally:
            self.release_stream_id()

    def release_stream_id(self) -> None:
        """Lets the lock taken with a stream id go, if this thread holds it."""
        if getattr(self._holding, "stream", False):
            self._holding.stream = False
            self._lock.release()


class _EventsArrived(Exception):
    """The events a thread waited for were read by another thread."""


class _PatientLock:
    """httpcore's read lock for an HTTP/2 connection. httpcore makes a thread take it even to
    look for the events another thread already read for its stream, so a stream that is
    done waits for whoever is reading (a slow stream's read, up to its deadline); here a
    waiting thread looks at its stream whenever a read ends, and leaves as soon as its
    events came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Condition()  # a read ended: events may have come
        self._waiting = threading.local()

    def wait_for(self, ready: Callable[[], bool] | None) -> None:
        self._waiting.ready = ready

    def __enter__(self) -> None:
        ready = getattr(self._waiting, "ready", None)
        own = _own_deadline()
        with self._released:
            while not self._lock.acquire(blocking=False):
                if ready is not None and ready():
                    raise _EventsArrived
                # the holder may never let go (a reader stuck where no deadline reaches):
                # this thread's own deadline still ends its wait
                if own is not None and own.ends <= time.monotonic():
                    raise DeadlineTimeout(own)
                self._released.wait(SLICE)

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
        with self._released:
            self._released.notify_all()


class _SerialHTTP2Connection(httpcore.HTTP2Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h2_state = _SerialH2(self._h2_state)  # type: ignore[assignment]
        self._read_lock = _PatientLock()  # type: ignore[assignment]

    def _receive_events(self, request: httpcore.Request, stream_id: int | None = None) -> None:
        lock: _PatientLock = self._read_lock  # type: ignore[assignment]
        lock.wait_for((lambda: bool(self._events.get(stream_id))) if stream_id is not None else None)
        try:
            super()._receive_events(request, stream_id)
        except _EventsArrived:
            self._write_outgoing_data(request)
        finally:
            lock.wait_for(None)

    def _receive_remote_settings_change(self, event: Any) -> None:
        """The server changed its settings. httpcore takes back the stream permits of a
        lowered SETTINGS_MAX_CONCURRENT_STREAMS waiting, with no deadline and holding the
        read lock, for streams still open to end, which only a read can end: a server that
        lowers it and answers nothing would hang relay. Here only free permits are taken;
        the rest are not (h2 itself refuses a stream over the server's limit)."""
        import h2.settings

        changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
        if not changed:
            return
        new_max = min(changed.new_value, self._h2_state.local_settings.max_concurrent_streams)
        if not new_max:
            return
        while new_max > self._max_streams:
            self._max_streams_semaphore.release()
            self._max_streams += 1
        while new_max < self._max_streams and self._max_streams_semaphore._semaphore.acquire(blocking=False):
            self._max_streams -= 1

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        try:
            return super().handle_request(request)
        finally:
            # a failure between taking a stream id and sending its headers must not keep
            # the connection's lock
            self._h2_state.release_stream_id()  # type: ignore[attr-defined]

    def _response_closed(self, stream_id: int) -> None:
        """An answer left before its end (over the size cap, a long error page): httpcore
        neither resets the stream nor gives back the flow-control credit of the data it
        received and dropped, so after some of them the connection has no window left and
        every other feed on it stalls. Reset it and give the credit back."""
        import h2.errors
        import h2.events
        import h2.exceptions

        stream = self._h2_state.streams.get(stream_id)
        if stream is not None and not stream.closed:
            with suppress(h2.exceptions.ProtocolError):
                self._h2_state.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        unread = sum(
            event.flow_controlled_length or 0
            for event in self._events.get(stream_id, ())
            if isinstance(event, h2.events.DataReceived)
        )
        if unread:
            with suppress(h2.exceptions.ProtocolError):
                self._h2_state.acknowledge_received_data(unread, stream_id)
        super()._response_closed(stream_id)


class _Connection(httpcore.HTTPConnection):
    """httpcore's connection (httpcore 1.0's handle_request), with HTTP/2 on _SerialH2."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"Attempted to send request to {request.url.origin} on connection to {self._origin}")
        try:
            with self._request_lock:
                if self._connection is None:
                    stream = self._connect(request)
                    ssl_object = stream.get_extra_info("ssl_object")
                    http2_negotiated = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
                    if http2_negotiated or (self._http2 and not self._http1):
                        self._connection = _SerialHTTP2Connection(
                            origin=self._origin, stream=stream, keepalive_expiry=self._keepalive_expiry
                        )
                    else:
                        self._connection = httpcore.HTTP11Connection(
                            origin=self._origin, stream=stream, keepalive_expiry=self._keepalive_expiry
                        )
        except BaseException:
            self._connect_failed = True
            raise
        self._refuse_unless_allowed(request)
        return self._connection.handle_request(request)

    def _refuse_unless_allowed(self, request: httpcore.Request) -> None:
        """Every request is checked against the connection it is about to be sent on, before
        anything is sent: the pool may hand a request that must reach a public address (a
        feed's redirect to another host) a connection a trusted request opened unchecked,
        or, over HTTP/2, one still being opened when the request was queued on it."""
        backend = self._network_backend
        if not isinstance(backend, GuardedBackend) or self._connection is None:
            return
        origin = request.url.origin
        host = origin.host.decode("ascii").lower()
        if not (backend.public_only or backend._must_be_public((host, origin.port))):
            return
        stream = getattr(self._connection, "_network_stream", None)
        address = stream.address if isinstance(stream, GuardedStream) else None
        if address is None or not is_public(address):
            _refuse_private(host, [(None, (address or host,))], redirected=not backend.public_only)


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port


def _multiplexes(connection: httpcore.ConnectionInterface) -> bool:
    """Whether the connection carries several requests at once: HTTP/2, or not yet
    connected and possibly HTTP/2."""
    inner = getattr(connection, "_connection", None)
    return not isinstance(inner, httpcore.HTTP11Connection)


class _Pool(httpcore.ConnectionPool):
    """httpcore's pool, with its connections being _Connection and its assignment of
    requests to connections rewritten (_assign_requests_to_connections)."""

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        """httpcore 1.0's assignment of waiting requests to connections (called under the
        pool's lock each time a request comes or goes), in one pass over the pool, probing
        only the connections it may reuse, and never closing one already handed to a
        waiting request.

        httpcore 1.0.9 counts the whole pool once per idle connection (a bug: it means to
        count the idle ones; encode/httpcore#1035), scans the pool twice per waiting
        request, and polls the socket of every idle connection on every pass to see whether
        its server hung up. With 32 kept-alive connections to 32 different hosts, that was
        30 polls and a thousand method calls for each request. It also takes a connection
        assigned to a waiting request, not yet used, for idle, and may close it to make room
        (encode/httpcore#1110).

        The rules: closed connections leave the pool; idle ones beyond
        max_keepalive_connections are closed, oldest first; then each waiting request, in
        order, gets an available connection to its origin (an idle HTTP/1.1 one goes to one
        request only, and is first checked for expiry or a hang-up, and closed if so), else
        a new connection while the pool has room, else a new one in place of the oldest idle
        connection, else it keeps waiting. An idle connection no request wants is not probed:
        it waits, open, until it is reused (and checked then), pushed out for room, or the
        pool closes. Returns the connections to close; the caller closes them outside the
        lock."""
        if not httpcore.__version__.startswith("1.0."):
            return super()._assign_requests_to_connections()
        reserved = {id(request.connection) for request in self._requests if request.connection is not None}
        closing: list[httpcore.ConnectionInterface] = []
        pool = [connection for connection in self._connections if not connection.is_closed()]
        idle = [connection for connection in pool if id(connection) not in reserved and connection.is_idle()]
        surplus = len(idle) - (self._max_keepalive_connections or 0)
        if surplus > 0:
            closing += idle[:surplus]
            idle = idle[surplus:]
            pool = [connection for connection in pool if connection not in closing]
        self._connections = pool
        queued = [request for request in self._requests if request.is_queued()]
        if not queued:
            return closing
        available: dict[tuple[bytes, bytes, int], list[httpcore.ConnectionInterface]] = {}
        for connection in pool:
            # a connection already handed to a request takes no other, unless it carries
            # several at once (HTTP/2, or one being opened that may turn out HTTP/2)
            if connection.is_available() and (id(connection) not in reserved or _multiplexes(connection)):
                available.setdefault(_key(connection._origin), []).append(connection)  # type: ignore[attr-defined]

        def drop(connection: httpcore.ConnectionInterface) -> None:
            pool.remove(connection)
            closing.append(connection)
            if connection in idle:
                idle.remove(connection)
            for others in available.values():
                if connection in others:
                    others.remove(connection)

        for pool_request in queued:
            origin = pool_request.request.url.origin
            candidates = available.get(_key(origin), [])
            while candidates and candidates[0].has_expired():
                if id(candidates[0]) in reserved:
                    candidates.pop(0)  # not for this request; closed by no one but its own
                else:
                    drop(candidates[0])
            if candidates:
                connection = candidates[0]
                if connection.is_idle() and not _multiplexes(connection):
                    candidates.pop(0)  # one request per HTTP/1.1 connection
                if connection in idle:
                    idle.remove(connection)  # handed to a request: never closed to make room
                reserved.add(id(connection))
                pool_request.assign_to_connection(connection)
                continue
            if len(pool) >= self._max_connections:
                if not idle:
                    continue
                drop(idle[0])
            connection = self.create_connection(origin)
            pool.append(connection)
            pool_request.assign_to_connection(connection)
            if connection.is_available():  # one that may become HTTP/2 takes the others too
                available.setdefault(_key(origin), []).append(connection)
        return closing

    def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
        return _Connection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=self._http1,
            http2=self._http2,
            retries=self._retries,
            local_address=self._local_address,
            uds=self._uds,
            network_backend=self._network_backend,
            socket_options=self._socket_options,
        )


@functools.cache
def _ssl_context(http2: bool) -> ssl.SSLContext:
    """One verifying context per process and protocol choice (building one reads the CA
    bundle, ~25 ms; httpcore sets the offered protocols on the context it is given, so the
    pools that offer HTTP/2 and those that do not each have their own)."""
    return httpx.create_ssl_context()


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport, its connection pool running on the guarded backend. (The pool is
    all that HTTPTransport.__init__ builds, so it is built here instead, once.)"""

    def __init__(
        self,
        *,
        public_only: bool,
        max_connections: int = 32,
        http2: bool = False,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._backend = GuardedBackend(public_only=public_only)
        self._pool = _Pool(
            ssl_context=verify or _ssl_context(http2),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http2=http2,
            network_backend=self._backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """A request that must reach a public address (a feed's redirect to another host)
        may be given a pooled connection that a trusted request opened, unchecked (on
        HTTP/2, even one still being opened): a host last reached at a private address is
        refused here, every request is checked against its connection before it is sent
        (_Connection), and, a second guard, an answer that came over a connection to a
        private address is dropped unread."""
        host = request.url.raw_host.decode("ascii").lower()
        key = (host, request.url.port or (443 if request.url.scheme == "https" else 80))
        backend = self._backend
        must_be_public = not backend.public_only and backend._must_be_public(key)
        if must_be_public and backend._reached_public.get(key) is False:
            raise RefusedAddress(f"redirected to {host}, a private or local address; not fetched")
        response = super().handle_request(request)
        stream = response.extensions.get("network_stream")
        if must_be_public and isinstance(stream, GuardedStream) and not is_public(stream.address):
            response.close()
            _refuse_private(host, [(None, (stream.address,))], redirected=True)
        return response


def http2_available() -> bool:
    """Whether HTTP/2 can be offered: h2 is installed, and httpcore is a version whose
    HTTP/2 internals _SerialHTTP2Connection and _Connection were written against (1.0).
    Any other falls back to HTTP/1.1 rather than share a connection between threads unsafely."""
    import importlib.util

    return httpcore.__version__.startswith("1.0.") and importlib.util.find_spec("h2") is not None


def make_transport(
    *, public_only: bool, max_connections: int = 32, http2: bool = False, verify: ssl.SSLContext | None = None
) -> httpx.HTTPTransport:
    """The guarded transport. http2 offers HTTP/2 to https hosts (TLS ALPN; plain http
    stays HTTP/1.1) when http2_available(). verify is a context of its own for tests and
    bench/ (a local CA); relay itself always verifies against the default CA bundle."""
    return GuardedTransport(
        public_only=public_only,
        max_connections=max_connections,
        http2=http2 and http2_available(),
        verify=verify,
    )
