"""Many feeds on one host, politely: over HTTP/2 (a local TLS server with a CA of its own)
the feeds of one host share one connection; over HTTP/1.1 a host gets at most 2 connections,
kept alive; conditional GETs still get 304; fetch_each hands results over as they come,
never starting more than it may hold; and the network guard (address policy, deadlines)
holds over HTTP/2 as it does over HTTP/1.1."""

from __future__ import annotations

import functools
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import netguard
from relay.fetch import FetchRequest, FetchResult, fetch_all, fetch_each, fetch_one, make_client
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer, Request, Response
from tests.support.h2server import TlsFeedServer
from tests.support.hostile_h2 import SilentSettingsServer
from tests.support.relayrun import relay_process

FEEDS = 50


@pytest.fixture
def h2_server() -> Iterator[TlsFeedServer]:
    server = TlsFeedServer(http2=True).start()
    yield server
    server.stop()


@pytest.fixture
def tls11_server() -> Iterator[TlsFeedServer]:
    server = TlsFeedServer(http2=False).start()
    yield server
    server.stop()


@functools.cache
def body_of(n: int) -> bytes:
    return numbered(2).replace(b"item 0", f"feed {n} item 0".encode())


def serve_feeds(server: TlsFeedServer | FeedServer) -> list[FetchRequest]:
    return [FetchRequest(f"feed{n}", server.feed(f"/feed{n}.xml", body_of(n))) for n in range(FEEDS)]


def counting_connections(server: FeedServer) -> set[Any]:
    """The client addresses (one per connection) the HTTP/1.1 test server accepts."""
    clients: set[Any] = set()
    accept = server.httpd.process_request

    def counted(request: Any, address: Any) -> None:
        clients.add(address)
        accept(request, address)

    server.httpd.process_request = counted  # type: ignore[method-assign]
    return clients


def poll_twice(
    requests: list[FetchRequest], verify: ssl.SSLContext | None
) -> tuple[list[FetchResult], list[FetchResult]]:
    """A first poll, then a conditional one with the ETags it got, on one client."""
    with make_client(verify=verify) as client:
        first = fetch_all(requests, client)
        again = [FetchRequest(r.name, r.url, etag=result.etag) for r, result in zip(requests, first, strict=True)]
        second = fetch_all(again, client)
    return first, second


def test_the_feeds_of_an_http2_host_share_one_connection(h2_server: TlsFeedServer) -> None:
    requests = serve_feeds(h2_server)
    first, second = poll_twice(requests, h2_server.client_context())
    for n, result in enumerate(first):
        assert (result.name, result.status, result.body) == (f"feed{n}", "ok", body_of(n)), result.error
        assert result.http_version == "HTTP/2"
    assert [r.status for r in second] == ["not_modified"] * FEEDS
    assert sum(h2_server.hits.values()) == 2 * FEEDS
    assert h2_server.versions == {"2"}
    # one: the first requests, racing before the connection is up, wait for it and share it
    assert len(h2_server.clients) == 1


def test_http2_is_offered_with_this_httpcore() -> None:
    """relay's thread-safe HTTP/2 connection is written against httpcore 1.0's internals;
    with another version relay falls back to HTTP/1.1. A new httpcore fails here first:
    review relay.netguard's _SerialHTTP2Connection and _Connection against it."""
    assert netguard.http2_available()


@pytest.mark.parametrize("tls", [False, True])
def test_an_http11_host_gets_at_most_two_connections_kept_alive(
    tls: bool, feed_server: FeedServer, tls11_server: TlsFeedServer
) -> None:
    server: TlsFeedServer | FeedServer = tls11_server if tls else feed_server
    clients = tls11_server.clients if tls else counting_connections(feed_server)
    requests = serve_feeds(server)
    first, second = poll_twice(requests, tls11_server.client_context() if tls else None)
    assert [r.status for r in first] == ["ok"] * FEEDS, [r.error for r in first if r.error]
    assert {r.http_version for r in first} == {"HTTP/1.1"}
    assert [r.body for r in first] == [body_of(n) for n in range(FEEDS)]
    assert [r.status for r in second] == ["not_modified"] * FEEDS
    assert sum(server.hits.values()) == 2 * FEEDS
    assert 1 <= len(clients) <= 2  # 100 requests over at most 2 connections: kept alive


def test_relay_preview_reads_the_feeds_of_an_http2_host_over_one_connection(
    h2_server: TlsFeedServer, tmp_path: Path
) -> None:
    """As a user would, in a process of its own; the server's CA is trusted the standard way,
    through SSL_CERT_FILE (as with a private CA), not by anything in relay."""
    ca = tmp_path / "ca.pem"
    h2_server.ca.cert_pem.write_to_path(str(ca))
    feeds = "".join(f"  - name: feed{n}\n    url: {h2_server.feed(f'/feed{n}.xml', body_of(n))}\n" for n in range(20))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${T}\n"
        f"feeds:\n{feeds}"
    )
    environment = {"SSL_CERT_FILE": str(ca), "T": "x", "RELAY_STATE_DIR": str(tmp_path / "state")}
    process = relay_process("preview", "-c", str(config), "--format", "json", env=environment)
    out, err = process.communicate(timeout=60)
    report = json.loads(out)
    assert [feed["status"] for feed in report["feeds"]] == ["ok"] * 20, err
    assert h2_server.versions == {"2"} and len(h2_server.clients) == 1


