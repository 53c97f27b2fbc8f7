"""The decision stage alone: items, what the state knows, policy and time in, decisions out.
No database and no network: what the state knows is a Known value."""

from datetime import UTC, datetime, timedelta

from relay.config import Feed
from relay.decide import Known, decide
from relay.dedupe import canonical_url, fingerprint
from relay.models import DeliveryState, Item

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def feed(name: str = "a", **changes: object) -> Feed:
    values: dict[str, object] = {
        "name": name,
        "url": f"https://{name}.example/feed",
        "every": timedelta(minutes=30),
        "max_age": timedelta(days=7),
        "backfill": 2,
        "template": "news",
        "language": "fr",
        "hashtags": (),
        "to": ("m",),
    }
    values.update(changes)
    return Feed(**values)  # type: ignore[arg-type]


def item(n: int, feed_name: str = "a", *, hours_ago: int | None = None, link: str | None = None) -> Item:
    url = link or f"https://{feed_name}.example/{n}"
    published = NOW - timedelta(hours=n if hours_ago is None else hours_ago)
    return Item(feed_name, f"id:{n}", url, canonical_url(url), f"item {n}", "", published=published)


def actions(result: object) -> list[tuple[str, str | None]]:
    return [d.accounts.get("m", ("-", d.reason)) for d in result.decisions]  # type: ignore[attr-defined]


def test_a_first_poll_relays_only_the_backfill_newest() -> None:
    [result] = decide([(feed(), [item(3), item(1), item(2)])], Known(first_poll=frozenset({"a"})), NOW)
    assert [d.item.key for d in result.decisions if d.reason is None] == ["id:1", "id:2"]
    assert result.decisions[0].reason == "first poll: backfill relays only the 2 newest"


def test_known_keys_are_not_new_and_future_dates_count_as_now() -> None:
    future = Item("a", "id:9", "https://a.example/9", "a.example/9", "t", "", published=NOW + timedelta(days=3))
    known = Known(keys={"a": frozenset({fingerprint("id:1")})})
    [result] = decide([(feed(), [item(1), future])], known, NOW)
    assert [d.item.key for d in result.decisions] == ["id:9"]
    assert result.decisions[0].item.published == NOW


def test_a_copy_already_sent_elsewhere_is_skipped_a_queued_one_is_not() -> None:
    link = "https://news.example/article"
    relayed = {(fingerprint(canonical_url(link)), "m"): ("other", DeliveryState.POSTED)}
    [result] = decide([(feed(), [item(1, link=link)])], Known(relayed=relayed), NOW)
    assert actions(result) == [("skip", "already relayed via feed 'other'")]
    queued = {(fingerprint(canonical_url(link)), "m"): ("other", DeliveryState.QUEUED)}
    [result] = decide([(feed(), [item(1, link=link)])], Known(relayed=queued), NOW)
    assert actions(result)[0][0] == "post" and "also queued via feed 'other'" in str(actions(result)[0][1])


def test_the_same_article_in_two_feeds_of_one_poll_goes_out_once() -> None:
    link = "https://news.example/article"
    first, second = decide([(feed("a"), [item(1, link=link)]), (feed("b"), [item(1, "b", link=link)])], Known(), NOW)
    assert actions(first) == [("post", None)]
    assert actions(second) == [("skip", "already relayed via feed 'a'")]


def test_the_flood_guard_holds_a_burst_and_a_busy_day() -> None:
    burst = [item(n, hours_ago=1) for n in range(12)]
    [result] = decide([(feed(), burst)], Known(), NOW)
    assert {a for a, _ in actions(result)} == {"hold"}
    assert result.flood and "12 new items at once" in result.flood and result.hold_waiting is None
    [result] = decide([(feed(), [item(1, hours_ago=1)])], Known(recent={"a": 30}), NOW)
    assert actions(result)[0][0] == "hold"
    assert result.hold_waiting and "31 new items in 24 hours" in result.hold_waiting


def test_a_renamed_feed_does_not_relay_what_its_old_name_saw() -> None:
    link = "https://a.example/1"
    known = Known(first_poll=frozenset({"a"}), seen_elsewhere={("a", fingerprint(canonical_url(link))): "old"})
    [result] = decide([(feed(), [item(1, link=link)])], known, NOW)
    assert result.decisions[0].reason == "first poll: already seen via feed 'old'"


def test_all_items_ignores_every_rule() -> None:
    known = Known(keys={"a": frozenset({fingerprint("id:1")})}, first_poll=frozenset({"a"}))
    [result] = decide(
        [(feed(), [item(1), item(500)] + [item(n, hours_ago=1) for n in range(2, 20)])], known, NOW, all_items=True
    )
    assert len(result.decisions) == 20 and {a for a, _ in actions(result)} == {"post"}
