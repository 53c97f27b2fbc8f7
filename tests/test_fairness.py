"""A fair queue: one feed cannot take an account's posts from the others. Deliveries go by
when relay first saw an item (not the feed's own date), in turns across feeds, each feed
within its share of the day; the flood guard also counts a sliding 24 hours. Over a
simulated day of cron runs against the feed server and the fake Mastodon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.fake_mastodon import FakeMastodon
from tests.support.feeds import rss
from tests.support.feedserver import FeedServer, Request, Response
from tests.support.relayrun import relay

START = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token"}
RUN_EVERY = timedelta(minutes=15)
RUNS_A_DAY = 96


def test_a_noisy_feed_cannot_starve_a_legitimate_one(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """The issue's attack: 10 new items a poll (one below flood_threshold), dated six days
    back so they sort first by date, next to a feed publishing one item an hour, with the
    default pacing (40 posts a day) and flood guard. Before the
    fix the noisy feed took 39 of the 40 daily posts."""
    clock = {"now": START}

    def noisy(request: Request) -> Response:
        polls = int((clock["now"] - START) / RUN_EVERY) + 1
        newest = polls * 10
        items = [
            {
                "title": f"noisy {n}",
                "link": f"https://noisy.example/{n}",
                "guid": f"noisy-{n}",
                "published": START - timedelta(days=6) + timedelta(seconds=n),
            }
            for n in range(newest - 1, max(-1, newest - 31), -1)
        ]
        return Response(200, rss(items), {"Content-Type": "application/rss+xml"})

    def legitimate(request: Request) -> Response:
        hours = int((clock["now"] - START) / timedelta(hours=1))
        items = [
            {
                "title": f"legit {n}",
                "link": f"https://legit.example/{n}",
                "guid": f"legit-{n}",
                "published": START + timedelta(hours=n),
            }
            for n in range(hours, max(-1, hours - 20), -1)
        ]
        return Response(200, rss(items), {"Content-Type": "application/rss+xml"})

    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"defaults:\n  every: 15m\naccounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n"
        "    token: ${TOKEN}\n"
        f"feeds:\n  - name: noisy\n    url: {feed_server.add('/noisy', noisy)}\n"
        f"  - name: legit\n    url: {feed_server.add('/legit', legitimate)}\n"
    )
    for run in range(RUNS_A_DAY):
        clock["now"] = START + run * RUN_EVERY
        result = relay("run", "-c", str(config), env=ENV, now=clock["now"])
        assert result.exit_code == 0, result.output
    posted = [s["content"].split("\n")[0] for s in mastodon.statuses]
    legit_published = int((clock["now"] - START) / timedelta(hours=1)) + 1
    assert [p for p in posted if p.startswith("legit")] == [f"legit {n}" for n in range(legit_published)]
    noisy_posted = [p for p in posted if p.startswith("noisy")]
    assert len(noisy_posted) <= 40 - legit_published  # default pacing: 40 posts a day
    status = json.loads(relay("status", "--format", "json").output)
    assert status["held"] and {d["feed"] for d in status["held"]} == {"noisy"}
    # what the noisy feed had queued before the 24-hour guard tripped waits with the rest
    queued = json.loads(relay("queue", "list", "--state", "queued", "--format", "json").output)
    assert not [d for d in queued if d["feed"] == "noisy"]
    clock["now"] += RUN_EVERY
    last = relay("run", "-c", str(config), env=ENV, now=clock["now"])
    assert "flood_threshold_day" in last.output and "relay queue release noisy" in last.output


def test_a_refused_post_at_the_head_of_the_queue_does_not_delay_the_others(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    items = [
        {
            "title": f"item {n}",
            "link": f"https://e.example/{n}",
            "guid": f"g{n}",
            "published": START - timedelta(hours=n),
        }
        for n in range(3)
    ]
    url = feed_server.feed("/f", rss(items))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"defaults:\n  backfill: 3\naccounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n"
        "    token: ${TOKEN}\npacing:\n  max_per_run: 2\n  min_interval: 0s\n  max_per_day: 40\n"
        f"feeds:\n  - name: f\n    url: {url}\n"
    )
    mastodon.fault(status=422, error="Validation failed: Text character limit of 500 exceeded")
    result = relay("run", "-c", str(config), env=ENV, now=START)
    assert result.exit_code == 1 and "failed: " in result.output
    # the oldest was refused; the two behind it went out in the same run (max_per_run 2)
    assert [s["content"].split("\n")[0] for s in mastodon.statuses] == ["item 1", "item 0"]