def test_the_servers_certificate_is_still_checked_without_the_test_ca(h2_server: TlsFeedServer) -> None:
    url = h2_server.feed("/feed.xml", numbered(1))
    with make_client() as client:
        result = fetch_one(FetchRequest("feed", url), client)
    assert result.status == "error" and "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert not h2_server.hits


def test_fetch_each_hands_every_result_over_once_and_holds_few(h2_server: TlsFeedServer) -> None:
    """A request starts only when the caller has taken an earlier result: at most `workers`
    results exist beyond those taken (the one in hand counts as taken, so its slot may already
    have gone to the next request), however slowly the caller works."""
    requests = serve_feeds(h2_server)
    workers = 4
    seen: list[int] = []
    with make_client(verify=h2_server.client_context()) as client:
        for index, result in fetch_each(requests, client, workers=workers):
            assert sum(h2_server.hits.values()) <= len(seen) + 1 + workers
            assert result.name == f"feed{index}" and result.body == body_of(index)
            seen.append(index)
    assert sorted(seen) == list(range(FEEDS))


def test_leaving_fetch_each_early_starts_nothing_more(h2_server: TlsFeedServer) -> None:
    requests = serve_feeds(h2_server)
    with make_client(verify=h2_server.client_context()) as client:
        for _index, _result in fetch_each(requests, client, workers=4):
            break
    assert sum(h2_server.hits.values()) <= 1 + 4


def test_answers_left_over_the_size_cap_do_not_stall_the_host(h2_server: TlsFeedServer) -> None:
    """Each feed is over its cap and left unread after its first kilobyte; together they are
    more than the connection's flow-control window (16 MiB). Left unreset and unacknowledged,
    they would stall the connection, and the last feeds and the good one would time out."""
    big = b"<rss>" + b"x" * 256 * 1024 + b"</rss>"
    requests = [FetchRequest(f"big{n}", h2_server.feed(f"/big{n}.xml", big), max_bytes=1000) for n in range(90)]
    requests.append(FetchRequest("good", h2_server.feed("/good.xml", body_of(1))))
    with make_client(verify=h2_server.client_context()) as client:
        results = fetch_all(requests, client)
        [again] = fetch_all([FetchRequest("good", h2_server.url("/good.xml"))], client)
    assert {r.error for r in results[:-1]} == {"body over 1,000 bytes (raise max_bytes to allow it)"}
    assert results[-1].status == "ok" and again.status == "ok"
    assert len(h2_server.clients) == 1


# the network guard over HTTP/2


