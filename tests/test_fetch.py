"""Every hostile server is one error line for its feed, within the deadline, with bounded
memory, while the other feeds are still fetched."""

from pathlib import Path

import pytest

from relay.fetch import FetchRequest, fetch_all, make_client
from tests.support import feedserver as fs
from tests.support.feeds import numbered


def fetch(requests: list[FetchRequest]):  # type: ignore[no-untyped-def]
    with make_client() as client:
        return fetch_all(requests, client)


def test_ok_then_not_modified(feed_server: fs.FeedServer) -> None:
    url = feed_server.feed("/feed", numbered(3))
    [first] = fetch([FetchRequest("a", url)])
    assert first.status == "ok" and first.etag and b"item 2" in first.body
    [second] = fetch([FetchRequest("a", url, etag=first.etag)])
    assert second.status == "not_modified"


def test_user_agent_names_relay(feed_server: fs.FeedServer) -> None:
    seen = {}

    def handler(request: fs.Request) -> fs.Response:
        seen.update(request.headers)
        return fs.Response(200, numbered(1))

    fetch([FetchRequest("a", feed_server.add("/ua", handler))])
    assert seen["user-agent"].startswith("relay/")


def test_gzip_body_is_decompressed(feed_server: fs.FeedServer) -> None:
    body = numbered(2)
    [result] = fetch([FetchRequest("a", feed_server.add("/gz", fs.gzipped(body)))])
    assert result.status == "ok" and result.body == body


def test_hostile_servers_fail_alone(feed_server: fs.FeedServer) -> None:
    good = feed_server.feed("/good", numbered(5))
    hostile = {
        "trickle": (feed_server.add("/trickle", fs.trickle(60)), "timed out: no complete answer within 5s"),
        "bomb": (feed_server.add("/bomb", fs.gzip_bomb()), "body over 10,000,000 bytes"),
        "big": (feed_server.add("/big", fs.big_body()), "body over 10,000,000 bytes"),
        "error500": (feed_server.add("/500", fs.status(500)), "HTTP 500"),
        "notfound": (feed_server.url("/missing"), "HTTP 404"),
        "loop": (feed_server.add("/loop", fs.redirect_loop("/loop")), "redirect"),
        "empty": (feed_server.add("/empty", fs.static(b"")), "empty body"),
        "refused": ("http://127.0.0.1:9/feed", "connection refused"),
    }
    requests = [FetchRequest("good", good, timeout=5)] + [
        FetchRequest(name, url, timeout=5) for name, (url, _) in hostile.items()
    ]
    results = {r.name: r for r in fetch(requests)}
    assert results["good"].status == "ok"
    for name, (_, message) in hostile.items():
        assert results[name].status == "error", name
        assert message in (results[name].error or ""), (name, results[name].error)
        assert "\n" not in (results[name].error or "")


def test_bombs_and_big_bodies_are_refused(feed_server: fs.FeedServer) -> None:
    requests = [FetchRequest(f"bomb{n}", feed_server.add(f"/bomb{n}", fs.gzip_bomb()), timeout=10) for n in range(3)]
    requests += [FetchRequest(f"big{n}", feed_server.add(f"/big{n}", fs.big_body()), timeout=10) for n in range(3)]
    results = fetch(requests)
    assert all(r.status == "error" for r in results)


def test_retry_after_is_kept(feed_server: fs.FeedServer) -> None:
    url = feed_server.add("/busy", fs.status(429, {"Retry-After": "3600"}))
    [result] = fetch([FetchRequest("a", url)])
    assert result.status == "error" and result.retry_after is not None


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(numbered(1))
    [ok, missing] = fetch([FetchRequest("a", path.as_uri()), FetchRequest("b", (tmp_path / "nope.xml").as_uri())])
    assert ok.status == "ok"
    assert missing.status == "error" and "no such file" in (missing.error or "")


@pytest.mark.parametrize("cap", [1024, 5000])
def test_file_over_cap(tmp_path: Path, cap: int) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(numbered(100))
    [result] = fetch([FetchRequest("a", path.as_uri(), max_bytes=cap)])
    assert result.status == "error" and "body over" in (result.error or "")
