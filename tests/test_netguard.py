"""The network policy and the total deadline, over loopback servers: content URLs reach
public addresses only (redirect hops and mapped forms included, DNS resolved once), and a
server that drips its headers or body never holds relay past the deadline."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from relay import netguard
from relay.errors import FetchError
from relay.fetch import FetchRequest, fetch_all, fetch_image, fetch_one, make_client
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay, relay_process

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


class DripServer:
    """A raw loopback server that sends a whole answer one byte every `pause` seconds,
    either from the status line on ("headers") or after prompt headers ("body"). It gives
    up after `limit` seconds, so a broken client cannot keep a test alive for ever."""

    def __init__(self, mode: str, body: bytes, content_type: str, pause: float = 0.5, limit: float = 40) -> None:
        self.mode, self.body, self.content_type, self.pause, self.limit = mode, body, content_type, pause, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.done.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            connection.recv(65536)
            if self.mode == "body":
                connection.sendall(head)
                slow = self.body
            else:
                slow = head + self.body
            ends = time.monotonic() + self.limit
            for byte in slow:
                if self.done.is_set() or time.monotonic() > ends:
                    break
                connection.sendall(bytes([byte]))
                time.sleep(self.pause)
        except OSError:
            pass
        finally:
            connection.close()

    def stop(self) -> None:
        self.done.set()
        self.listener.close()


@pytest.fixture
def drips() -> Iterator[list[DripServer]]:
    servers: list[DripServer] = []
    yield servers
    for server in servers:
        server.stop()


# the address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo around 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
        "not an address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not netguard.is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4007:80f::200e"])
def test_public_addresses_pass(address: str) -> None:
    assert netguard.is_public(address)


def test_loopback_image_is_refused_by_default_and_allowed_when_private_is_allowed(feed_server: FeedServer) -> None:
    url = feed_server.add("/img.png", lambda r: Response(200, PNG, {"Content-Type": "image/png"}))
    with pytest.raises(FetchError, match="private or local address"):
        fetch_image(url)
    assert feed_server.hits.get("/img.png", 0) == 0
    assert fetch_image(url, allow_private=True).data == PNG


def test_loopback_page_is_refused_for_content_and_allowed_for_feeds(feed_server: FeedServer) -> None:
    url = feed_server.feed("/feed", numbered(1))
    with make_client(public_only=True) as client:
        refused = fetch_one(FetchRequest("card", url), client)
    assert refused.status == "error" and refused.refused and "private or local address" in (refused.error or "")
    with make_client() as client:
        assert fetch_one(FetchRequest("feed", url), client).status == "ok"


@pytest.fixture
def loopback_counts_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only 127.0.0.1 itself passes (the test server's address); every other address, the
    mapped forms of 127.0.0.1 included, is judged by the real policy."""
    real = netguard.is_public
    monkeypatch.setattr(netguard, "is_public", lambda text: text == "127.0.0.1" or real(text))


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:{port}/secret.png"]
)
def test_every_redirect_hop_is_checked(feed_server: FeedServer, target: str) -> None:
    feed_server.add("/secret.png", lambda r: Response(200, PNG, {"Content-Type": "image/png"}))
    location = target.format(port=feed_server.port)
    start = feed_server.add("/hop", lambda r: Response(302, b"", {"Location": location}))
    with pytest.raises(FetchError, match="private or local address") as raised:
        fetch_image(start)
    assert "network blocked in tests" not in str(raised.value)  # refused before any connect
    assert "::ffff:127.0.0.1" in str(raised.value) or "169.254.169.254" in str(raised.value)
    assert feed_server.hits.get("/hop") == 1 and feed_server.hits.get("/secret.png", 0) == 0


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_at_most_five_redirects(feed_server: FeedServer) -> None:
    for n in range(6):
        feed_server.add(f"/r{n}", lambda r, n=n: Response(302, b"", {"Location": f"/r{n + 1}"}))
    feed_server.add("/r6", lambda r: Response(200, PNG, {"Content-Type": "image/png"}))
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch_image(feed_server.url("/r0"))
    assert feed_server.hits.get("/r6", 0) == 0


