"""Polling: fetch the due feeds, parse them (in worker processes, each within its time
limit), decide what is new for each account, and record it: items, their deliveries and the
feed's state, one transaction per feed."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from relay import schedule
from relay.config import Config, Feed, resolve_feed_url
from relay.dedupe import fingerprint
from relay.errors import ParseError
from relay.models import DeliveryState, Item, ParsedFeed, item_payload
from relay.store import FeedState, Store, epoch

if TYPE_CHECKING:
    import httpx

    from relay.decide import ItemDecision, Known
    from relay.fetch import FetchResult

FLOOD_WINDOW = 86400  # the flood guard's sliding day, in seconds


@dataclass
class FeedReport:
    name: str
    url: str
    status: str  # ok | not_modified | error
    error: str | None = None
    entries: int = 0
    new: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class FeedPoll:
    feed: Feed
    report: FeedReport
    fetched: FetchResult | None = None
    parsed: ParsedFeed | None = None
    body_hash: bytes | None = None
    decisions: list[ItemDecision] = field(default_factory=list)
    hold_waiting: str | None = None  # the 24-hour flood guard tripped: hold what still waits too


def poll(
    config: Config,
    store: Store | None,
    client: httpx.Client,
    now: datetime,
    *,
    feeds: Sequence[Feed],
    conditional: bool,
    all_items: bool = False,
) -> list[FeedPoll]:
    """Fetch, parse and decide for feeds. Writes nothing."""
    from relay.fetch import FetchRequest, fetch_all

    states = store.feed_states() if store else {}
    requests = []
    for feed in feeds:
        state = states.get(feed.name)
        url = resolve_feed_url(config, feed.fetch_url)
        requests.append(
            FetchRequest(
                name=feed.name,
                url=url,
                etag=state.etag if conditional and state and state.url == feed.url else None,
                last_modified=state.last_modified if conditional and state and state.url == feed.url else None,
                max_bytes=feed.max_bytes,
                timeout=feed.timeout.total_seconds(),
            )
        )
    results = fetch_all(requests, client, now=lambda: now, allow_private=config.network.allow_private)
    polls = []
    to_parse: list[FeedPoll] = []
    for feed, result in zip(feeds, results, strict=True):
        report = FeedReport(feed.name, feed.url, result.status, error=result.error)
        item = FeedPoll(feed, report, fetched=result)
        polls.append(item)
        if result.status != "ok":
            continue
        item.body_hash = hashlib.blake2b(result.body, digest_size=16).digest()
        state = states.get(feed.name)
        if conditional and state and state.body_hash == item.body_hash and state.url == feed.url:
            report.status = "not_modified"  # same bytes as last time: skip parsing
            report.entries = state.entries or 0
            continue
        to_parse.append(item)
    jobs = [
        ParseJob(p.fetched, _base_url(p.fetched.final_url or p.fetched.url, config), p.feed.timeout.total_seconds())
        for p in to_parse
        if p.fetched
    ]
    for item, parsed in zip(to_parse, _parse_many(jobs), strict=True):
        if isinstance(parsed, str):
            item.report.status = "error"
            item.report.error = parsed
            continue
        item.parsed = _without_secrets(parsed, config)
        item.report.entries = parsed.entries
        item.report.warnings.extend(parsed.warnings)
    decide_all(polls, store, states, now, all_items=all_items)
    return polls


def _base_url(url: str, config: Config) -> str:
    """The feed's address as a base for its relative links, without a user name or password,
    and without its query and fragment when they hold a secret from ${VAR}: a private feed's
    credentials must not end up in item links (and from there in posts)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    if _secret_in(parts.query + parts.fragment, config):
        parts = parts._replace(query="", fragment="")
    return urlunsplit(parts)


def _secret_in(text: str, config: Config) -> str | None:
    """The ${VAR} whose value text contains, if any."""
    return next((variable for value, variable in config.secrets if value in text), None)


def _without_secrets(parsed: ParsedFeed, config: Config) -> ParsedFeed:
    """A relative link resolved against a private feed's address (a token in its path) would
    post the token: such an item is skipped with the reason, such an image left out."""
    if not config.secrets:
        return parsed
    items = []
    for item in parsed.items:
        if item.link and (variable := _secret_in(item.link, config)):
            item = dataclasses.replace(
                item, link=None, skip_reason=f"its link would reveal ${{{variable}}} of the feed's URL"
            )
        if item.image and _secret_in(item.image, config):
            item = dataclasses.replace(item, image=None, image_alt="")
        items.append(item)
    return dataclasses.replace(parsed, items=tuple(items))


@dataclass(frozen=True)
class ParseJob:
    fetched: FetchResult
    base_url: str
    timeout: float


