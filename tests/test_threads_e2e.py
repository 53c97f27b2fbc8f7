"""thread: N end to end (issue 10, part 6): a long item served over a loopback HTTP server is
posted by `relay run` as a thread on the reference PDS (mia; replies with root and parent
refs) and on mastodon-mock (replies with in_reply_to_id), once however many runs, and
exactly once across a SIGKILL before or after any of its posts is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import unescape
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from tests.support.feedserver import FeedServer
from tests.support.relayrun import killed_then_run, relay
from tests.support.servers import MastodonMock, Pds
from tests.test_threads import SENTENCES

NOW = datetime.now(UTC).replace(microsecond=0)
ROOT = Path(__file__).resolve().parent.parent


def long_feed(title: str, link: str, summary: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>SantéNathon</title>"
        f"<link>https://santenathon.example/</link><item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<description>{escape(summary)}</description><pubDate>{format_datetime(NOW)}</pubDate>"
        f"<guid>{escape(link)}</guid></item></channel></rss>"
    ).encode()


def served(feed_server: FeedServer, name: str) -> tuple[str, str, str]:
    """A feed of one long item, unique to the test: its URL, the item's title and summary."""
    tag = uuid.uuid4().hex[:8]
    title = f"Health Data Hub {tag} : toujours chez Microsoft"
    summary = " ".join(SENTENCES * 2)
    url = feed_server.feed(f"/{name}-{tag}.rss", long_feed(title, f"https://santenathon.example/{tag}", summary))
    return url, title, summary


def write(tmp_path: Path, account: str, feed_url: str, extra: str = "") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n"
        f"accounts:\n{account}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: santenathon\n    url: {feed_url}\n    template: news-en\n    thread: 4\n{extra}"
    )
    return path


def mia(pds: Pds) -> str:
    return f"  sky:\n    platform: bluesky\n    handle: mia.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"


def masto(mock: MastodonMock) -> str:
    # mastodon-mock counts a URL at its length, where Mastodon counts 23: 460 leaves room
    return (
        f"  masto:\n    platform: mastodon\n    instance: {mock.url}\n    token: ${{TOKEN}}\n    max_characters: 460\n"
    )


def bluesky_thread(pds: Pds, title: str) -> list[dict[str, Any]]:
    """mia's posts of the thread that starts with title, first to last: every one checked to
    answer the one before it, in the thread the first starts."""
    records = list(reversed(pds.records(pds.account("mia.test")["did"])))  # oldest first
    first = [r for r in records if r["value"]["text"].startswith(title)]
    assert len(first) == 1, [r["value"]["text"][:60] for r in first]
    root = first[0]
    thread, parent = [root], root
    while True:
        replies = [r for r in records if r["value"].get("reply", {}).get("parent", {}).get("uri") == parent["uri"]]
        if not replies:
            return thread
        assert len(replies) == 1, "a post answered twice"
        reply = replies[0]["value"]["reply"]
        assert (reply["root"]["uri"], reply["root"]["cid"]) == (root["uri"], root["cid"])
        assert reply["parent"]["cid"] == parent["cid"]
        parent = replies[0]
        thread.append(parent)


def mastodon_thread(mock: MastodonMock, token: str) -> list[dict[str, Any]]:
    statuses = list(reversed(mock.statuses(token)))  # oldest first
    roots = [s for s in statuses if s["in_reply_to_id"] is None]
    assert len(roots) == 1, [s["content"][:60] for s in roots]
    thread = [roots[0]]
    while replies := [s for s in statuses if s["in_reply_to_id"] == thread[-1]["id"]]:
        assert len(replies) == 1, "a status answered twice"
        thread.append(replies[0])
    assert len(thread) == len(statuses), "a status outside the thread"
    return thread


def words(texts: list[str]) -> str:
    return " ".join(" ".join(texts).replace("…", " ").split())


