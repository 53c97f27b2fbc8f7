"""The flow: poll → decide → (record | show) → deliver, one function per command: `run_once`
(relay run), `plan` (relay preview) and `seed` (relay seed). A dry run and a preview take the
same path as a real run and skip only the writes and the sends; cli only prints reports."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from relay import schedule
from relay.config import Account, Config, Feed, resolve_feed_url
from relay.context import Context
from relay.dedupe import fingerprint
from relay.errors import ParseError, RenderError
from relay.models import DeliveryState, Item, ParsedFeed
from relay.store import Delivery, FeedState, Store, epoch
from relay.text import find_urls

# The network, parsing, templates and platforms are imported where they are used: a cron
# run with nothing due (most runs) must not pay for httpx, feedparser, jinja2 or the SDKs.
if TYPE_CHECKING:
    import httpx

    from relay.decide import ItemDecision, Known
    from relay.fetch import FetchResult
    from relay.render import Limits, Post
    from relay.targets.base import PublishError, Target

FLOOD_WINDOW = 86400  # the flood guard's sliding day, in seconds
IN_DOUBT_RESEND_WINDOW = 55 * 60  # Mastodon keeps idempotency keys one hour


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


def item_payload(item: Item) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    data["published"] = item.published.isoformat() if item.published else None
    data["tags"] = list(item.tags)
    return data


def item_from_payload(payload: str) -> Item:
    data = json.loads(payload)
    data["published"] = datetime.fromisoformat(data["published"]) if data["published"] else None
    data["tags"] = tuple(data["tags"])
    data.pop("feed_title", None)
    return Item(**data)


def post_language(item: Item, feed: Feed) -> tuple[str, str]:
    """A post's language and where it came from: the item's own (item), else the feed's
    language: in feeds.yaml when written for that feed (feed), else the one the channel
    declares (channel), else defaults.language (default). One rule for preview and run."""
    if item.language:
        return item.language, "item"
    if feed.language_set:
        return feed.language, "feed"
    if item.channel_language:
        return item.channel_language, "channel"
    return feed.language, "default"


class Renderer:
    """Templates compiled once per run; one render per item and account."""

    def __init__(self, config: Config) -> None:
        from relay.render import make_environment

        self.config = config
        self.env = make_environment(config.template_dirs)

    def render(self, item: Item, feed: Feed, account: Account, limits: Limits, feed_title: str = "") -> Post:
        from relay.render import FeedInfo, find_template, render_post

        template = find_template(self.env, feed.template, account.platform)
        return render_post(
            template,
            item,
            FeedInfo(feed.name, feed_title or feed.name, feed.url),
            platform=account.platform,
            account=account.name,
            hashtags=feed.hashtags,
            language=post_language(item, feed)[0],
            limits=limits,
            spoiler_text=feed.content_warning,
            sensitive=feed.sensitive,
            images=feed.images,
            visibility=feed.visibility,
        )


class Outcome(StrEnum):
    POSTED = "posted"
    RETRY = "retry"  # back to the queue, tried again later
    FAILED = "failed"  # for good, with its reason
    DROPPED = "dropped"  # never to be posted (a copy already went out)


class Next(Enum):
    """What the account does after one delivery."""

    GO_ON = "go on"
    STOP = "stop"  # credentials refused or rate limited: none of its deliveries this run


@dataclass
class DeliveryEvent:
    account: str
    delivery_id: int
    feed: str
    title: str
    outcome: Outcome
    detail: str = ""
    url: str = ""
    sent: bool = False  # the attempt reached (or may have reached) the server: it uses the budget


@dataclass
class DeliveryReport:
    events: list[DeliveryEvent] = field(default_factory=list)
    account_errors: list[str] = field(default_factory=list)
    pacing: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.account_errors) or any(e.outcome in (Outcome.FAILED, Outcome.RETRY) for e in self.events)


@dataclass
class _Attempt:
    """One delivery being attempted: where its events go."""

    store: Store
    delivery: Delivery
    account: Account
    report: DeliveryReport

    def event(self, outcome: Outcome, detail: str = "", url: str = "", *, sent: bool = False) -> None:
        d = self.delivery
        self.report.events.append(DeliveryEvent(self.account.name, d.id, d.feed, d.title, outcome, detail, url, sent))

    def stop(self, line: str) -> Next:
        self.report.account_errors.append(f"account {self.account.name}: {line}")
        return Next.STOP


def deliver(
    config: Config,
    store: Store,
    targets: dict[str, Target],
    clock: Callable[[], datetime],
    *,
    renderer: Renderer | None = None,
) -> DeliveryReport:
    """Send what the outbox holds, oldest first, within each account's pacing."""
    renderer = renderer or Renderer(config)
    report = DeliveryReport()
    feeds = {feed.name: feed for feed in config.feeds}
    for name in sorted(targets):
        _deliver_account(store, targets[name], renderer, config.accounts[name], feeds, clock, report)
    return report


