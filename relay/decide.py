"""Deciding (pure): for each new item of each feed and each account it goes to, post, hold
(the flood guard) or skip, with the reason. A function of the items, of what the state
already knows (`Known`, loaded in bulk beforehand), of the feeds' policy and of the time:
no database, no network, so its tests need neither."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from relay.config import Feed
from relay.dedupe import fingerprint
from relay.filters import filter_reason
from relay.models import DeliveryState, Item


@dataclass
class ItemDecision:
    item: Item
    key_hash: bytes
    reason: str | None  # set when the item is only marked seen, for every account
    accounts: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name → (post|skip|hold, reason)


@dataclass(frozen=True)
class Known:
    """What the state holds that a decision depends on."""

    keys: Mapping[str, frozenset[bytes]] = field(default_factory=dict)  # feed → item keys already seen
    first_poll: frozenset[str] = frozenset()  # feeds never polled successfully
    recent: Mapping[str, int] = field(default_factory=dict)  # feed → items queued or held in the last 24 h
    # (feed, canonical URL) → another feed that already holds the same article
    seen_elsewhere: Mapping[tuple[str, bytes], str] = field(default_factory=dict)
    # (canonical URL, account) → (feed, state) of a copy queued, being sent or posted
    relayed: Mapping[tuple[bytes, str], tuple[str, DeliveryState]] = field(default_factory=dict)


@dataclass
class FeedDecision:
    decisions: list[ItemDecision]
    flood: str | None = None  # the flood guard tripped: why, to show
    hold_waiting: str | None = None  # the 24-hour flood guard tripped: hold what still waits too


def decide(
    feeds: Sequence[tuple[Feed, Sequence[Item]]],
    known: Known,
    now: datetime,
    *,
    all_items: bool = False,
    batch: dict[tuple[bytes, str], str] | None = None,
) -> list[FeedDecision]:
    """One FeedDecision per feed, in order. all_items decides as if every item were new and
    every rule off (preview --all). batch, (canonical, account) → the feed posting it in this
    poll, is filled as feeds are decided: pass the same one to decide a poll's feeds one by one."""
    batch = {} if batch is None else batch
    results = []
    for feed, items in feeds:
        first_poll = feed.name in known.first_poll
        decisions = _new_items(feed, items, known, now, first_poll=first_poll, all_items=all_items)
        candidates = [d for d in decisions if d.reason is None]
        if first_poll and not all_items:
            candidates = _backfill(feed, candidates)
        for decision in candidates:
            canonical = fingerprint(decision.item.canonical_url) if decision.item.canonical_url else None
            for account in feed.to:
                decision.accounts[account] = (
                    ("post", None) if canonical is None or all_items else _duplicate(canonical, account, known, batch)
                )
        result = FeedDecision(decisions)
        if not (first_poll or all_items):
            _flood_guard(feed, candidates, known, result)
        for decision in candidates:  # after the flood guard: a held copy silences nothing
            if decision.item.canonical_url:
                canonical = fingerprint(decision.item.canonical_url)
                for account, (action, _) in decision.accounts.items():
                    if action == "post":
                        batch.setdefault((canonical, account), feed.name)
        results.append(result)
    return results


def _new_items(
    feed: Feed, items: Sequence[Item], known: Known, now: datetime, *, first_poll: bool, all_items: bool
) -> list[ItemDecision]:
    seen_keys = frozenset() if all_items else known.keys.get(feed.name, frozenset())
    decisions = []
    seen_links: set[str] = set()
    for item in items:
        key_hash = fingerprint(item.key)
        if key_hash in seen_keys:
            continue
        if item.published is not None and item.published > now:
            item = dataclasses.replace(item, published=now)  # a date in the future counts as now
        reason = item.skip_reason
        if reason is None and not all_items:
            reason = filter_reason(item, include=feed.include, exclude=feed.exclude, max_age=feed.max_age, now=now)
        if reason is None and item.canonical_url in seen_links and not all_items:
            reason = "same link as another item of this feed"
        if reason is None and first_poll and item.canonical_url and not all_items:
            # a renamed feed: its items are new under this name, not to relay
            other = known.seen_elsewhere.get((feed.name, fingerprint(item.canonical_url)))
            if other:
                reason = f"first poll: already seen via feed {other!r}"
        if item.canonical_url:
            seen_links.add(item.canonical_url)
        decisions.append(ItemDecision(item, key_hash, reason))
    return decisions


def _backfill(feed: Feed, candidates: list[ItemDecision]) -> list[ItemDecision]:
    """On a feed's first poll only its `backfill` newest items go out."""
    newest = sorted(
        range(len(candidates)),
        key=lambda i: (candidates[i].item.published or datetime.min.replace(tzinfo=UTC), -i),
        reverse=True,
    )[: feed.backfill]
    keep = {id(candidates[i]) for i in newest}
    for decision in candidates:
        if id(decision) not in keep:
            decision.reason = f"first poll: backfill relays only the {feed.backfill} newest"
    return [d for d in candidates if d.reason is None]


def _duplicate(
    canonical: bytes, account: str, known: Known, batch: Mapping[tuple[bytes, str], str]
) -> tuple[str, str | None]:
    """Only a copy already sent or posted makes this one a duplicate: a copy that is merely
    queued may yet be held, failed or dropped, and must not silence this one (if both wait,
    the second to go out is dropped then)."""
    other, other_state = known.relayed.get((canonical, account), (None, None))
    earlier = batch.get((canonical, account))
    if other and other_state != DeliveryState.QUEUED:
        return "skip", f"already relayed via feed {other!r}"
    if earlier:
        return "skip", f"already relayed via feed {earlier!r}"
    if other:
        return "post", f"also queued via feed {other!r}: the copy that goes out first is the one posted"
    return "post", None


def _flood_guard(feed: Feed, candidates: list[ItemDecision], known: Known, result: FeedDecision) -> None:
    relayable = [d for d in candidates if any(a == "post" for a, _ in d.accounts.values())]
    if not relayable:
        return
    in_day = known.recent.get(feed.name, 0) + len(relayable)
    steer = f"`relay queue release {feed.name}` or `relay queue drop-held {feed.name}`"
    if len(relayable) > feed.flood_threshold:
        why = f"flood guard: {len(relayable)} new items at once (flood_threshold {feed.flood_threshold}); {steer}"
    elif in_day > feed.flood_threshold_day:
        why = f"flood guard: {in_day} new items in 24 hours (flood_threshold_day {feed.flood_threshold_day}); {steer}"
        # a feed that floods over a day waits for the user as a whole: what it queued
        # before the threshold was reached must not keep taking the other feeds' posts
        result.hold_waiting = why
    else:
        return
    for decision in relayable:
        for account, (action, _) in decision.accounts.items():
            if action == "post":
                decision.accounts[account] = ("hold", why)
    result.flood = why
