"""The bugs other feed-to-social relays are known for, each as a test over real runs (the
feed server and relay's fake Mastodon on loopback, `relay run` in-process with the clock
pinned): edits reposted, the same article under a new id, a clock jump, a first run with
many feeds, a server error in the middle of a batch, a refused post blocking the queue, a
feed's URL changed, a feed renamed. (A 500 inside the SIGKILL sweep: tests/test_crash.py.)"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_mastodon import FakeMastodon
from tests.support.feeds import numbered, rss
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token"}


PACING = "  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"


def write(
    tmp_path: Path, mastodon: FakeMastodon, feeds: str, *, defaults: str = "  backfill: 5\n", pacing: str = PACING
) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"defaults:\n  every: 1m\n{defaults}"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n    token: ${{TOKEN}}\n"
        f"pacing:\n{pacing}"
        f"feeds:\n{feeds}"
    )
    return path


def posted(mastodon: FakeMastodon) -> list[str]:
    return [s["content"].split("\n")[0] for s in mastodon.statuses]


def one_item(
    title: str,
    *,
    guid: str = "a-1",
    link: str = "https://example.org/a-1",
    summary: str = "First.",
    published: datetime = NOW,
) -> bytes:
    return rss([{"title": title, "link": link, "guid": guid, "description": summary, "published": published}])


def test_an_edited_item_is_never_posted_again(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, mastodon, f"  - name: f\n    url: {feed_server.feed('/f', one_item('Original'))}\n")
    relay("run", "-c", str(config), env=ENV, now=NOW)
    edits = [
        one_item("Title corrected"),
        one_item("Title corrected", summary="A longer, corrected summary."),
        one_item("Title corrected", published=NOW + timedelta(hours=5)),
        one_item("Title corrected", published=NOW + timedelta(days=800)),  # and a date in the future
    ]
    for minutes, body in enumerate(edits, start=1):
        feed_server.feed("/f", body)
        result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=10 * minutes))
        assert result.exit_code == 0, result.output
    assert posted(mastodon) == ["Original"]


def test_a_new_id_with_the_same_link_is_skipped(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, mastodon, f"  - name: f\n    url: {feed_server.feed('/f', one_item('Once'))}\n")
    relay("run", "-c", str(config), env=ENV, now=NOW)
    # the site changed the item's id (and added a tracker to the link): one new item, below
    # the flood threshold, so only the link can tell
    feed_server.feed("/f", one_item("Once, again", guid="new-id-1", link="https://www.example.org/a-1/?utm_source=rss"))
    result = relay("run", "-c", str(config), "-v", env=ENV, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 0, result.output
    assert posted(mastodon) == ["Once"]
    preview = relay("preview", "-c", str(config), "--format", "json", env=ENV, now=NOW + timedelta(minutes=6))
    assert preview.exit_code == 0


def test_a_clock_jump_of_400_days_does_not_repost(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, mastodon, f"  - name: f\n    url: {feed_server.feed('/f', numbered(3, now=NOW))}\n")
    relay("run", "-c", str(config), env=ENV, now=NOW)
    assert len(mastodon.statuses) == 3
    for days in (400, -400, 401):  # forward, back, forward again
        result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(days=days))
        assert result.exit_code == 0, result.output
    assert sorted(posted(mastodon)) == ["item 0", "item 1", "item 2"]


def test_an_empty_state_with_30_known_feeds_posts_at_most_backfill_each_paced(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """The state folder was lost (a new machine, a wiped cache) but the 30 feeds are old
    friends with 20 items each: no flood of 600 posts."""
    feeds = "".join(
        f"  - name: feed{n}\n    url: {feed_server.feed(f'/f{n}', numbered(20, now=NOW, prefix=f'feed{n}-item'))}\n"
        for n in range(30)
    )
    config = write(
        tmp_path,
        mastodon,
        feeds,
        defaults="  backfill: 1\n",
        pacing="  max_per_run: 3\n  min_interval: 10m\n  max_per_day: 40\n",
    )
    first = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert first.exit_code == 0, first.output
    assert "warning: no state yet in " in first.output and "`backfill`" in first.output
    assert len(mastodon.statuses) == 3  # paced: max_per_run
    for run in range(1, 20):
        relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=10 * run))
    per_feed = {title.split("-item")[0] for title in posted(mastodon)}
    assert len(mastodon.statuses) == 30 and len(per_feed) == 30  # one (the newest) per feed
    assert all(title.endswith(" 19") for title in posted(mastodon))
    assert "no state yet" not in relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(hours=5)).output


def test_a_server_error_in_the_middle_of_a_batch_is_retried_exactly_once(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, mastodon, f"  - name: f\n    url: {feed_server.feed('/f', numbered(5, now=NOW))}\n")
    # the first two posts go through, the third gets a 500, the rest go through
    calls = {"n": 0}
    original = mastodon._take_fault

    def third_post_fails(path: str):  # type: ignore[no-untyped-def]
        if path == "/api/v1/statuses":
            calls["n"] += 1
            if calls["n"] == 3:
                from tests.support.fake_mastodon import Fault

                return Fault(status=500, error="Internal Server Error")
        return original(path)

    mastodon._take_fault = third_post_fails  # type: ignore[method-assign]
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "will be retried" in result.output and "500" in result.output
    assert posted(mastodon) == ["item 0", "item 1", "item 3", "item 4"]  # the batch went on
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert sorted(posted(mastodon)) == [f"item {n}" for n in range(5)]


def test_a_refused_post_does_not_hold_up_the_queue(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(
        tmp_path,
        mastodon,
        f"  - name: f\n    url: {feed_server.feed('/f', numbered(4, now=NOW))}\n",
        pacing="  max_per_run: 3\n  min_interval: 0s\n  max_per_day: 40\n",
    )
    mastodon.fault(status=422, error="Validation failed: Text character limit of 500 exceeded")
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "character limit" in result.output
    assert posted(mastodon) == ["item 1", "item 2", "item 3"]  # a full run's worth behind it


def test_a_new_url_under_the_same_name_keeps_the_history(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    body = numbered(4, now=NOW)
    config = write(tmp_path, mastodon, f"  - name: f\n    url: {feed_server.feed('/old', body)}\n")
    relay("run", "-c", str(config), env=ENV, now=NOW)
    assert len(mastodon.statuses) == 4
    # the site moved its feed (and the new address serves one more item)
    config.write_text(config.read_text().replace("/old", "/new"))
    feed_server.feed("/new", numbered(5, now=NOW + timedelta(hours=1)))
    result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 0, result.output
    assert sorted(posted(mastodon)) == [f"item {n}" for n in range(5)]  # only the new one added


@pytest.mark.parametrize("seeded", [False, True], ids=["relayed", "seeded"])
def test_a_renamed_feed_is_not_posted_as_new(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon, seeded: bool
) -> None:
    """Renaming a feed makes a new name with no history: the first-poll backfill and the
    cross-feed dedupe must keep its items from going out again, including the newest item
    when the old name had only marked it seen (relay seed)."""
    url = feed_server.feed("/f", numbered(6, now=NOW))
    config = write(tmp_path, mastodon, f"  - name: before\n    url: {url}\n", defaults="  backfill: 2\n")
    if seeded:
        relay("seed", "-c", str(config), now=NOW)
    relay("run", "-c", str(config), env=ENV, now=NOW)
    already = posted(mastodon)
    config.write_text(config.read_text().replace("name: before", "name: after"))
    result = relay("run", "-c", str(config), "-v", env=ENV, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 0, result.output
    assert posted(mastodon) == already
    feed_server.feed("/f", numbered(7, now=NOW + timedelta(hours=1)))
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=10))
    assert posted(mastodon) == [*already, "item 6"]  # what is really new still goes out


@pytest.mark.bluesky
def test_a_post_the_pds_refuses_does_not_hold_up_the_queue(tmp_path: Path, feed_server: FeedServer, pds: Any) -> None:
    """Bluesky's 400 (a record the PDS will not take) at the head of the queue: failed at
    once with its reason, and a full run's worth of the items behind it still goes out."""
    import httpx

    prefix = f"refusal{os.getpid()}"
    url = feed_server.feed("/f", numbered(3, now=NOW, prefix=prefix))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"defaults:\n  every: 1m\n  backfill: 3\naccounts:\n  sky:\n    platform: bluesky\n    handle: frank.test\n"
        f"    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
        f"pacing:\n  max_per_run: 2\n  min_interval: 0s\n  max_per_day: 40\nfeeds:\n  - name: f\n    url: {url}\n"
    )
    # a first run with a wrong password queues the three and stops at the login
    assert relay("run", "-c", str(config), env={"PASSWORD": "wrong"}, now=NOW).exit_code == 1
    # the oldest delivery's post becomes one the PDS refuses (one grapheme over its limit)
    state = Path(os.environ["RELAY_STATE_DIR"]) / "relay.db"
    with sqlite3.connect(state) as db:
        [(delivery_id, stored)] = db.execute("SELECT id, post FROM deliveries WHERE post IS NOT NULL").fetchall()
        post = json.loads(stored)
        post.update(text="é" * 301, length=301, facets=[])
        db.execute("UPDATE deliveries SET post = ? WHERE id = ?", (json.dumps(post), delivery_id))
    result = relay("run", "-c", str(config), env={"PASSWORD": "frank-pass"}, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 1 and f"delivery {delivery_id}" in result.output and "failed" in result.output
    listing = httpx.get(
        f"{pds.url}/xrpc/com.atproto.repo.listRecords",
        params={"repo": pds.account("frank.test")["did"], "collection": "app.bsky.feed.post", "limit": 100},
    ).json()["records"]
    mine = sorted(r["value"]["text"].split("\n")[0] for r in listing if r["value"]["text"].startswith(prefix))
    assert mine == [f"{prefix} 1", f"{prefix} 2"]


def test_a_held_copy_of_an_article_does_not_silence_an_allys_item(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """A flooding feed's held items include a copy of an ally's article (its link with a
    tracker and a fragment). The ally's own item is still posted; releasing the held copy
    later does not post the article twice."""
    evil, ally, config = _evil_and_ally(tmp_path, feed_server, mastodon)
    assert relay("run", "-c", str(config), env=ENV, now=NOW).exit_code == 0  # both feeds known, empty
    flood = [
        {"title": f"spam {n}", "link": f"https://evil.example/{n}", "guid": f"e{n}", "published": NOW}
        for n in range(10)
    ]
    flood.append({"title": "copy", "link": "http://www.ally.example/news-2/?utm_source=evil#x", "guid": "e-copy"})
    evil["body"] = rss(flood)
    held = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=2))
    assert "flood guard" in held.output and posted(mastodon) == []
    ally["body"] = rss([{"title": "Ally: big petition launch", "link": "https://ally.example/news-2", "guid": "a2"}])
    assert relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=4)).exit_code == 0
    assert posted(mastodon) == ["Ally: big petition launch"]
    relay("queue", "release", "evil", now=NOW + timedelta(minutes=5))
    released = relay("run", "-v", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=6))
    assert "already relayed via feed 'ally'" in released.output
    assert "copy" not in posted(mastodon) and len(posted(mastodon)) == 11  # the ten spam items, the article once