def _deliver_account(
    store: Store,
    target: Target,
    renderer: Renderer,
    account: Account,
    feeds: dict[str, Feed],
    clock: Callable[[], datetime],
    report: DeliveryReport,
) -> None:
    name = account.name
    now = clock()
    known = store.account_state(name)
    if known.blocked_until and known.blocked_until > epoch(now):
        until = datetime.fromtimestamp(known.blocked_until, tz=UTC)
        report.account_errors.append(
            f"account {name}: waiting until {until:%Y-%m-%d %H:%M:%S} UTC ({known.last_error})"
        )
        return
    budget, why, posted_last_day = _budget(store, account, now)
    left_today = account.pacing.max_per_day - posted_last_day
    # deliveries that fail before any send (render errors) do not use the budget
    due = store.due_deliveries(name, epoch(now), budget + 100) if budget else []
    if why:
        report.pacing[name] = why
    if not due:
        return
    limits: Limits | None = None  # read when the first delivery needs them
    # a feed the flood guard holds uses no share of the day until it is released
    held = store.held_feeds(name, epoch(now) - 86400)
    posts_today = {f: n for f, n in store.feed_activity(name, epoch(now) - 86400).items() if f not in held}
    sent = 0
    for delivery in due:
        if sent >= budget:
            break
        if delivery.state == DeliveryState.QUEUED and schedule.over_day_share(
            delivery.feed, posts_today, max_per_day=account.pacing.max_per_day, left_today=left_today
        ):
            report.pacing[name] = f"feed {delivery.feed} has had its share of max_per_day; others go first"
            continue
        attempt = _Attempt(store, delivery, account, report)
        before = len(report.events)
        feed = feeds.get(delivery.feed)
        if feed is None:
            store.mark_failed(delivery.id, f"feed {delivery.feed!r} is no longer in the configuration")
            attempt.event(Outcome.FAILED, "feed removed")
            continue
        if limits is None:
            limits = _limits(target, account, report)
            if limits is None:
                break
        try:
            step = _deliver_one(attempt, target, renderer, feed, limits, clock)
        except sqlite3.Error:
            raise  # the state itself failed: the command ends with a state error
        except Exception as exc:
            # any error of any type (an SDK's RecursionError, an image library's bomb
            # guard…) ends this delivery's attempt only; the others go on
            _requeue_after_error(attempt, clock, one_line(exc))
            step = Next.GO_ON
        if step is Next.STOP:
            break
        # a send that reached the server uses the budget; a render failure or a post the
        # server refused at once does not delay the items behind it
        if any(e.sent for e in report.events[before:]):
            sent += 1
        if any(e.outcome == Outcome.POSTED for e in report.events[before:]):
            posts_today[delivery.feed] = posts_today.get(delivery.feed, 0) + 1
            left_today -= 1


def _limits(target: Target, account: Account, report: DeliveryReport) -> Limits | None:
    from relay.targets.base import PublishError

    try:
        return target.limits()
    except PublishError as exc:
        report.account_errors.append(f"account {account.name}: {exc}")
    except sqlite3.Error:
        raise
    except Exception as exc:
        report.account_errors.append(f"account {account.name}: cannot read its limits: {one_line(exc)}")
    return None


