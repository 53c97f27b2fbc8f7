"""poll.Recorder: the state of feeds that brought nothing new is written a hundred at a time,
in one statement, and whatever waits is written when the recorder closes, even when the run
stops with an error; a feed with new items is recorded at once, as before. And a run of 250
feeds answering 304, through a real HTTP server, records every one of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.fetch import FetchResult
from relay.poll import FeedPoll, FeedReport, Recorder
from relay.store import Store
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def configure(tmp_path: Path, count: int, url: str = "feed.xml") -> Config:
    feeds = "".join(f"  - name: f{n}\n    url: {url}\n" for n in range(count))
    (tmp_path / "feeds.yaml").write_text(
        f"accounts:\n  masto: {{platform: mastodon, instance: 'https://m.example', token: '${{T}}'}}\nfeeds:\n{feeds}"
    )
    return load_config(tmp_path / "feeds.yaml", environ={"T": "t"})


def not_modified(config: Config, n: int) -> FeedPoll:
    feed = config.feeds[n]
    fetched = FetchResult(feed.name, feed.url, "not_modified", etag=f'"e{n}"')
    return FeedPoll(feed, FeedReport(feed.name, feed.url, "not_modified"), fetched)


def inserts(store: Store) -> list[str]:
    statements: list[str] = []
    store.db.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT INTO feeds") else None)
    return statements


def test_states_are_written_a_hundred_at_a_time_and_the_rest_at_the_end(tmp_path: Path) -> None:
    config = configure(tmp_path, 250)
    store = Store.open(tmp_path / "state")
    statements = inserts(store)
    with Recorder(store, config, NOW) as recorder:
        for n in range(250):
            recorder.record(not_modified(config, n))
            assert len(statements) == (n + 1) // 100
    assert len(statements) == 3
    states = store.feed_states()
    assert len(states) == 250
    assert states["f249"].etag == '"e249"' and states["f249"].last_ok_at == NOW.timestamp()
    assert states["f0"].next_due_at == (NOW + timedelta(minutes=15)).timestamp()


def test_what_waits_is_written_when_the_run_stops_with_an_error(tmp_path: Path) -> None:
    config = configure(tmp_path, 5)
    store = Store.open(tmp_path / "state")
    with pytest.raises(RuntimeError), Recorder(store, config, NOW) as recorder:
        for n in range(5):
            recorder.record(not_modified(config, n))
        raise RuntimeError("a bug further on")
    assert sorted(store.feed_states()) == [f"f{n}" for n in range(5)]


def test_a_run_of_feeds_answering_304_records_every_one(tmp_path: Path, feed_server: FeedServer) -> None:
    url = feed_server.feed("/feed.xml", numbered(3, now=NOW - timedelta(hours=1)))
    configure(tmp_path, 250, url)
    config_path = str(tmp_path / "feeds.yaml")
    env = {"T": "t", "RELAY_STATE_DIR": str(tmp_path / "state")}
    assert relay("seed", "-c", config_path, env=env, now=NOW).exit_code == 0
    later = NOW + timedelta(hours=1)
    result = relay("run", "-c", config_path, env=env, now=later)
    assert result.exit_code == 0, result.output
    assert feed_server.hits["/feed.xml"] == 500
    store = Store.open(tmp_path / "state")
    states = store.feed_states()
    assert len(states) == 250
    assert {state.last_polled_at for state in states.values()} == {later.timestamp()}
