"""`relay preview` over a set of hostile feeds, as a real process: one error line per bad
feed, naming its limit, and the good feed still previewed. How long it takes and its peak
memory are figures of bench/preview_hostile.py."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support import feedserver as fs
from tests.support.feeds import numbered

ROOT = Path(__file__).resolve().parent.parent


def test_hostile_feeds_each_fail_alone(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    entity = "A" * 10_000
    entity_bomb = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "{entity}">]><rss version="2.0"><channel><title>t</title>'
        f"<item><title>{'&big;' * 10_000}</title><link>https://example.org/bomb</link><guid>b</guid></item></channel></rss>"
    ).encode()
    feeds = {
        "good": (feed_server.feed("/good", numbered(3)), None),
        "trickle": (feed_server.add("/trickle", fs.trickle(60)), "timed out: no complete answer within"),
        "gzipbomb": (feed_server.add("/bomb", fs.gzip_bomb()), "body over 10,000,000 bytes"),
        "forty_mb": (feed_server.add("/big", fs.big_body()), "body over 10,000,000 bytes"),
        "html": (
            feed_server.add("/html", fs.static(b"<!DOCTYPE html><html><body>Accueil</body></html>", "text/html")),
            "an HTML page, not a feed",
        ),
        "empty": (feed_server.add("/empty", fs.static(b"")), "empty body"),
        "error500": (feed_server.add("/500", fs.status(500)), "HTTP 500"),
        "loop": (feed_server.add("/loop", fs.redirect_loop("/loop")), "more than 5 redirects"),
        "notfound": (feed_server.url("/missing"), "HTTP 404"),
        "refused": ("http://127.0.0.1:9/feed", "connection refused"),
        "entities": (feed_server.add("/entities", fs.static(entity_bomb)), None),
    }
    lines = [
        "defaults:\n  timeout: 8s\n  backfill: 5\naccounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${T}\nfeeds:"
    ]
    lines += [f"  - name: {name}\n    url: {url}" for name, (url, _) in feeds.items()]
    config = tmp_path / "feeds.yaml"
    config.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "relay", "preview", "-c", str(config), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("relay: feed ")]
    for name, (_, message) in feeds.items():
        mine = [line for line in errors if line.startswith(f"relay: feed {name}: ")]
        if message is None:
            assert not mine, mine
        else:
            assert len(mine) == 1 and message in mine[0], (name, errors)
    assert "item 2" in result.stdout  # the good feed is previewed
    assert "AAAAAAAAAA" * 100 not in result.stdout  # the entity was never expanded
    assert not (tmp_path / "state").exists()


def test_a_feed_that_takes_too_long_to_parse_is_one_error_line(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    """feedparser has no time limit: a 64 KB <author> takes its e-mail regex about 15 s. The
    feed's parse is stopped at its timeout (a worker process is killed); the others go on.
    (The fast parser reads this feed at once: RELAY_PARSER=feedparser sends it to feedparser.)"""
    slow = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title><item><title>x</title>"
        f"<link>https://example.org/1</link><guid>1</guid><author>{'a' * 64_000}</author></item></channel></rss>"
    ).encode()
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  timeout: 2s\n  backfill: 5\naccounts:\n  masto:\n    platform: mastodon\n"
        "    instance: https://m.example\n    token: ${T}\nfeeds:\n"
        f"  - name: slow\n    url: {feed_server.add('/slow', fs.static(slow))}\n"
        f"  - name: good\n    url: {feed_server.feed('/good', numbered(3))}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "relay", "preview", "-c", str(config), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={**os.environ, "RELAY_PARSER": "feedparser"},
    )
    assert result.returncode == 1, result.stderr
    assert "relay: feed slow: parsing took longer than 2s (timeout)" in result.stderr
    assert "Traceback" not in result.stderr and "item 2" in result.stdout
