"""priority: high | normal | low and urgent: true (issue 11, part 2): the outbox serves the
levels in order, in fair turns within each; an urgent feed's items skip min_interval, never
max_per_day or the posting window. End to end against mastodon-mock, and through deliver with
a scripted platform (tests/test_deliver.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.store import Store
from tests.support.feeds import numbered, rss
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock
from tests.test_deliver import NOW, Clock, ScriptedTarget, queue, run

FEEDS = """\
pacing:
  max_per_run: {max_per_run}
  min_interval: {min_interval}
  max_per_day: {max_per_day}
{window}accounts:
  m:
    platform: mastodon
    instance: https://m.example
    token: ${{M_TOKEN}}
feeds:
  - name: news
    url: https://news.example/feed
  - name: blog
    url: https://blog.example/feed
    priority: low
  - name: petition
    url: https://petition.example/feed
    priority: high
{petition}"""


def config(
    tmp_path: Path,
    *,
    max_per_run: int = 3,
    min_interval: str = "0s",
    max_per_day: int = 100,
    petition: str = "",
    window: str = "",
) -> Config:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        FEEDS.format(
            max_per_run=max_per_run,
            min_interval=min_interval,
            max_per_day=max_per_day,
            petition=petition,
            window=window,
        )
    )
    return load_config(path, environ={"M_TOKEN": "x"})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


def test_a_petition_queued_behind_20_news_items_goes_out_in_the_next_run(tmp_path: Path, store: Store) -> None:
    # the petition's feed posted twice today: fair turns alone would put the news first
    clock = Clock()
    queue(store, "petition 1", feed="petition", seen=NOW - timedelta(hours=3))
    queue(store, "petition 2", feed="petition", seen=NOW - timedelta(hours=3))
    run(config(tmp_path), store, clock, ScriptedTarget())
    clock.advance(minutes=10)
    for n in range(20):
        queue(store, f"news {n}", feed="news", seen=NOW - timedelta(hours=2, minutes=n))
    queue(store, "petition", feed="petition", seen=NOW - timedelta(minutes=1))
    target = ScriptedTarget()
    run(config(tmp_path), store, clock, target)
    assert target.published()[0] == "petition"
    assert len(target.published()) == 3


def test_levels_in_order_and_turns_within_a_level(tmp_path: Path, store: Store) -> None:
    queue(store, "blog 1", feed="blog", seen=NOW - timedelta(hours=5))
    queue(store, "news 1", feed="news", seen=NOW - timedelta(hours=4))
    queue(store, "news 2", feed="news", seen=NOW - timedelta(hours=3))
    queue(store, "petition 1", feed="petition", seen=NOW - timedelta(hours=1))
    queue(store, "petition 2", feed="petition", seen=NOW - timedelta(minutes=30))
    target = ScriptedTarget()
    run(config(tmp_path, max_per_run=10), store, Clock(), target)
    assert target.published() == ["petition 1", "petition 2", "news 1", "news 2", "blog 1"]


def test_urgent_skips_min_interval_but_not_max_per_day_or_the_window(tmp_path: Path, store: Store) -> None:
    urgent = "    urgent: true\n"
    queue(store, "news 1", feed="news", seen=NOW - timedelta(hours=2))
    clock = Clock()
    run(config(tmp_path, min_interval="1h", petition=urgent), store, clock, ScriptedTarget())  # news 1 posted
    queue(store, "news 2", feed="news", seen=NOW - timedelta(hours=1))
    queue(store, "petition", feed="petition", seen=NOW)
    clock.advance(minutes=5)
    target = ScriptedTarget()
    run(config(tmp_path, min_interval="1h", petition=urgent), store, clock, target)
    assert target.published() == ["petition"]  # news 2 waits for min_interval
    # max_per_day holds urgent items too
    queue(store, "petition 2", feed="petition", seen=NOW)
    clock.advance(minutes=5)
    target = ScriptedTarget()
    run(config(tmp_path, min_interval="1h", max_per_day=2, petition=urgent), store, clock, target)
    assert target.published() == []
    # and so does the posting window (12:10 UTC is 13:10 in Paris)
    window = '  hours: "20:00-21:00"\n  timezone: Europe/Paris\n'
    run(config(tmp_path, min_interval="1h", petition=urgent, window=window), store, clock, target)
    assert target.published() == []


def test_priority_and_urgent_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        FEEDS.format(
            max_per_run=3, min_interval="0s", max_per_day=10, window="", petition="    urgent: yes please\n"
        ).replace("priority: low", "priority: urgent")
    )
    result = relay("check", "-c", str(path), env={"M_TOKEN": "x"})
    assert result.exit_code == 2
    assert "feeds[1].priority: must be high or normal or low" in result.output
    assert "feeds[2].urgent: must be true or false" in result.output


@pytest.mark.mastodon
def test_end_to_end_the_petition_overtakes_the_news_and_preview_says_so(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"prio{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC).replace(microsecond=0)
    tag = uuid.uuid4().hex[:6]
    news = feed_server.feed(f"/news-{tag}.rss", numbered(20, now=now, prefix="actu"))
    petition_path = f"/petition-{tag}.rss"
    earlier = [
        {"title": f"Pétition {n}", "link": f"https://p.example/{n}", "guid": f"p{n}", "published": now} for n in (1, 2)
    ]
    petition = feed_server.feed(petition_path, rss(earlier))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 20\n"
        "pacing:\n  max_per_run: 3\n  min_interval: 0s\n  max_per_day: 100\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN}}\n"
        f"feeds:\n  - name: news\n    url: {news}\n  - name: petition\n    url: {petition}\n    priority: high\n"
    )
    env = {"TOKEN": token}
    assert relay("run", "-c", str(path), env=env, now=now).exit_code == 0
    # the two petitions and one news item; 19 news items wait
    assert len(mastodon_mock.statuses(token)) == 3
    item = {"title": "Signez la pétition contre l'hébergement du HDH chez Microsoft", "link": "https://p.example/hdh"}
    feed_server.feed(petition_path, rss([{**item, "guid": "hdh", "published": now}, *earlier]))
    preview = relay("preview", "-c", str(path), env=env, now=now + timedelta(minutes=5)).output
    line = next(line for line in preview.splitlines() if "Signez la pétition" in line and line.startswith("--"))
    assert "later run" not in line  # it goes before the 19 news items waiting
    assert relay("run", "-c", str(path), env=env, now=now + timedelta(minutes=5)).exit_code == 0
    first_of_the_run = mastodon_mock.statuses(token)[2]  # newest first: the run posted three
    assert "Signez la pétition" in first_of_the_run["content"]