@pytest.fixture
def loopback_counts_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 (the feed host) passes as public; 127.0.0.2 (the intranet) does not."""
    real = netguard.is_public
    monkeypatch.setattr(netguard, "is_public", lambda text: text == "127.0.0.1" or real(text))


@pytest.fixture
def intranet() -> Iterator[TlsFeedServer]:
    server = TlsFeedServer(http2=True, host="127.0.0.2").start()
    server.feed("/internal.xml", numbered(1).replace(b"item 0", b"CONFIDENTIAL: board minutes"))
    yield server
    server.stop()


def test_content_urls_are_refused_at_a_private_http2_host(h2_server: TlsFeedServer) -> None:
    url = h2_server.feed("/card", numbered(1))
    with make_client(public_only=True, verify=h2_server.client_context()) as client:
        result = fetch_one(FetchRequest("card", url), client)
    assert result.refused and result.error == "127.0.0.1 is a private or local address; not fetched"
    assert not h2_server.hits


def trusting_both(*servers: TlsFeedServer) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for server in servers:
        server.ca.configure_trust(context)
    return context


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_http2_feed_redirecting_to_the_intranet_is_refused(
    h2_server: TlsFeedServer, intranet: TlsFeedServer
) -> None:
    url = h2_server.add("/feed.xml", lambda r: Response(302, b"", {"Location": intranet.url("/internal.xml")}))
    with make_client(verify=trusting_both(h2_server, intranet)) as client:
        [result] = fetch_all([FetchRequest("news", url)], client)
    assert result.refused and result.error == "redirected to 127.0.0.2, a private or local address; not fetched"
    assert not intranet.hits


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.timeout(30)
def test_a_redirect_queued_on_an_intranet_connection_still_opening_is_not_sent(
    monkeypatch: pytest.MonkeyPatch, intranet: TlsFeedServer
) -> None:
    """The intranet feed's host (reached as localhost, at 127.0.0.2) is slow to resolve;
    meanwhile a public feed redirects there. Over HTTP/2 the pool queues the redirect on the
    intranet connection still being opened, unchecked: it is refused before it is sent."""
    real_resolve = netguard.resolve

    def slow_intranet_dns(host: str, port: int, timeout: float | None) -> list[tuple[Any, ...]]:
        if host == "localhost":
            time.sleep(0.5)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
        return real_resolve(host, port, timeout)

    monkeypatch.setattr(netguard, "resolve", slow_intranet_dns)
    intranet.add("/admin/delete-everything", lambda r: Response(200, b"done"))
    target = f"https://localhost:{intranet.port}/admin/delete-everything"
    public = FeedServer().start()
    try:

        def redirect(request: Request) -> Response:
            time.sleep(0.2)  # the intranet feed's connection is being opened now
            return Response(302, b"", {"Location": target})

        requests = [
            FetchRequest("intranet", f"https://localhost:{intranet.port}/internal.xml"),
            FetchRequest("news", public.add("/feed.xml", redirect)),
        ]
        with make_client(verify=intranet.client_context()) as client:
            own, result = fetch_all(requests, client)
    finally:
        public.stop()
    assert own.status == "ok" and b"CONFIDENTIAL" in own.body
    assert result.refused and "private or local address" in (result.error or ""), result.error
    assert "/admin/delete-everything" not in intranet.hits


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize("forgotten", [False, True])
def test_a_pooled_intranet_connection_does_not_serve_a_public_feeds_redirect(
    h2_server: TlsFeedServer, intranet: TlsFeedServer, forgotten: bool
) -> None:
    """The intranet feed is the user's own, so its connection is opened unchecked and kept;
    a public feed's redirect to that host must not ride on it. `forgotten`: the guard does
    not yet know where the host was last reached; the connection the request is given is
    checked before the request is sent on it, so it is not sent."""
    public = h2_server.add("/feed.xml", lambda r: Response(302, b"", {"Location": intranet.url("/internal.xml")}))
    with make_client(verify=trusting_both(h2_server, intranet)) as client:
        [own] = fetch_all([FetchRequest("intranet", intranet.url("/internal.xml"))], client)
        if forgotten:
            client._transport._backend._reached_public.clear()  # type: ignore[attr-defined]
        [result] = fetch_all([FetchRequest("news", public)], client)
    assert own.status == "ok" and b"CONFIDENTIAL" in own.body
    assert result.status == "error" and result.refused and not result.body
    assert "127.0.0.2" in (result.error or "") and "private or local address" in (result.error or "")
    assert intranet.hits["/internal.xml"] == 1


def test_a_slow_feed_ends_at_its_deadline_and_the_others_on_its_connection_are_fetched(
    h2_server: TlsFeedServer,
) -> None:
    """The slow feed's server never answers; the other feeds' first tries are held until
    their connection goes away. Only the slow feed's 1 s deadline can end it: it does, and
    the others, whose shared connection went with it, are fetched again on a new one."""
    tries: dict[str, int] = {}

    def held_once(request: Request) -> Response | None:
        tries[request.path] = tries.get(request.path, 0) + 1
        return None if tries[request.path] == 1 else Response(200, body_of(1), {"Content-Type": "application/rss+xml"})

    warm = h2_server.feed("/warm.xml", body_of(0))  # the first answer shows the host speaks HTTP/2
    slow = h2_server.add("/slow.xml", lambda r: None)
    others = [h2_server.add(f"/other{n}.xml", held_once) for n in range(5)]
    requests = [FetchRequest("warm", warm), FetchRequest("slow", slow, timeout=1)]
    requests += [FetchRequest(f"other{n}", url, timeout=30) for n, url in enumerate(others)]
    with make_client(verify=h2_server.client_context()) as client:
        results = {r.name: r for r in fetch_all(requests, client)}
    assert results["slow"].error == "timed out: no complete answer within 1s"
    for n in range(5):
        assert results[f"other{n}"].status == "ok", results[f"other{n}"].error
    assert len(h2_server.clients) <= 2


@pytest.mark.timeout(30)
def test_a_host_that_lowers_its_stream_limit_and_goes_silent_ends_at_the_deadlines() -> None:
    """Once both feeds' requests are open, the server lowers SETTINGS_MAX_CONCURRENT_STREAMS
    to 1 and answers nothing. Taking back the permit the other stream holds must not wait
    for it (that wait has no deadline, and holds the read lock the other waits for): both
    feeds end at their 2 s deadline."""
    server = SilentSettingsServer(lower_after=2).start()
    requests = [FetchRequest(f"feed{n}", server.url(f"/feed{n}.xml"), timeout=2) for n in range(2)]
    results: list[FetchResult] = []

    def run() -> None:
        with make_client(verify=server.client_context()) as client:
            results.extend(fetch_all(requests, client))

    worker = threading.Thread(target=run, daemon=True)  # a hang is left behind, not waited for
    worker.start()
    worker.join(15)
    server.stop()
    assert not worker.is_alive(), "fetch_all still running long after the feeds' deadlines"
    assert server.lowered.is_set()
    assert [r.error for r in results] == ["timed out: no complete answer within 2s"] * 2