def test_dns_is_resolved_once_and_the_checked_address_is_the_one_connected(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebinding: the first answer is public, every later one is 127.0.0.1. relay must
    connect to the public address it checked (which the test network blocks), never ask
    again and reach the loopback server."""
    feed_server.add("/img.png", lambda r: Response(200, PNG, {"Content-Type": "image/png"}))
    answers: list[str] = []

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        address = "93.184.216.34" if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(FetchError) as raised:
        fetch_image(f"http://rebind.example:{feed_server.port}/img.png")
    assert answers == ["93.184.216.34"]
    assert "93.184.216.34" in str(raised.value)  # the connect went to the checked address
    assert feed_server.hits.get("/img.png", 0) == 0


def test_a_host_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def mixed(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    with pytest.raises(FetchError, match=r"mixed.example resolves to 10\.0\.0\.7, which is a private or local address"):
        fetch_image("http://mixed.example/img.png")


# the total deadline


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_dripping_server_cannot_hold_a_fetch(mode: str, drips: list[DripServer]) -> None:
    server = DripServer(mode, numbered(1), "application/rss+xml")
    drips.append(server)
    with make_client() as client:
        result = fetch_one(FetchRequest("slow", server.url("/feed"), timeout=2), client)
    assert result.status == "error"
    assert result.error == "timed out: no complete answer within 2s"


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_dripping_image_server_cannot_hold_an_image(mode: str, drips: list[DripServer]) -> None:
    server = DripServer(mode, PNG * 20, "image/png")
    drips.append(server)
    with pytest.raises(FetchError, match="timed out: no complete answer within 2s"):
        fetch_image(server.url("/img.png"), timeout=2, allow_private=True)


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_preview_reports_a_dripping_feed_and_goes_on(
    mode: str, tmp_path: Path, feed_server: FeedServer, drips: list[DripServer]
) -> None:
    server = DripServer(mode, numbered(2), "application/rss+xml")
    drips.append(server)
    good = feed_server.feed("/good", numbered(1))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  timeout: 2s\n"
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://mastodon.example\n    token: ${TOKEN}\n"
        f"feeds:\n  - name: slow\n    url: {server.url('/feed')}\n  - name: good\n    url: {good}\n"
    )
    process = relay_process(
        "preview", "--all", "-c", str(config), env={"RELAY_STATE_DIR": str(tmp_path / "state"), "TOKEN": "x"}
    )
    try:
        out, err = process.communicate(timeout=20)  # the failure mode: relay held by the server
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("relay preview was held by a dripping server")
    text = out + err
    assert "no complete answer within 2s" in text, text
    [line] = [x for x in text.splitlines() if "no complete answer" in x]
    assert "slow" in line
    assert "item 0" in text  # the other feed is still previewed


@pytest.mark.parametrize(
    ("service", "answer", "account"),
    [
        (
            "Mastodon API",
            b'{"id": "1"}',
            "  masto:\n    platform: mastodon\n    instance: {url}\n    token: ${{SECRET}}\n",
        ),
        (
            "Bluesky service",
            b'{"accessJwt": "x"}',
            "  sky:\n    platform: bluesky\n    handle: slow.test\n    app_password: ${{SECRET}}\n    service: {url}\n",
        ),
    ],
)
def test_run_is_not_held_by_a_dripping_api(
    tmp_path: Path, feed_server: FeedServer, drips: list[DripServer], service: str, answer: bytes, account: str
) -> None:
    server = DripServer("headers", answer, "application/json")
    drips.append(server)
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  every: 1m\n  backfill: 2\n"
        f"accounts:\n{account.format(url=server.url(''))}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n"
        f"feeds:\n  - name: f\n    url: {feed_server.feed('/f', numbered(2))}\n"
    )
    environment = {"RELAY_STATE_DIR": str(tmp_path / "state"), "SECRET": "x", "RELAY_REQUEST_TIMEOUT": "2"}
    process = relay_process("run", "-c", str(config), env=environment)
    try:
        out, err = process.communicate(timeout=30)  # the failure mode: relay held by the server
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"relay run was held by a dripping {service}")
    text = out + err
    assert "timed out: no complete answer within 2s" in text, text
    assert "Traceback" not in text
    assert server.connections == 1  # the second delivery did not wait for the same server again


# a feed's redirects: only the host the user wrote is trusted


class IntranetServer:
    """A loopback server on 127.0.0.2 (a private address even when the test counts
    127.0.0.1 as public) serving one intranet feed, counting the requests it answers."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.hits = 0
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.2:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


CONFIDENTIAL = numbered(1).replace(b"item 0", b"CONFIDENTIAL: board minutes")


@pytest.fixture
def intranet() -> Iterator[IntranetServer]:
    server = IntranetServer(CONFIDENTIAL)
    yield server
    server.stop()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket tried to connect to (through the test network guard)."""
    seen: list[Any] = []
    guarded = socket.socket.connect

    def recording(self: socket.socket, address: Any) -> Any:
        seen.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return seen


def redirecting_feed(feed_server: FeedServer, location: str) -> str:
    return feed_server.add("/feed.xml", lambda r: Response(302, b"", {"Location": location}))


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_feed_redirecting_to_the_metadata_service_is_refused_before_any_connect(
    feed_server: FeedServer, connects: list[Any]
) -> None:
    url = redirecting_feed(feed_server, "http://169.254.169.254/latest/meta-data/")
    with make_client() as client:
        result = fetch_one(FetchRequest("news", url), client)
    assert result.status == "error" and result.refused
    assert result.error == "redirected to 169.254.169.254, a private or local address; not fetched"
    assert feed_server.hits.get("/feed.xml") == 1
    assert not [a for a in connects if a[0] == "169.254.169.254"]


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_feed_redirecting_to_an_intranet_feed_is_refused(
    feed_server: FeedServer, intranet: IntranetServer, connects: list[Any]
) -> None:
    url = redirecting_feed(feed_server, intranet.url("/internal.xml"))
    with make_client() as client:
        [result] = fetch_all([FetchRequest("news", url)], client)
        # the second poll reuses the pooled connection to the feed host: still refused
        [again] = fetch_all([FetchRequest("news", url)], client)
    for outcome in (result, again):
        assert outcome.status == "error" and not outcome.body
        assert outcome.error == "redirected to 127.0.0.2, a private or local address; not fetched"
    assert intranet.hits == 0
    assert not [a for a in connects if a[0] == "127.0.0.2"]


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_feed_redirecting_to_a_host_with_a_private_address_is_refused(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def dns(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "wiki.corp.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    url = redirecting_feed(feed_server, "http://wiki.corp.example/minutes.xml")
    with make_client() as client:
        result = fetch_one(FetchRequest("news", url), client)
    assert result.error == (
        "redirected to wiki.corp.example, which resolves to 10.0.0.7, a private or local address; not fetched"
    )


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_feed_may_redirect_to_another_public_host(
    feed_server: FeedServer, intranet: IntranetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = netguard.is_public
    monkeypatch.setattr(netguard, "is_public", lambda text: text in ("127.0.0.1", "127.0.0.2") or real(text))
    url = redirecting_feed(feed_server, intranet.url("/moved.xml"))
    with make_client() as client:
        result = fetch_one(FetchRequest("news", url), client)
    assert result.status == "ok" and b"CONFIDENTIAL" in result.body


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_allow_private_lets_a_public_feed_redirect_to_the_intranet(
    feed_server: FeedServer, intranet: IntranetServer
) -> None:
    url = redirecting_feed(feed_server, intranet.url("/internal.xml"))
    with make_client() as client:
        [result] = fetch_all([FetchRequest("news", url)], client, allow_private=True)
    assert result.status == "ok" and b"CONFIDENTIAL: board minutes" in result.body
    assert result.final_url == intranet.url("/internal.xml")


def test_an_intranet_feed_may_redirect_inside_the_intranet(feed_server: FeedServer, intranet: IntranetServer) -> None:
    """Every test server is on loopback, a private address: the feed's own host is private,
    so its redirects to another private host and to another port are followed."""
    other = FeedServer().start()
    try:
        moved = other.feed("/moved.xml", numbered(2))
        feed_server.add("/port", lambda r: Response(302, b"", {"Location": moved}))
        feed_server.add("/host", lambda r: Response(302, b"", {"Location": intranet.url("/internal.xml")}))
        with make_client() as client:
            first = fetch_all([FetchRequest("port", feed_server.url("/port"))], client)
            # the second poll reuses the pooled connections: the feed host is still private
            second = fetch_all(
                [FetchRequest("port", feed_server.url("/port")), FetchRequest("host", feed_server.url("/host"))],
                client,
            )
    finally:
        other.stop()
    assert [r.status for r in first + second] == ["ok", "ok", "ok"], [r.error for r in first + second]
    assert b"item 1" in first[0].body and b"CONFIDENTIAL" in second[1].body


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_public_feed_still_follows_its_own_redirects_at_most_five(feed_server: FeedServer) -> None:
    for n in range(5):
        feed_server.add(f"/r{n}", lambda r, n=n: Response(302, b"", {"Location": f"/r{n + 1}"}))
    feed_server.feed("/r5", numbered(1))
    feed_server.add("/s0", lambda r: Response(302, b"", {"Location": "/r0"}))
    with make_client() as client:
        assert fetch_one(FetchRequest("five", feed_server.url("/r0")), client).status == "ok"
        six = fetch_one(FetchRequest("six", feed_server.url("/s0")), client)
    assert six.error == "more than 5 redirects (a redirect loop?)"


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize("allow_private", [False, True])
def test_preview_refuses_a_public_feeds_redirect_to_the_intranet_unless_allowed(
    tmp_path: Path, feed_server: FeedServer, intranet: IntranetServer, allow_private: bool
) -> None:
    """Through `relay preview`, as a user would: feeds.yaml's network.allow_private decides."""
    url = redirecting_feed(feed_server, intranet.url("/internal.xml"))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        ("network:\n  allow_private: true\n" if allow_private else "")
        + "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${T}\n"
        f"feeds:\n  - name: news\n    url: {url}\n"
    )
    result = relay("preview", "-c", str(config), "--format", "json")
    [feed] = json.loads(result.output)["feeds"]
    if allow_private:
        assert feed["status"] == "ok" and intranet.hits == 1
        assert "CONFIDENTIAL" in result.output
    else:
        assert feed["status"] == "error" and intranet.hits == 0
        assert feed["error"] == "redirected to 127.0.0.2, a private or local address; not fetched"
        assert "CONFIDENTIAL" not in result.output


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_kept_intranet_connection_does_not_serve_a_public_feeds_redirect(
    feed_server: FeedServer, intranet: IntranetServer, connects: list[Any]
) -> None:
    """The intranet feed is the user's own: its connection is opened unchecked and kept
    alive. A public feed's redirect to that host must not ride on it, unchecked."""
    url = redirecting_feed(feed_server, intranet.url("/internal.xml"))
    with make_client() as client:
        [own] = fetch_all([FetchRequest("intranet", intranet.url("/internal.xml"))], client)
        [result] = fetch_all([FetchRequest("news", url)], client)
    assert own.status == "ok" and b"CONFIDENTIAL" in own.body
    assert result.status == "error" and result.refused and not result.body
    assert result.error == "redirected to 127.0.0.2, a private or local address; not fetched"
    assert intranet.hits == 1
    assert len([a for a in connects if a[0] == "127.0.0.2"]) == 1