def one_line(exc: BaseException) -> str:
    """`TypeName: first line of the message`, for an error nobody anticipated."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _requeue_after_error(attempt: _Attempt, clock: Callable[[], datetime], reason: str) -> None:
    """Back to the queue with backoff, counting an attempt, or failed after the last one."""
    store, delivery = attempt.store, attempt.delivery
    current = store.delivery(delivery.id) or delivery
    attempts = max(current.attempts, delivery.attempts + 1)
    now = epoch(clock())
    # the error came after the delivery was marked sending: the send may have started
    sending = current.state == DeliveryState.SENDING
    # without a record key to read back, nobody knows whether the post landed
    doubt = current.last_attempt_at if sending and current.rkey is None else None
    if attempts >= schedule.MAX_ATTEMPTS:
        detail = f"gave up after {attempts} attempts: {reason}" + (
            _MAY_HAVE_POSTED.format(id=delivery.id) if doubt else ""
        )
        store.mark_failed(delivery.id, detail)
        attempt.event(Outcome.FAILED, detail)
        return
    store.requeue(
        delivery.id, now + schedule.delivery_backoff(attempts).total_seconds(), reason, attempts, doubt_since=doubt
    )
    attempt.event(Outcome.RETRY, reason, sent=sending)


_MAY_HAVE_POSTED = "; the last attempt may have posted: check the account before `relay queue retry {id}`"


def _deliver_one(
    attempt: _Attempt,
    target: Target,
    renderer: Renderer,
    feed: Feed,
    limits: Limits,
    clock: Callable[[], datetime],
) -> Next:
    """One delivery: settle an earlier attempt's doubt, drop a duplicate, render (or reuse
    what an earlier attempt rendered), send."""
    from relay.render import Post
    from relay.targets.base import PublishError

    store, delivery = attempt.store, attempt.delivery
    settled = _settle_doubt(attempt, target, clock())
    if settled is not None:
        return settled
    if delivery.state == DeliveryState.QUEUED and (other := store.posted_duplicate(delivery.id)):
        store.mark_dropped(delivery.id, f"already relayed via feed {other!r}")
        attempt.event(Outcome.DROPPED, f"already relayed via feed {other!r}")
        return Next.GO_ON
    if delivery.post:
        post = Post.from_json(json.loads(delivery.post))
    else:
        try:
            feed_title = str(json.loads(delivery.payload).get("feed_title") or "")
            post = renderer.render(item_from_payload(delivery.payload), feed, attempt.account, limits, feed_title)
        except RenderError as exc:
            store.mark_failed(delivery.id, f"render: {exc}")
            attempt.event(Outcome.FAILED, f"render: {exc}")
            return Next.GO_ON
    store.mark_sending(delivery.id, epoch(clock()), json.dumps(post.to_json(), ensure_ascii=False))
    try:
        receipt = target.publish(post, idempotency_key=delivery.idempotency_key, rkey=delivery.rkey)
    except PublishError as exc:
        return _publish_failed(attempt, exc, clock())
    store.mark_posted(delivery.id, epoch(clock()), receipt.remote_id, receipt.url)
    attempt.event(Outcome.POSTED, url=receipt.url, sent=True)
    return Next.GO_ON


def _settle_doubt(attempt: _Attempt, target: Target, now: datetime) -> Next | None:
    """A delivery an earlier run left 'sending' (interrupted) or in doubt: posted if the
    platform shows the post, failed when a resend could post twice; None to go on and send."""
    from relay.targets.base import PublishError

    store, delivery = attempt.store, attempt.delivery
    if delivery.state == DeliveryState.SENDING:
        # an earlier run was interrupted during this delivery: did the post land?
        try:
            found = target.find(idempotency_key=delivery.idempotency_key, rkey=delivery.rkey)
        except PublishError as exc:
            if exc.auth:
                return attempt.stop(str(exc))  # still 'sending': asked again next run
            found = None
        if found is not None:
            store.mark_posted(delivery.id, epoch(now), found.remote_id, found.url)
            attempt.event(Outcome.POSTED, "confirmed after an interrupted attempt", found.url)
            return Next.GO_ON
    interrupted = delivery.last_attempt_at if delivery.state == DeliveryState.SENDING else None
    doubts = [t for t in (delivery.doubt_since, interrupted) if t]
    if delivery.rkey is None and doubts and epoch(now) - min(doubts) > IN_DOUBT_RESEND_WINDOW:
        # the server honours the idempotency key for an hour: a resend now could post twice
        store.mark_failed(
            delivery.id,
            "an attempt more than an hour ago got no answer: it may have been posted;"
            f" check the account, then `relay queue retry {delivery.id}` if it was not",
        )
        attempt.event(Outcome.FAILED, "an earlier attempt may have posted and is too old to resend safely")
        return Next.GO_ON
    return None


def _publish_failed(attempt: _Attempt, exc: PublishError, now: datetime) -> Next:
    store, delivery = attempt.store, attempt.delivery
    if exc.auth:
        store.mark_retry(delivery.id, epoch(now), str(exc), count_attempt=False)
        return attempt.stop(str(exc))
    if not exc.transient:
        store.mark_failed(delivery.id, str(exc))
        attempt.event(Outcome.FAILED, str(exc))
        return Next.GO_ON
    attempts = delivery.attempts + 1
    doubt = epoch(now) if exc.maybe_sent and delivery.rkey is None else None
    if attempts >= schedule.MAX_ATTEMPTS:
        detail = f"gave up after {attempts} attempts: {exc}" + (
            _MAY_HAVE_POSTED.format(id=delivery.id) if doubt else ""
        )
        store.mark_failed(delivery.id, detail)
        attempt.event(Outcome.FAILED, detail)
    else:
        retry_at = (
            epoch(exc.retry_at) if exc.retry_at else epoch(now) + schedule.delivery_backoff(attempts).total_seconds()
        )
        store.mark_retry(delivery.id, retry_at, str(exc), doubt_since=doubt)
        attempt.event(Outcome.RETRY, str(exc), sent=True)
    if exc.retry_at:
        # rate limited (or stalled): the whole account waits, even when this delivery has
        # had its last attempt, so its next delivery is not sent into the same wall
        until = epoch(exc.retry_at)
        store.update_account(attempt.account.name, blocked_until=until, last_error=str(exc))
        return attempt.stop(f"{exc}; waiting until {datetime.fromtimestamp(until, tz=UTC):%Y-%m-%d %H:%M:%S} UTC")
    return Next.GO_ON


@dataclass
class RunReport:
    """What one `relay run` did: the feeds it polled, the accounts it could not start, and
    what delivering did."""

    first_run: bool  # no state before: each feed relays at most its backfill
    polled: list[FeedReport] = field(default_factory=list)
    start_errors: list[str] = field(default_factory=list)  # "account X: cannot start: ..."
    target_warnings: list[str] = field(default_factory=list)
    delivery: DeliveryReport | None = None

    @property
    def failed(self) -> bool:
        return (
            any(f.status == "error" for f in self.polled)
            or bool(self.start_errors)
            or (self.delivery is not None and self.delivery.failed)
        )


def run_once(config: Config, store: Store, context: Context, feeds: Sequence[Feed]) -> RunReport:
    """One cron pass: poll the feeds that are due, record what is new, deliver within pacing."""
    now = context.clock()
    states = store.feed_states()
    report = RunReport(first_run=not states and bool(feeds))
    due = [f for f in feeds if schedule.is_due(states.get(f.name), epoch(now))]
    if due:
        from relay.fetch import make_client

        with make_client() as client:
            polls = poll(config, store, client, now, feeds=due, conditional=True)
        for feed_poll in polls:
            record_poll(store, config, feed_poll, now)
            report.polled.append(feed_poll.report)
    if not store.has_due_deliveries(epoch(now)):
        return report
    from relay.targets import make_target

    targets = {}
    for name, account in config.accounts.items():
        try:
            targets[name] = make_target(account, store, context)
        except sqlite3.Error:
            raise
        except Exception as exc:  # an SDK refusing its settings stops that account only
            report.start_errors.append(f"account {name}: cannot start: {one_line(exc)}")
    try:
        report.delivery = deliver(config, store, targets, context.clock)
    finally:
        for target in targets.values():
            target.close()
    report.target_warnings = [warning for target in targets.values() for warning in target.warnings]
    return report


def seed(config: Config, store: Store, context: Context, feeds: Sequence[Feed]) -> list[FeedReport]:
    """Mark everything the feeds hold now as seen, without queueing anything."""
    from relay.fetch import make_client

    now = context.clock()
    with make_client() as client:
        polls = poll(config, store, client, now, feeds=feeds, conditional=False, all_items=True)
    for feed_poll in polls:
        record_poll(store, config, feed_poll, now, seed=True)
    return [feed_poll.report for feed_poll in polls]


@dataclass(frozen=True)
class PlannedPost:
    """One line of a preview: what the next run would do with one item for one account."""

    feed: str
    key: str
    title: str
    link: str | None
    account: str
    platform: str
    text: str | None
    length: int | None
    limit: int | None
    facets: list[dict[str, Any]]
    embed: dict[str, Any] | None
    language: str
    language_source: str
    action: str  # post | hold | skip
    reason: str | None
    spoiler_text: str | None = None


@dataclass
class Plan:
    feeds: list[FeedReport]
    posts: list[PlannedPost]


def plan(
    config: Config, store: Store | None, context: Context, feeds: Sequence[Feed], *, all_items: bool = False
) -> Plan:
    """What the next run would post, per account, rendered as it would be sent; writes
    nothing and contacts no account. all_items renders every entry as if new."""
    from relay.fetch import make_client

    now = context.clock()
    with make_client() as client:
        polls = poll(config, store, client, now, feeds=feeds, conditional=False, all_items=all_items)
    renderer = Renderer(config)
    budgets = {
        name: 10**9 if all_items else _budget(store, account, now)[0] - (store.waiting_count(name) if store else 0)
        for name, account in config.accounts.items()
    }
    posts = []
    for feed_poll in polls:
        for decision in feed_poll.decisions:
            for post in _planned(config, store, renderer, feed_poll, decision, all_items=all_items):
                if post.action == "post":
                    budgets[post.account] -= 1
                    if budgets[post.account] < 0:
                        post = dataclasses.replace(post, reason="queued now, posted in a later run (pacing)")
                posts.append(post)
    return Plan([feed_poll.report for feed_poll in polls], posts)


def _planned(
    config: Config,
    store: Store | None,
    renderer: Renderer,
    feed_poll: FeedPoll,
    decision: ItemDecision,
    *,
    all_items: bool,
) -> list[PlannedPost]:
    from relay.targets import known_limits

    item, feed = decision.item, feed_poll.feed
    feed_title = feed_poll.parsed.title if feed_poll.parsed else ""
    language, language_source = post_language(item, feed)
    targets = decision.accounts if decision.reason is None else {a: ("skip", decision.reason) for a in feed.to}
    planned = []
    for name, (action, reason) in targets.items():
        account = config.accounts[name]
        post = PlannedPost(
            feed=feed.name,
            key=item.key,
            title=item.title,
            link=item.link,
            account=name,
            platform=account.platform,
            text=None,
            length=None,
            limit=None,
            facets=[],
            embed=None,
            language=language,
            language_source=language_source,
            action=action,
            reason=reason,
        )
        if action != "skip" or all_items:
            try:
                rendered = renderer.render(item, feed, account, known_limits(account, store), feed_title)
            except RenderError as exc:
                post = dataclasses.replace(post, action="skip", reason=f"render: {exc}")
            else:
                post = dataclasses.replace(
                    post,
                    text=rendered.text,
                    length=rendered.length,
                    limit=rendered.limit,
                    facets=list(rendered.facets),
                    embed=rendered.embed,
                    language=rendered.language,
                    spoiler_text=rendered.spoiler_text or None,
                )
        planned.append(post)
    return planned


def _budget(store: Store | None, account: Account, now: datetime) -> tuple[int, str | None, int]:
    """How many posts the account may make now, why not more, and its posts in the last day:
    one pacing computation for preview and run."""
    if store is None:
        return account.pacing.max_per_run, None, 0
    posted_last_day = store.posted_since(account.name, epoch(now) - 86400)
    budget, why = schedule.pacing_budget(
        account.pacing,
        now=epoch(now),
        last_posted_at=store.last_posted_at(account.name),
        posted_last_day=posted_last_day,
    )
    return budget, why, posted_last_day


def check_templates(config: Config, now: datetime) -> tuple[list[str], list[str]]:
    """`relay check`: every feed's template rendered for each of its accounts against a
    sample item (problems, one line each), and, for Mastodon, against an item whose every
    field holds a URL: Mastodon's card is the first link in the text, so a template that
    puts another URL before item.link gets a warning."""
    from relay.render import Limits
    from relay.targets import known_limits

    renderer = Renderer(config)
    sample = Item(
        feed="sample",
        key="sample",
        link="https://example.org/2026/11/exemple-d-article?utm_source=rss",
        canonical_url="example.org/2026/11/exemple-d-article",
        title="Health Data Hub : le gouvernement confirme l'hébergement chez Microsoft",
        summary="Un exemple de résumé, assez long pour être raccourci. " * 20,
        author="Collectif",
        published=now,
        tags=("santé",),
    )
    problems = []
    for index, feed in enumerate(config.feeds):
        for name in feed.to:
            account = config.accounts[name]
            try:
                renderer.render(sample, feed, account, known_limits(account, None))
            except RenderError as exc:
                problems.append(
                    f"{config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for {account.platform}: {exc}"
                )
    if problems:
        return problems, []
    linked = Item(
        feed="sample",
        key="sample-urls",
        link="https://example.org/2026/11/item-link",
        canonical_url="example.org/2026/11/item-link",
        title="Title https://title.example/page",
        summary="Summary (https://summary.example/page) and https://summary.example/other",
        author="Author https://author.example/",
        published=now,
        tags=("https://tag.example/",),
        image="https://image.example/picture.jpg",
    )
    warnings = []
    for index, feed in enumerate(config.feeds):
        mastodon = [config.accounts[n] for n in feed.to if config.accounts[n].platform == "mastodon"]
        if not mastodon:
            continue
        try:
            post = renderer.render(linked, feed, mastodon[0], Limits(), "Site https://site.example/")
        except RenderError:
            continue
        urls = [post.text[start:end] for start, end in find_urls(post.text)]
        if urls and urls[0] != linked.link:
            source = {linked.image: "item.image", feed.url: "feed.url"}.get(urls[0], urls[0])
            warnings.append(
                f"{config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for mastodon"
                f" (feed {feed.name}) puts {source} before item.link: Mastodon's card would show that page"
            )
    return problems, warnings


def write_starter(directory: Path) -> list[str]:
    """`relay init`: a starter feeds.yaml, .env.example and the built-in templates to copy
    from, never over a file that exists; the files written."""
    from relay.render import BUILTIN_TEMPLATES

    directory.mkdir(parents=True, exist_ok=True)
    starter = Path(__file__).parent / "starter"
    written = []
    for source, target in (
        (starter / "feeds.yaml", directory / "feeds.yaml"),
        (starter / "env.example", directory / ".env.example"),
    ):
        if not target.exists():
            shutil.copyfile(source, target)
            written.append(str(target))
    (directory / "templates").mkdir(exist_ok=True)
    for template in sorted(BUILTIN_TEMPLATES.glob("*.j2")):
        target = directory / "templates" / template.name
        if not target.exists():
            shutil.copyfile(template, target)
            written.append(str(target))
    return written