def _parse_one(job: ParseJob) -> ParsedFeed | str:
    from relay.parse import parse_feed

    try:
        return parse_feed(
            job.fetched.body,
            feed_name=job.fetched.name,
            url=job.base_url,
            content_type=job.fetched.content_type,
        )
    except ParseError as exc:
        return str(exc)
    except Exception as exc:
        return f"cannot parse: {type(exc).__name__}: {exc}"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parse_many(jobs: list[ParseJob]) -> list[ParsedFeed | str]:
    """Parse in worker processes, each feed within its timeout: feedparser holds the GIL and
    has no time limit of its own, and a hostile body can make it (or any parser) run for
    hours. A worker that overruns is killed, that feed is an error, the others go on."""
    import multiprocessing

    results: dict[int, ParsedFeed | str] = {}
    pending = list(range(len(jobs)))
    context = multiprocessing.get_context("fork")
    while pending:
        pool = context.Pool(min(usable_cpus(), len(pending)))
        try:
            running = {i: pool.apply_async(_parse_one, (jobs[i],)) for i in pending}
            # results are awaited in submission order, so the one awaited has started
            stuck = None
            for i in pending:
                try:
                    results[i] = running[i].get(timeout=jobs[i].timeout)
                except multiprocessing.TimeoutError:
                    stuck = i
                    break
            if stuck is not None:
                results[stuck] = (
                    f"parsing took longer than {jobs[stuck].timeout:g}s (timeout): a broken or hostile feed"
                )
                results.update({j: running[j].get() for j in pending if j not in results and running[j].ready()})
        finally:
            pool.terminate()
            pool.join()
        pending = [j for j in pending if j not in results]
    return [results[i] for i in range(len(jobs))]


def decide_all(
    polls: list[FeedPoll],
    store: Store | None,
    states: dict[str, FeedState],
    now: datetime,
    *,
    all_items: bool = False,
) -> None:
    """For each new item and each account: post, hold, or skip with a reason. What the state
    knows is loaded in bulk (one query per feed at most), then decide() decides."""
    from relay.decide import decide

    parsed = [p for p in polls if p.parsed is not None]
    feeds: list[tuple[Feed, Sequence[Item]]] = [(p.feed, p.parsed.items if p.parsed else ()) for p in parsed]
    known = _known(store, feeds, states, now, all_items=all_items)
    for feed_poll, result in zip(parsed, decide(feeds, known, now, all_items=all_items), strict=True):
        feed_poll.decisions = result.decisions
        feed_poll.report.new = len(result.decisions)
        feed_poll.hold_waiting = result.hold_waiting
        if result.flood:
            feed_poll.report.warnings.append(result.flood)


def _known(
    store: Store | None,
    feeds: list[tuple[Feed, Sequence[Item]]],
    states: dict[str, FeedState],
    now: datetime,
    *,
    all_items: bool,
) -> Known:
    from relay.decide import Known

    first_poll = frozenset(
        feed.name for feed, _ in feeds if (state := states.get(feed.name)) is None or state.last_ok_at is None
    )
    if store is None or all_items:
        return Known(first_poll=first_poll)
    canonicals = {feed.name: [fingerprint(i.canonical_url) for i in items if i.canonical_url] for feed, items in feeds}
    return Known(
        keys={
            feed.name: frozenset(store.known_keys(feed.name, [fingerprint(i.key) for i in items]))
            for feed, items in feeds
        },
        first_poll=first_poll,
        recent=store.recent_item_counts(
            [feed.name for feed, _ in feeds if feed.name not in first_poll], epoch(now) - FLOOD_WINDOW
        ),
        seen_elsewhere={
            (name, canonical): other
            for name in first_poll
            for canonical, other in store.seen_elsewhere(canonicals.get(name, []), name).items()
        },
        relayed=store.relayed(c for values in canonicals.values() for c in values),
    )


def delivery_key(account: str, feed: str, key: str) -> str:
    return hashlib.sha256(f"{account}\0{feed}\0{key}".encode()).hexdigest()[:40]


def record_poll(store: Store, config: Config, feed_poll: FeedPoll, now: datetime, *, seed: bool = False) -> None:
    """One transaction per feed: new items and their deliveries, then the feed's ETag, so a
    later 304 can never lose an item."""
    from relay.targets import record_key

    feed = feed_poll.feed
    now_s = epoch(now)
    result = feed_poll.fetched
    if feed_poll.report.status == "error":
        state = store.feed_state(feed.name)
        failures = (state.consecutive_failures if state else 0) + 1
        retry_at = epoch(result.retry_after) if result and result.retry_after else None
        due = schedule.next_due_after_failure(feed, failures, now_s, retry_at)
        # kept in the state and shown by status: no secret
        error = config.redact(feed_poll.report.error or "error")
        store.record_feed_error(feed.name, feed.url, error, now_s, due)
        return
    with store.transaction():
        for decision in feed_poll.decisions:
            item = decision.item
            item_id = store.insert_item(
                feed.name,
                decision.key_hash,
                fingerprint(item.canonical_url) if item.canonical_url else None,
                item.title,
                item.link,
                epoch(item.published) if item.published else None,
                now_s,
                # the feed's title travels with the item, so run renders what preview showed
                {**item_payload(item), "feed_title": feed_poll.parsed.title if feed_poll.parsed else ""},
            )
            if seed:
                continue
            for account, (action, _) in decision.accounts.items():
                if action not in ("post", "hold"):
                    continue
                store.insert_delivery(
                    item_id,
                    account,
                    DeliveryState.QUEUED if action == "post" else DeliveryState.HELD,
                    delivery_key(account, feed.name, item.key),
                    record_key(config.accounts[account], now),
                    now_s,
                )
        if feed_poll.hold_waiting and not seed:
            store.hold_waiting(feed.name, feed_poll.hold_waiting)
        store.save_feed_ok(
            feed.name,
            feed.url,
            now=now_s,
            next_due=schedule.next_due_after_success(feed, now_s),
            etag=result.etag if result else None,
            last_modified=result.last_modified if result else None,
            body_hash=feed_poll.body_hash,
            entries=feed_poll.parsed.entries if feed_poll.parsed else None,
        )