@pytest.mark.bluesky
def test_a_long_item_is_one_thread_on_bluesky_once(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    url, title, _ = served(feed_server, "bsky")
    config = write(tmp_path, mia(pds), url)
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"PASSWORD": "x"}).stdout)
    [planned] = preview["posts"]
    assert planned["action"] == "thread" and len(planned["thread"]) >= 1
    assert all(part["length"] <= part["limit"] == 300 for part in planned["thread"])
    for minutes in (0, 5):
        result = relay(
            "run", "-c", str(config), "-v", env={"PASSWORD": "mia-pass"}, now=NOW + timedelta(minutes=minutes)
        )
        assert result.exit_code == 0, result.output
    thread = bluesky_thread(pds, title)
    texts = [post["value"]["text"] for post in thread]
    assert texts == [planned["text"]] + [part["text"] for part in planned["thread"]]  # as preview showed it
    assert thread[0]["value"]["embed"]["$type"] == "app.bsky.embed.external"  # the card, on the first post
    assert all("embed" not in post["value"] for post in thread[1:])


@pytest.mark.mastodon
def test_a_long_item_is_one_thread_on_mastodon_once(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"fil{uuid.uuid4().hex[:8]}")
    url, title, _ = served(feed_server, "masto")
    config = write(tmp_path, masto(mastodon_mock), url, "    hashtags: [HealthDataHub]\n")
    [planned] = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"TOKEN": "x"}).stdout)["posts"]
    count = 1 + len(planned["thread"])
    assert planned["action"] == "thread" and count > 2
    for minutes in (0, 5):
        result = relay("run", "-c", str(config), "-v", env={"TOKEN": token}, now=NOW + timedelta(minutes=minutes))
        assert result.exit_code == 0, result.output
        if minutes == 0:
            assert f"(the first of a thread of {count} posts)" in result.output
    thread = mastodon_thread(mastodon_mock, token)
    assert len(thread) == count
    for status, text in zip(thread, [planned["text"]] + [part["text"] for part in planned["thread"]], strict=True):
        assert words([text.split("\n")[-1 if status is thread[0] else 0]]) in words([unescape(status["content"])])
    assert title in thread[0]["content"] and "HealthDataHub" in thread[0]["content"]
    assert all("HealthDataHub" not in status["content"] for status in thread[1:])
    assert all(status["visibility"] == thread[0]["visibility"] for status in thread)
    history = json.loads(relay("history", "--format", "json").output)
    assert len(history) == 1 and history[0]["remote_id"] == thread[0]["id"]  # one item, one post counted


# exactly once across a SIGKILL before or after each post of the thread (tests/support/killpoint)


@pytest.mark.bluesky
@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_any_post_of_a_bluesky_thread(
    tmp_path: Path, feed_server: FeedServer, pds: Pds, when: str, nth: int
) -> None:
    url, title, _ = served(feed_server, f"kill-{when}-{nth}")
    config = write(tmp_path, mia(pds), url)
    expected = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"PASSWORD": "x"}).stdout)
    [planned] = expected["posts"]
    killed_then_run(config, {"PASSWORD": "mia-pass"}, when, f"createRecord#{nth}")
    texts = [post["value"]["text"] for post in bluesky_thread(pds, title)]
    assert texts == [planned["text"]] + [part["text"] for part in planned["thread"]]


@pytest.mark.mastodon
@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_any_post_of_a_mastodon_thread(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, when: str, nth: int
) -> None:
    token = mastodon_mock.new_user(f"kill{uuid.uuid4().hex[:8]}")
    url, title, _ = served(feed_server, f"mkill-{when}-{nth}")
    config = write(tmp_path, masto(mastodon_mock), url)
    [planned] = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"TOKEN": "x"}).stdout)["posts"]
    killed_then_run(config, {"TOKEN": token}, when, f"/api/v1/statuses#{nth}")
    thread = mastodon_thread(mastodon_mock, token)
    assert len(thread) == 1 + len(planned["thread"]) and title in thread[0]["content"]


