"""The connection pool under every fetch (netguard._Pool): requests to many hosts through a
pool smaller than them all get answers, kept-alive connections are reused, a connection the
server hung up on is not, the work per request does not grow with the pool, and a connection
handed to a waiting request is never closed under it (encode/httpcore#1110)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest
from httpcore._sync.connection_pool import PoolRequest

from relay import netguard
from relay.fetch import FetchRequest, fetch_all, fetch_one, make_client
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer


def counting_accepts(server: FeedServer) -> FeedServer:
    """server.accepted: how many connections it has taken."""
    original = server.httpd.get_request
    server.accepted = 0  # type: ignore[attr-defined]

    def get_request() -> Any:
        connection = original()
        server.accepted += 1  # type: ignore[attr-defined]
        return connection

    server.httpd.get_request = get_request  # type: ignore[method-assign]
    return server


@pytest.fixture
def hosts() -> Iterator[list[FeedServer]]:
    servers = [counting_accepts(FeedServer()).start() for _ in range(6)]
    for number, server in enumerate(servers):
        for feed in range(3):
            server.feed(f"/feed{feed}.xml", numbered(feed + 1, prefix=f"host {number} item"))
    yield servers
    for server in servers:
        server.stop()


def test_more_hosts_and_workers_than_connections_all_get_answers(hosts: list[FeedServer]) -> None:
    """18 feeds on 6 hosts, 6 workers, a pool of 3 connections: requests wait in the pool
    and close idle connections to other hosts to make room, and every feed is fetched."""
    requests = [
        FetchRequest(f"h{h}f{f}", server.url(f"/feed{f}.xml")) for h, server in enumerate(hosts) for f in range(3)
    ]
    with make_client(max_connections=3) as client:
        results = fetch_all(requests, client, workers=6)
    assert [r.status for r in results] == ["ok"] * 18
    assert all(b"host" in r.body for r in results)


def test_a_kept_connection_is_reused(hosts: list[FeedServer]) -> None:
    server = hosts[0]
    with make_client(max_connections=4) as client:
        for feed in (0, 1, 2, 0):
            assert fetch_one(FetchRequest("f", server.url(f"/feed{feed}.xml")), client).status == "ok"
    assert server.accepted == 1  # type: ignore[attr-defined]


class HangUpServer:
    """Answers each request once, with a body and no `Connection: close`, then hangs up:
    a kept-alive connection that is dead when it is next wanted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                body = numbered(1)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


def test_a_connection_the_server_hung_up_on_is_not_reused() -> None:
    server = HangUpServer()
    url = f"http://127.0.0.1:{server.port}/feed.xml"
    try:
        with make_client() as client:
            first = fetch_one(FetchRequest("f", url), client)
            time.sleep(0.2)  # the hang-up reaches the client's socket
            second = fetch_one(FetchRequest("f", url), client)
    finally:
        server.sock.close()
    assert (first.status, second.status) == ("ok", "ok"), second.error
    assert server.accepted == 2


def test_the_work_per_request_does_not_grow_with_the_pool(
    hosts: list[FeedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore 1.0.9 polls every idle connection's socket on each pass (twice per request):
    with 5 idle connections to other hosts, a request to a sixth host would poll 10 times.
    The pool only checks a connection it is about to reuse."""
    probes: list[object] = []
    real = httpcore.HTTPConnection.has_expired

    def has_expired(self: httpcore.HTTPConnection) -> bool:
        probes.append(self)
        return real(self)

    with make_client(max_connections=8) as client:
        for server in hosts[:5]:
            assert fetch_one(FetchRequest("f", server.url("/feed0.xml")), client).status == "ok"
        monkeypatch.setattr(httpcore.HTTPConnection, "has_expired", has_expired)
        assert fetch_one(FetchRequest("f", hosts[5].url("/feed0.xml")), client).status == "ok"
        assert probes == []
        assert fetch_one(FetchRequest("f", hosts[0].url("/feed1.xml")), client).status == "ok"
        assert len(probes) == 1  # the connection to host 0, before it is reused
    assert hosts[0].accepted == 1  # type: ignore[attr-defined]


class FakeConnection:
    """Enough of a pooled connection for _assign_requests_to_connections."""

    def __init__(self, host: bytes) -> None:
        self._origin = httpcore.Origin(b"http", host, 80)
        self.idle = True

    def is_closed(self) -> bool:
        return False

    def has_expired(self) -> bool:
        return False

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.idle


def waiting(url: str) -> PoolRequest:
    return PoolRequest(httpcore.Request("GET", url))


def test_a_connection_handed_to_a_waiting_request_is_not_closed_to_make_room() -> None:
    """A is idle, assigned to a request that has not started on it yet; a request for
    another host comes and the pool is full. httpcore 1.0.9 closes A for it (the first
    request then hangs or fails); here the new request waits for room instead."""
    pool = netguard._Pool(max_connections=1, max_keepalive_connections=1)
    a = FakeConnection(b"a.example")
    pool._connections = [a]  # type: ignore[list-item]
    first = waiting("http://a.example/feed.xml")
    first.assign_to_connection(a)  # type: ignore[arg-type]
    second = waiting("http://b.example/feed.xml")
    pool._requests = [first, second]
    closing = pool._assign_requests_to_connections()
    assert closing == []
    assert pool._connections == [a]
    assert second.is_queued()


def test_an_idle_connection_goes_to_one_waiting_request_and_the_oldest_idle_one_makes_room() -> None:
    pool = netguard._Pool(max_connections=2, max_keepalive_connections=2)
    a, b = FakeConnection(b"a.example"), FakeConnection(b"b.example")
    pool._connections = [a, b]  # type: ignore[list-item]
    to_b = [waiting("http://b.example/1"), waiting("http://b.example/2")]
    to_c = waiting("http://c.example/1")
    pool._requests = [*to_b, to_c]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(netguard, "_multiplexes", lambda connection: False)  # as HTTP/1.1 connections
        closing = pool._assign_requests_to_connections()
    assert to_b[0].connection is b
    # b serves one request at a time: the second gets a new connection, in place of the
    # idle one no request wants
    assert closing == [a]
    assert to_b[1].connection is not None and to_b[1].connection is not b
    assert pool._connections == [b, to_b[1].connection]
    assert to_c.is_queued()  # the pool is full and nothing in it is idle


def test_an_http2_connection_handed_to_a_request_is_not_closed_in_the_same_pass() -> None:
    """An idle connection that carries several requests at once (HTTP/2) goes to a waiting
    request; a request for another host comes next and the pool is full: it waits."""
    pool = netguard._Pool(max_connections=1, max_keepalive_connections=1)
    a = FakeConnection(b"a.example")
    pool._connections = [a]  # type: ignore[list-item]
    first, second = waiting("http://a.example/1"), waiting("http://b.example/1")
    pool._requests = [first, second]
    closing = pool._assign_requests_to_connections()  # FakeConnection multiplexes (no HTTP/1.1 inside)
    assert first.connection is a
    assert closing == [] and pool._connections == [a]
    assert second.is_queued()