def _evil_and_ally(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon, pacing: str = PACING
) -> tuple[dict[str, bytes], dict[str, bytes], Path]:
    """Two feeds whose bodies a test changes between runs: an attacker's and an ally's."""
    evil: dict[str, bytes] = {"body": rss([])}
    ally: dict[str, bytes] = {"body": rss([])}
    feed_server.add("/evil", lambda request: _serve(evil["body"]))
    feed_server.add("/ally", lambda request: _serve(ally["body"]))
    feeds = (
        f"  - name: evil\n    url: {feed_server.url('/evil')}\n  - name: ally\n    url: {feed_server.url('/ally')}\n"
    )
    return evil, ally, write(tmp_path, mastodon, feeds, pacing=pacing)


def _serve(body: bytes) -> Any:
    from tests.support.feedserver import Response

    return Response(200, body, {"Content-Type": "application/rss+xml"})


def test_a_copy_queued_then_held_does_not_silence_an_allys_item(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """The copy is queued first (pacing keeps it waiting), the ally's item comes next, then
    the copy's feed floods over 24 hours and everything it has waiting is held: the ally's
    item is still posted, and the copy, released later, is not posted a second time."""
    evil, ally, config = _evil_and_ally(
        tmp_path, feed_server, mastodon, pacing="  max_per_run: 1\n  min_interval: 6h\n  max_per_day: 40\n"
    )
    at = NOW
    assert relay("run", "-c", str(config), env=ENV, now=at).exit_code == 0  # both feeds known, empty
    items = [
        {"title": "spam 0", "link": "https://evil.example/0", "guid": "e0", "published": NOW},
        {
            "title": "copy",
            "link": "http://www.ally.example/news-2/?utm_source=evil#x",
            "guid": "e-copy",
            "published": NOW + timedelta(minutes=1),
        },
    ]
    evil["body"] = rss(items)
    at += timedelta(minutes=2)
    relay("run", "-c", str(config), env=ENV, now=at)
    assert posted(mastodon) == ["spam 0"]  # the copy waits (min_interval 6h)
    ally["body"] = rss([{"title": "Ally: big petition launch", "link": "https://ally.example/news-2", "guid": "a2"}])
    at += timedelta(minutes=2)
    relay("run", "-c", str(config), env=ENV, now=at)
    for batch in range(3):  # ten new items a poll: the third poll passes flood_threshold_day (30)
        items += [
            {"title": f"spam {batch}-{n}", "link": f"https://evil.example/{batch}/{n}", "guid": f"e{batch}-{n}"}
            for n in range(10)
        ]
        evil["body"] = rss(items)
        at += timedelta(minutes=2)
        relay("run", "-c", str(config), env=ENV, now=at)
    queued = json.loads(relay("queue", "list", "--state", "queued", "--format", "json").output)
    assert [d["title"] for d in queued] == ["Ally: big petition launch"]
    at += timedelta(hours=6, minutes=1)
    relay("run", "-c", str(config), env=ENV, now=at)
    assert posted(mastodon) == ["spam 0", "Ally: big petition launch"]
    relay("queue", "release", "evil", now=at)
    for _ in range(3):
        at += timedelta(hours=6, minutes=1)
        relay("run", "-c", str(config), env=ENV, now=at)
    assert posted(mastodon).count("Ally: big petition launch") == 1 and "copy" not in posted(mastodon)
