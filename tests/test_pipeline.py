"""The decisions of the pipeline, on values: what is new, backfill, dedupe, flood guard; and\nthe delivery loop against a scripted target, one test per branch."""

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL.Image import DecompressionBombError

from relay.config import Pacing, load_config
from relay.dedupe import canonical_url
from relay.deliver import DeliveryReport, deliver
from relay.models import DeliveryState, Item, ParsedFeed, Post
from relay.poll import FeedPoll, FeedReport, decide_all, delivery_key, record_poll
from relay.schedule import MAX_ATTEMPTS
from relay.store import Store
from relay.targets.base import Limits, PublishError, Receipt
from relay.targets.bluesky import new_tid

NOW = datetime(2026, 11, 28, tzinfo=UTC)
POST = Post("mastodon", "m", "text https://m.example/1", 28, 500, "fr", "https://m.example/1")


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
    feeds = {feed.name: feed for feed in cfg.feeds}
    return [
        FeedPoll(feeds[name], FeedReport(name, "", "ok"), parsed=ParsedFeed(name, len(its), tuple(its)))
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
    record_poll(store, cfg, first[1], NOW)  # b is known, with nothing yet
    later = polls(cfg, a=[], b=[item("b", 0, "http://shared.example/x/")])
    decide_all(later, store, store.feed_states(), NOW)
    # a's copy only waits in the queue (it may yet be held or dropped): b's is queued too,
    # and the second to go out is dropped at delivery
    assert actions(later[1]) == {"b 0": {"m": "post", "s": "post"}}
    assert "also queued via feed 'a'" in (later[1].decisions[0].accounts["m"][1] or "")
    for delivery in store.deliveries(states=[DeliveryState.QUEUED]):
        store.mark_sending(delivery.id, NOW.timestamp(), POST)
        store.mark_posted(delivery.id, NOW.timestamp(), "1", "https://m.example/1")
    again = polls(cfg, a=[], b=[item("b", 0, "http://shared.example/x/")])
    decide_all(again, store, store.feed_states(), NOW)
    assert actions(again[1]) == {"b 0": {"m": "skip", "s": "skip"}}


def test_a_new_feed_does_not_relay_what_another_feed_already_saw(tmp_path: Path) -> None:
    """A renamed feed: its first poll must not relay items relay knows under the old name,
    even ones the old name only marked seen (relay seed)."""
    cfg = config(tmp_path)
    store = Store.open(tmp_path / "state")
    seeded = polls(cfg, a=[item("a", n) for n in range(3)])
    decide_all(seeded, store, {}, NOW, all_items=True)
    record_poll(store, cfg, seeded[0], NOW, seed=True)
    renamed = polls(cfg, b=[item("a", n) for n in range(3)] + [item("b", 9)])
    decide_all(renamed, store, store.feed_states(), NOW)
    assert actions(renamed[0]) == {
        "a 0": {"*": "seen"},
        "a 1": {"*": "seen"},
        "a 2": {"*": "seen"},
        "b 9": {"m": "post", "s": "post"},  # backfill goes to what is really new
    }
    assert "already seen via feed 'a'" in (renamed[0].decisions[0].reason or "")


def test_a_date_in_the_future_counts_as_now(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    future = Item(
        "a", "id:f", "https://a.example/f", "a.example/f", "future", "", published=datetime(2099, 1, 1, tzinfo=UTC)
    )
    [a] = polls(cfg, a=[item("a", 1), future, item("a", 2)])
    decide_all([a], None, {}, NOW)
    assert [d.item.published for d in a.decisions][1] == NOW
    # backfill 2 picks the newest by the clamped date: now, then one hour ago
    assert actions(a) == {"a 1": {"m": "post", "s": "post"}, "future": {"m": "post", "s": "post"}, "a 2": {"*": "seen"}}


def test_the_flood_guard_counts_a_sliding_day(tmp_path: Path) -> None:
    """Polls below flood_threshold, one after another, are held once the feed's relayable new
    items of the last 24 hours pass flood_threshold_day."""
    cfg = config(tmp_path)
    store = Store.open(tmp_path / "state")
    threshold_day = {feed.name: feed for feed in cfg.feeds}["a"].flood_threshold_day
    seen = 0
    outcomes = []
    for poll_number in range(30):
        when = NOW + timedelta(minutes=15 * poll_number)
        fresh = [f"https://a.example/new/{seen + n}" for n in range(3)]
        batch = polls(cfg, a=[Item("a", url, url, canonical_url(url), url, "", published=when) for url in fresh])
        seen += 3
        decide_all(batch, store, store.feed_states(), when)
        record_poll(store, cfg, batch[0], when)
        outcomes.append({act for acts in actions(batch[0]).values() for act in acts.values()})
    first_held = next(n for n, acts in enumerate(outcomes) if "hold" in acts)
    # the first poll backfills 2; then 3 a poll: held once 2 + 3n > threshold_day
    assert 2 + 3 * first_held > threshold_day >= 2 + 3 * (first_held - 1)
    assert all(acts == {"hold"} for acts in outcomes[first_held:])
    assert "flood_threshold_day" in (batch[0].report.warnings[0])


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


# delivering, against a scripted target


class ScriptedTarget:
    """Answers each publish with the next scripted outcome: a Receipt, or an exception."""

    def __init__(self, *outcomes: object, limits_error: Exception | None = None) -> None:
        self.outcomes = list(outcomes)
        self.published: list[str] = []
        self.warnings: list[str] = []
        self.limits_error = limits_error

    def limits(self) -> Limits:
        if self.limits_error:
            raise self.limits_error
        return Limits(max_characters=500)

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None) -> Receipt:
        outcome = self.outcomes.pop(0) if self.outcomes else Receipt("1", "https://m.example/1")
        if isinstance(outcome, BaseException):
            raise outcome
        self.published.append(post.text.split("\n")[0])
        assert isinstance(outcome, Receipt)
        return outcome

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        return None

    def check(self) -> str:
        return "scripted"

    def close(self) -> None:
        pass


def queued_store(tmp_path: Path, count: int = 3) -> tuple[Any, Store]:
    cfg = config(tmp_path, feeds="  - name: a\n    url: https://a.example/feed\n    to: [m]\n    backfill: 10\n")
    store = Store.open(tmp_path / "state")
    [a] = polls(cfg, a=[item("a", n) for n in range(count)])
    decide_all([a], store, {}, NOW)
    record_poll(store, cfg, a, NOW)
    return cfg, store


def run_deliver(cfg: Any, store: Store, target: ScriptedTarget) -> DeliveryReport:
    return deliver(cfg, store, {"m": target}, lambda: NOW)  # type: ignore[dict-item]


def states(store: Store) -> list[tuple[str, str, int]]:
    return [(d.title, d.state, d.attempts) for d in store.deliveries()]


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth exceeded"),
        KeyError("id"),
        ValueError("bad value\nsecond line"),
        DecompressionBombError("Image size (100020001 pixels) exceeds limit"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_error_of_a_delivery_requeues_it_and_the_others_go_on(tmp_path: Path, error: Exception) -> None:
    cfg, store = queued_store(tmp_path)
    target = ScriptedTarget(error)
    report = run_deliver(cfg, store, target)
    assert target.published == ["a 1", "a 0"]  # the one behind it went out, then the next
    first = store.deliveries()[-1]  # a 2, the oldest, went first
    assert (first.title, first.state, first.attempts) == ("a 2", "queued", 1)
    assert first.last_error == f"{type(error).__name__}: {str(error).splitlines()[0]}"
    assert first.next_attempt_at == NOW.timestamp() + 60  # backoff
    assert report.failed and [e.outcome for e in report.events] == ["retry", "posted", "posted"]


def test_an_unexpected_error_on_the_last_attempt_fails_the_delivery(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=1)
    store.db.execute("UPDATE deliveries SET attempts = ?", (MAX_ATTEMPTS - 1,))
    report = run_deliver(cfg, store, ScriptedTarget(RecursionError("deep")))
    [delivery] = store.deliveries()
    assert delivery.state == "failed" and delivery.last_error.startswith(
        f"gave up after {MAX_ATTEMPTS} attempts: RecursionError: deep; "
    )
    assert report.events[0].outcome == "failed"


def test_a_state_error_is_not_swallowed(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=1)
    with pytest.raises(sqlite3.OperationalError):
        run_deliver(cfg, store, ScriptedTarget(sqlite3.OperationalError("database or disk is full")))


def test_publish_error_branches(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=4)
    target = ScriptedTarget(
        PublishError("m.example refused the post: 422 too long", transient=False),
        PublishError("m.example answered 503", transient=True),
        PublishError("m.example refused the token", transient=False, auth=True),
    )
    report = run_deliver(cfg, store, target)
    assert states(store) == [
        ("a 0", "queued", 0),  # never tried: the account stopped at the auth error
        ("a 1", "queued", 0),  # auth: back to the queue, the attempt not counted
        ("a 2", "queued", 1),  # transient: retried later
        ("a 3", "failed", 1),  # refused: failed at once, with its reason
    ]
    assert [e.outcome for e in report.events] == ["failed", "retry"]
    assert report.account_errors == ["account m: m.example refused the token"]


def test_rate_limit_blocks_the_account_until_the_reset(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=2)
    reset = NOW + timedelta(minutes=30)
    report = run_deliver(cfg, store, ScriptedTarget(PublishError("rate limited", transient=True, retry_at=reset)))
    assert store.account_state("m").blocked_until == reset.timestamp()
    assert [e.outcome for e in report.events] == ["retry"] and "waiting until" in report.account_errors[0]
    again = run_deliver(cfg, store, ScriptedTarget())
    assert again.events == [] and "waiting until" in again.account_errors[0]


def test_a_refused_post_does_not_use_the_run_budget(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=4)
    cfg = dataclasses.replace(
        cfg, accounts={**cfg.accounts, "m": dataclasses.replace(cfg.accounts["m"], pacing=Pacing(max_per_run=2))}
    )
    target = ScriptedTarget(
        PublishError("refused: 422", transient=False), PublishError("refused: 422", transient=False)
    )
    report = run_deliver(cfg, store, target)
    assert [e.outcome for e in report.events] == ["failed", "failed", "posted", "posted"]
    assert target.published == ["a 1", "a 0"]


def test_limits_failing_in_an_unexpected_way_stops_the_account_only(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=1)
    report = run_deliver(cfg, store, ScriptedTarget(limits_error=KeyError("configuration")))
    assert report.account_errors == ["account m: cannot read its limits: KeyError: 'configuration'"]
    assert states(store) == [("a 0", "queued", 0)]


def test_an_interrupted_delivery_found_on_the_server_is_recorded(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=1)
    store.db.execute("UPDATE deliveries SET state = 'sending', attempts = 1, last_attempt_at = ?", (NOW.timestamp(),))

    class Found(ScriptedTarget):
        def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
            return Receipt("9", "https://m.example/9")

    target = Found()
    report = run_deliver(cfg, store, target)
    assert target.published == [] and states(store) == [("a 0", "posted", 1)]
    assert report.events[0].detail == "confirmed after an interrupted attempt"


def test_a_delivery_of_a_removed_feed_fails(tmp_path: Path) -> None:
    cfg, store = queued_store(tmp_path, count=1)
    cfg = dataclasses.replace(cfg, feeds=())
    report = run_deliver(cfg, store, ScriptedTarget())
    assert states(store) == [("a 0", "failed", 0)] and report.events[0].detail == "feed removed"


def test_queue_is_fair_across_feeds_and_ignores_feed_dates(tmp_path: Path) -> None:
    """Items first seen earlier go first whatever their date says; then one per feed per turn,
    the feed that posted least in the last day first."""
    store = Store.open(tmp_path / "state")
    noisy = [
        Item(
            "a",
            f"n{n}",
            f"https://a.example/n{n}",
            f"a.example/n{n}",
            f"noisy {n}",
            "",
            published=NOW - timedelta(days=6, minutes=n),
        )
        for n in range(6)
    ]
    with store.transaction():
        for seen, entry in enumerate(noisy):
            item_id = store.insert_item(
                "a",
                entry.key.encode(),
                None,
                entry.title,
                entry.link,
                entry.published.timestamp() if entry.published else None,
                NOW.timestamp() + seen // 3,
                {},
            )
            store.insert_delivery(item_id, "m", "queued", f"k{entry.key}", None, NOW.timestamp())
        for n in range(2):
            item_id = store.insert_item(
                "b", f"b{n}".encode(), None, f"legit {n}", None, NOW.timestamp() + 100, NOW.timestamp() + 1 + n, {}
            )
            store.insert_delivery(item_id, "m", "queued", f"kb{n}", None, NOW.timestamp())
    due = store.due_deliveries("m", NOW.timestamp() + 10, 100)
    # first turn: a (oldest waiting, both at 0 posts today), then b; then a, b; then a's rest
    assert [d.title for d in due] == [
        "noisy 2",
        "legit 0",
        "noisy 1",
        "legit 1",
        "noisy 0",
        "noisy 5",
        "noisy 4",
        "noisy 3",
    ]
    store.mark_sending(due[0].id, NOW.timestamp() + 5, POST)
    store.mark_posted(due[0].id, NOW.timestamp() + 5, "1", "")
    due = store.due_deliveries("m", NOW.timestamp() + 10, 100)
    assert [d.title for d in due][:3] == ["legit 0", "noisy 1", "legit 1"]  # a posted today: b goes first


def test_plan_fetches_through_the_context_s_http_client(tmp_path: Path) -> None:
    """The context carries how feeds are fetched: a plan made with another client (here an
    in-memory one) reads the feed through it, and writes nothing."""
    import httpx

    from relay.context import Context
    from relay.pipeline import plan

    body = (
        b'<rss version="2.0"><channel><title>t</title><item><title>Un article</title>'
        b"<link>https://a.example/1</link><guid>1</guid></item></channel></rss>"
    )
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, stream=httpx.ByteStream(body), headers={"Content-Type": "application/rss+xml"})

    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "feeds:\n  - name: a\n    url: https://a.example/feed\n"
    )
    config = load_config(path, environ={"TOKEN": "x"})
    context = Context(clock=lambda: NOW, http_client=lambda: httpx.Client(transport=httpx.MockTransport(answer)))
    planned = plan(config, None, context, config.feeds)
    assert asked == ["https://a.example/feed"]
    assert [(p.title, p.action) for p in planned.posts] == [("Un article", "post")]
