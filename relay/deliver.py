"""Delivering: send what the outbox holds, oldest first and fairly between feeds, within each
account's pacing; settle what an interrupted run left in doubt; map each platform error to
what happens to the delivery (posted, retried, failed, dropped) and to the account."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from relay import schedule
from relay.calls import POST_FEED, call_feed, call_of, campaign_feed, is_call
from relay.config import PRIORITIES, Account, Config, Feed, Pacing
from relay.errors import RenderError
from relay.models import DeliveryState, item_from_payload
from relay.store import Delivery, Store, epoch

if TYPE_CHECKING:
    from relay.models import Post
    from relay.render import PostRules, Renderer
    from relay.store import ThreadPart
    from relay.targets.base import Limits, PublishError, Receipt, Target

IN_DOUBT_RESEND_WINDOW = 55 * 60  # Mastodon keeps idempotency keys one hour


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
    stopped: dict[str, str] = field(default_factory=dict)  # accounts whose credentials were refused

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

    def stop(self, line: str, *, auth: bool = False) -> Next:
        self.report.account_errors.append(f"account {self.account.name}: {line}")
        if auth:  # credentials refused: the account stops until someone fixes them (relay.alerts)
            self.report.stopped[self.account.name] = line
        return Next.STOP


def deliver(
    config: Config,
    store: Store,
    targets: dict[str, Target],
    clock: Callable[[], datetime],
    *,
    renderer: Renderer | None = None,
    stopping: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Send what the outbox holds, oldest first, within each account's pacing; stopping
    (relay watch, asked to stop) is asked before each delivery."""
    renderer = renderer or _renderer(config)
    report = DeliveryReport()
    feeds = {feed.name: feed for feed in config.feeds}
    # calls to action go first, as a high-priority feed's items do
    calls = (POST_FEED, *(campaign_feed(campaign.name) for campaign in config.campaigns))
    stop = stopping or (lambda: False)
    for name in sorted(targets):
        if stop():
            break
        _deliver_account(store, targets[name], renderer, config.accounts[name], feeds, clock, report, calls, stop)
    return report


def _deliver_account(
    store: Store,
    target: Target,
    renderer: Renderer,
    account: Account,
    feeds: dict[str, Feed],
    clock: Callable[[], datetime],
    report: DeliveryReport,
    calls: tuple[str, ...] = (),
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    from relay.targets import post_rules

    name = account.name
    now = clock()
    known = store.account_state(name)
    if known.blocked_until and known.blocked_until > epoch(now):
        until = datetime.fromtimestamp(known.blocked_until, tz=UTC)
        report.account_errors.append(
            f"account {name}: waiting until {until:%Y-%m-%d %H:%M:%S} UTC ({known.last_error})"
        )
        return
    for thread in store.unfinished_threads(name, epoch(now)):
        # a thread an earlier run began: its replies go now, as part of the post it was
        if _finish_thread(_Attempt(store, thread, account, report), target, clock) is Next.STOP:
            return
    budget, why, posted_last_day = account_budget(store, account, now)
    left_today = account.pacing.max_per_day - posted_last_day
    # urgent: true feeds skip min_interval, never max_per_day or the posting window
    urgent_budget = budget
    if not budget:  # an urgent feed's or a `relay post --now` call's items may still go
        urgent_budget = account_budget(store, dataclasses.replace(account, pacing=no_interval(account.pacing)), now)[0]
    levels = {f.name: PRIORITIES.index(f.priority) for f in feeds.values() if f.priority != "normal" and name in f.to}
    levels.update(dict.fromkeys(calls, 0))
    # deliveries that fail before any send (render errors) do not use the budget
    most = max(budget, urgent_budget)
    due = store.due_deliveries(name, epoch(now), most + 100, levels) if most else []
    if why:
        report.pacing[name] = why
    if not due:
        return
    rules: PostRules | None = None  # the account's limits are read when the first delivery needs them
    # a feed the flood guard holds uses no share of the day until it is released
    held = store.held_feeds(name, epoch(now) - 86400)
    posts_today = {f: n for f, n in store.feed_activity(name, epoch(now) - 86400).items() if f not in held}
    sent = 0
    for delivery in due:
        if sent >= most or stopping():
            break
        feed = feeds.get(delivery.feed)
        if feed is None and is_call(delivery.feed) and (call := call_of(delivery.payload)) is not None:
            feed = call_feed(delivery.feed, call, name)
        if sent >= (urgent_budget if feed is not None and feed.urgent else budget):
            continue  # only an urgent feed's items may go now
        if delivery.state == DeliveryState.QUEUED and schedule.over_day_share(
            delivery.feed, posts_today, max_per_day=account.pacing.max_per_day, left_today=left_today
        ):
            report.pacing[name] = f"feed {delivery.feed} has had its share of max_per_day; others go first"
            continue
        attempt = _Attempt(store, delivery, account, report)
        before = len(report.events)
        if feed is None:
            store.mark_failed(delivery.id, f"feed {delivery.feed!r} is no longer in the configuration")
            attempt.event(Outcome.FAILED, "feed removed")
            continue
        if rules is None:
            limits = _limits(target, account, report)
            if limits is None:
                break
            rules = post_rules(account, limits)
        try:
            step = _deliver_one(attempt, target, renderer, feed, rules, clock)
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
        if exc.auth:
            report.stopped[account.name] = str(exc)
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
    rules: PostRules,
    clock: Callable[[], datetime],
) -> Next:
    """One delivery: settle an earlier attempt's doubt, drop a duplicate, render (or reuse
    what an earlier attempt rendered), send."""
    from relay.targets.base import PublishError

    store, delivery = attempt.store, attempt.delivery
    settled = _settle_doubt(attempt, target, clock)
    if settled is not None:
        return settled
    if delivery.state == DeliveryState.QUEUED and (other := store.posted_duplicate(delivery.id)):
        store.mark_dropped(delivery.id, f"already relayed via feed {other!r}")
        attempt.event(Outcome.DROPPED, f"already relayed via feed {other!r}")
        return Next.GO_ON
    if delivery.post is not None:
        post = delivery.post
    else:
        try:
            feed_title = str(json.loads(delivery.payload).get("feed_title") or "")
            item = item_from_payload(delivery.payload)
            call = call_of(delivery.payload) if is_call(delivery.feed) else None
            if call is not None:  # the user's own words: their URLs stay, and --var is theirs
                post = renderer.render(item, feed, attempt.account, rules, variables=dict(call.vars), trusted=True)
            else:
                post = renderer.render(item, feed, attempt.account, rules, feed_title)
        except RenderError as exc:
            store.mark_failed(delivery.id, f"render: {exc}")
            attempt.event(Outcome.FAILED, f"render: {exc}")
            return Next.GO_ON
    store.mark_sending(delivery.id, epoch(clock()), post, parts=_part_keys(delivery, attempt.account, post, clock()))
    try:
        receipt = target.publish(post, idempotency_key=delivery.idempotency_key, rkey=delivery.rkey)
    except PublishError as exc:
        return _publish_failed(attempt, exc, clock())
    store.mark_posted(delivery.id, epoch(clock()), receipt.remote_id, receipt.url)
    attempt.event(Outcome.POSTED, _thread_detail(post), url=receipt.url, sent=True)
    return _finish_thread(attempt, target, clock, post=post, root=receipt)