def test_preview_shows_each_reply_with_its_length(tmp_path: Path, feed_server: FeedServer) -> None:
    url, _, _ = served(feed_server, "preview")
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        f"feeds:\n  - name: santenathon\n    url: {url}\n    backfill: 1\n    thread: 3\n"
    )
    result = relay("preview", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert "-- [thread] santenathon: Health Data Hub" in result.output
    assert "   [reply 2/3] " in result.output and "   [reply 3/3] " in result.output
    assert "1 to post" in result.output


@pytest.mark.parametrize("value", [0, 11, "4", True, 2.5])
def test_thread_must_be_a_whole_number_from_1_to_10(tmp_path: Path, value: object) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        f"feeds:\n  - name: santenathon\n    url: https://santenathon.example/feed\n    thread: {json.dumps(value)}\n"
    )
    result = relay("check", "-c", str(path), env={"TOKEN": "x"})
    assert result.exit_code == 2
    assert "feeds[0].thread:" in result.output and "is not a whole number from 1 (no thread) to 10" in result.output


def test_check_warns_when_a_feeds_template_cannot_thread(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "  sky:\n    platform: bluesky\n    handle: sky.bsky.social\n    app_password: ${PASSWORD}\n"
        "feeds:\n  - name: santenathon\n    url: https://santenathon.example/feed\n    thread: 3\n"
    )
    result = relay("check", "-c", str(path), env={"TOKEN": "x", "PASSWORD": "y"})
    assert result.exit_code == 0, result.output
    assert "feeds[0].thread: news for bluesky (feed santenathon) does not show item.summary" in result.output
    assert "for mastodon" not in result.output


@pytest.mark.mastodon
def test_history_shows_a_thread_and_a_reply_that_failed(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"hist{uuid.uuid4().hex[:8]}")
    url, _, _ = served(feed_server, "history")
    config = write(tmp_path, masto(mastodon_mock), url)
    # a run killed before the first reply: the first post is out, the replies wait
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.killpoint",
            "before",
            "/api/v1/statuses#2",
            "--",
            "run",
            "-c",
            str(config),
        ],
        env={**os.environ, "TOKEN": token},
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    # then the instance refuses the first reply, for good
    rule = {"match": {"methods": ["POST"], "path": "/api/v1/statuses"}, "effect": {"type": "status", "status": 422}}
    mastodon_mock.fault(**rule, count=1)
    try:
        result = relay("run", "-c", str(config), env={"TOKEN": token})
    finally:
        mastodon_mock.clear_faults()
    assert result.exit_code == 1
    assert "thread reply 1 of" in result.output and "failed" in result.output
    history = relay("history").output
    assert "(thread: 1 of" in history and "reply 1 failed, it and those after it not posted" in history
    assert len(mastodon_mock.statuses(token)) == 1
    relay("run", "-c", str(config), env={"TOKEN": token}, now=NOW + timedelta(hours=2))
    assert len(mastodon_mock.statuses(token)) == 1  # a reply that failed for good is not retried
    # until the user asks: `relay queue retry ID` queues the failed replies again
    retried = relay("queue", "retry", str(json.loads(relay("history", "--format", "json").output)[0]["id"]))
    assert retried.exit_code == 0 and "thread replies queued again" in retried.output, retried.output
    assert relay("run", "-c", str(config), env={"TOKEN": token}, now=NOW + timedelta(hours=3)).exit_code == 0
    assert len(mastodon_thread(mastodon_mock, token)) == len(mastodon_mock.statuses(token)) > 2
    history = relay("history").output
    assert "failed" not in history and f"(thread: {len(mastodon_mock.statuses(token))} of" in history


def test_check_does_not_warn_when_the_accounts_limit_is_high(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "    max_characters: 5000\n"
        "feeds:\n  - name: santenathon\n    url: https://santenathon.example/feed\n    thread: 3\n"
    )
    result = relay("check", "-c", str(path), env={"TOKEN": "x"})
    assert result.exit_code == 0 and "does not show item.summary" not in result.output, result.output
