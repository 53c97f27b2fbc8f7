"""The decisions of the pipeline, on values: what is new, backfill, dedupe, flood guard."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from relay.config import load_config
from relay.dedupe import canonical_url
from relay.models import Item, ParsedFeed
from relay.pipeline import FeedPoll, FeedReport, decide_all, delivery_key, new_tid, record_poll
from relay.store import Store

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def config(
    tmp_path: Path,
    feeds: str = "  - name: a\n    url: https://a.example/feed\n  - name: b\n    url: https://b.example/feed\n",
):  # type: ignore[no-untyped-def]
    (tmp_path / "feeds.yaml").write_text(
        "defaults:\n  backfill: 2\n  flood_threshold: 3\naccounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n"
        f"    token: ${{T}}\n  s:\n    platform: bluesky\n    handle: x.bsky.social\n    app_password: ${{P}}\nfeeds:\n{feeds}"
    )
    return load_config(tmp_path / "feeds.yaml", environ={"T": "t", "P": "p"})


def item(feed: str, n: int, link: str | None = None) -> Item:
    url = link or f"https://{feed}.example/{n}"
    return Item(feed, f"id:{n}", url, canonical_url(url), f"{feed} {n}", "", published=NOW - timedelta(hours=n))


def polls(cfg, **items: list[Item]) -> list[FeedPoll]:  # type: ignore[no-untyped-def]
    return [
        FeedPoll(cfg.feed(name), FeedReport(name, "", "ok"), parsed=ParsedFeed(name, "", len(its), tuple(its)))
        for name, its in items.items()
    ]


def actions(poll: FeedPoll) -> dict[str, dict[str, str]]:
    return {
        d.item.title: {a: act for a, (act, _) in d.accounts.items()} if d.reason is None else {"*": "seen"}
        for d in poll.decisions
    }


def test_first_poll_backfills_only_the_newest(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    [a, _] = polls(cfg, a=[item("a", n) for n in range(5)], b=[])
    decide_all([a], None, {}, NOW)
    assert actions(a) == {
        "a 0": {"m": "post", "s": "post"},
        "a 1": {"m": "post", "s": "post"},
        "a 2": {"*": "seen"},
        "a 3": {"*": "seen"},
        "a 4": {"*": "seen"},
    }


def test_cross_feed_dedupe_in_one_poll_and_against_the_store(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store.open(tmp_path / "state")
    first = polls(cfg, a=[item("a", 0, "https://www.shared.example/x?utm_source=a")], b=[])
    decide_all(first, store, {}, NOW)
    record_poll(store, cfg, first[0], NOW)
    later = polls(cfg, a=[], b=[item("b", 0, "http://shared.example/x/")])
    decide_all(later, store, store.feed_states(), NOW)
    assert actions(later[1]) == {"b 0": {"m": "skip", "s": "skip"}}


def test_flood_guard_holds_a_known_feed_burst(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store.open(tmp_path / "state")
    seed = polls(cfg, a=[item("a", 100)], b=[])
    decide_all(seed, store, {}, NOW)
    record_poll(store, cfg, seed[0], NOW)
    burst = polls(cfg, a=[item("a", n) for n in range(4)], b=[])
    decide_all(burst, store, store.feed_states(), NOW)
    assert {act for acts in actions(burst[0]).values() for act in acts.values()} == {"hold"}
    record_poll(store, cfg, burst[0], NOW)
    assert {d.state for d in store.deliveries()} == {"held", "queued"}  # the first poll's item is queued


def test_delivery_keys_are_stable_and_tids_valid() -> None:
    assert delivery_key("m", "a", "id:1") == delivery_key("m", "a", "id:1") != delivery_key("s", "a", "id:1")
    import re

    tids = [new_tid(NOW) for _ in range(100)]
    assert all(re.fullmatch(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}", t) for t in tids)
    assert tids == sorted(tids) and len(set(tids)) == 100