def _part_keys(delivery: Delivery, account: Account, post: Post, now: datetime) -> list[tuple[str, str | None]]:
    """A thread's replies' keys, chosen with the thread: each reply's idempotency key and
    record key, kept across attempts like the delivery's own."""
    from relay.targets import record_key

    return [(f"{delivery.idempotency_key}.{n}", record_key(account, now)) for n in range(1, len(post.thread) + 1)]


def _thread_detail(post: Post) -> str:
    return f"the first of a thread of {len(post.thread) + 1} posts" if post.thread else ""


def _finish_thread(
    attempt: _Attempt,
    target: Target,
    clock: Callable[[], datetime],
    *,
    post: Post | None = None,
    root: Receipt | None = None,
) -> Next:
    """Send a posted thread's replies that are due, in order, each under the one before:
    an interrupted reply is settled first (found on the platform, or resent with its own
    keys); one that fails for good fails those after it, and the delivery says so. Replies
    use none of the account's budget: the thread counts as one post."""
    from relay.targets.base import PublishError, Receipt, Reply

    store, delivery = attempt.store, attempt.delivery
    post = post or delivery.post
    if post is None or not post.thread:
        return Next.GO_ON
    total = len(post.thread) + 1
    root = root or Receipt(delivery.remote_id or "", delivery.remote_url or "")
    parent = root
    for part in store.thread_parts(delivery.id):
        if part.state == "posted":
            parent = Receipt(part.remote_id or "", part.remote_url or "", part.cid or "")
            continue
        now = clock()
        if part.state == "failed" or (part.state == "queued" and (part.next_attempt_at or 0) > epoch(now)):
            return Next.GO_ON  # failed for good, or to be tried again later
        where = f"thread reply {part.part} of {total - 1}"
        try:
            found = _settle_part(attempt, target, part, total, where, now)
            if isinstance(found, Next):
                return found
            if found is None:
                store.mark_part_sending(delivery.id, part.part, epoch(now))
                found = target.publish(
                    post.thread[part.part - 1],
                    idempotency_key=part.idempotency_key,
                    rkey=part.rkey,
                    reply_to=Reply(root=root, parent=parent),
                )
        except PublishError as exc:
            return _part_failed(attempt, part, total, exc, clock(), where)
        except sqlite3.Error:
            raise
        except Exception as exc:  # as for a delivery: this thread waits, the others go on
            error = PublishError(one_line(exc), transient=True, maybe_sent=True)
            return _part_failed(attempt, part, total, error, clock(), where)
        store.mark_part_posted(delivery.id, part.part, epoch(clock()), found.remote_id, found.url, found.cid)
        parent = found
    if attempt.delivery.state == DeliveryState.POSTED:  # a thread an earlier run began, now whole
        attempt.event(Outcome.POSTED, f"the rest of its thread of {total} posts", url=delivery.remote_url or "")
    return Next.GO_ON


def _settle_part(
    attempt: _Attempt, target: Target, part: ThreadPart, total: int, where: str, now: datetime
) -> Receipt | Next | None:
    """A reply an earlier attempt may have sent: its receipt when the platform shows it;
    Next when it cannot be settled (failed, or the account stops); None to send it."""
    from relay.targets.base import PublishError

    store, delivery = attempt.store, attempt.delivery
    if part.state == "sending":
        try:
            found = target.find(idempotency_key=part.idempotency_key, rkey=part.rkey)
        except PublishError as exc:
            if exc.auth:
                return attempt.stop(str(exc), auth=True)
            found = None
        if found is not None:
            return found
    interrupted = part.last_attempt_at if part.state == "sending" else None
    doubts = [t for t in (part.doubt_since, interrupted) if t]
    if part.rkey is None and doubts and epoch(now) - min(doubts) > IN_DOUBT_RESEND_WINDOW:
        why = "an attempt more than an hour ago got no answer: it may have been posted; check the account"
        store.mark_part_failed(delivery.id, part.part, total, why)
        attempt.event(Outcome.FAILED, f"{where}: {why}")
        return Next.GO_ON
    return None


def _part_failed(attempt: _Attempt, part: ThreadPart, total: int, exc: PublishError, now: datetime, where: str) -> Next:
    """A reply's attempt failed: as for a delivery (_publish_failed), for this reply."""
    store, delivery = attempt.store, attempt.delivery
    if exc.auth:
        store.mark_part_retry(delivery.id, part.part, epoch(now), str(exc), count_attempt=False)
        return attempt.stop(str(exc), auth=True)
    attempts = part.attempts + 1
    if not exc.transient or attempts >= schedule.MAX_ATTEMPTS:
        detail = str(exc) if not exc.transient else f"gave up after {attempts} attempts: {exc}"
        if exc.transient and ((exc.maybe_sent and part.rkey is None) or part.doubt_since):
            detail += f"; the last attempt may have posted: check the account before `relay queue retry {delivery.id}`"
        store.mark_part_failed(delivery.id, part.part, total, detail)
        attempt.event(Outcome.FAILED, f"{where}: {detail}")
    else:
        doubt = epoch(now) if exc.maybe_sent and part.rkey is None else None
        retry_at = (
            epoch(exc.retry_at) if exc.retry_at else epoch(now) + schedule.delivery_backoff(attempts).total_seconds()
        )
        store.mark_part_retry(delivery.id, part.part, retry_at, str(exc), doubt_since=doubt)
        attempt.event(Outcome.RETRY, f"{where}: {exc}")
    if exc.retry_at:
        until = epoch(exc.retry_at)
        store.update_account(attempt.account.name, blocked_until=until, last_error=str(exc))
        return attempt.stop(f"{exc}; waiting until {datetime.fromtimestamp(until, tz=UTC):%Y-%m-%d %H:%M:%S} UTC")
    return Next.GO_ON


def _settle_doubt(attempt: _Attempt, target: Target, clock: Callable[[], datetime]) -> Next | None:
    """A delivery an earlier run left 'sending' (interrupted) or in doubt: posted if the
    platform shows the post, failed when a resend could post twice; None to go on and send."""
    from relay.targets.base import PublishError

    store, delivery = attempt.store, attempt.delivery
    now = clock()
    if delivery.state == DeliveryState.SENDING:
        # an earlier run was interrupted during this delivery: did the post land?
        try:
            found = target.find(idempotency_key=delivery.idempotency_key, rkey=delivery.rkey)
        except PublishError as exc:
            if exc.auth:
                return attempt.stop(str(exc), auth=True)  # still 'sending': asked again next run
            found = None
        if found is not None:
            store.mark_posted(delivery.id, epoch(now), found.remote_id, found.url)
            attempt.event(Outcome.POSTED, "confirmed after an interrupted attempt", found.url)
            return _finish_thread(attempt, target, clock, root=found)
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
        return attempt.stop(str(exc), auth=True)
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


def _renderer(config: Config) -> Renderer:
    from relay.render import Renderer

    return Renderer(config)


def no_interval(pacing: Pacing) -> Pacing:
    """The pacing an urgent feed's items follow: no min_interval, the rest unchanged."""
    return dataclasses.replace(pacing, min_interval=timedelta(0))


def account_budget(store: Store | None, account: Account, now: datetime) -> tuple[int, str | None, int]:
    """How many posts the account may make now, why not more, and its posts in the last day:
    one pacing computation for preview and run."""
    if store is None:
        closed = schedule.window_closed(account.pacing, epoch(now))
        return (0, closed, 0) if closed else (account.pacing.max_per_run, None, 0)
    posted_last_day = store.posted_since(account.name, epoch(now) - 86400)
    budget, why = schedule.pacing_budget(
        account.pacing,
        now=epoch(now),
        last_posted_at=store.last_posted_at(account.name),
        posted_last_day=posted_last_day,
    )
    return budget, why, posted_last_day
