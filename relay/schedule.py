"""When feeds are due and how many posts an account may take now (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from relay.config import Feed, Pacing
from relay.store import FeedState

MAX_FEED_BACKOFF = timedelta(days=1)
DELIVERY_BACKOFF_BASE = timedelta(minutes=1)
DELIVERY_BACKOFF_MAX = timedelta(hours=6)
MAX_ATTEMPTS = 8


def is_due(state: FeedState | None, now: float) -> bool:
    return state is None or state.next_due_at is None or state.next_due_at <= now


def next_due_after_success(feed: Feed, now: float) -> float:
    return now + feed.every.total_seconds()


def next_due_after_failure(feed: Feed, failures: int, now: float, retry_after: float | None) -> float:
    """Exponential backoff: a failing feed is not hammered every run."""
    delay = min(feed.every * (1 << min(failures, 10)), max(MAX_FEED_BACKOFF, feed.every))
    due = now + delay.total_seconds()
    if retry_after is not None:
        due = max(due, retry_after)
    return due


def delivery_backoff(attempts: int) -> timedelta:
    return min(DELIVERY_BACKOFF_BASE * (1 << max(attempts - 1, 0)), DELIVERY_BACKOFF_MAX)


def pacing_budget(
    pacing: Pacing, *, now: float, last_posted_at: float | None, posted_last_day: int
) -> tuple[int, str | None]:
    """How many posts the account may take in this run, and why not more."""
    if pacing.window is not None and (closed := window_closed(pacing, now)):
        return 0, closed
    if last_posted_at is not None and now - last_posted_at < pacing.min_interval.total_seconds():
        wait = int(pacing.min_interval.total_seconds() - (now - last_posted_at))
        return 0, f"min_interval: next post in {wait // 60}m{wait % 60:02d}s"
    left_today = pacing.max_per_day - posted_last_day
    if left_today <= 0:
        return 0, f"max_per_day: {pacing.max_per_day} posts in the last 24 hours"
    if pacing.max_per_run <= left_today:
        return pacing.max_per_run, f"max_per_run {pacing.max_per_run}"
    return left_today, f"max_per_day {pacing.max_per_day}"


WINDOW_CLOSED = "outside the posting window"


def window_closed(pacing: Pacing, now: float) -> str | None:
    """Why the account may not post now because of its posting window, with when it next
    opens; None when it has no window or the window is open."""
    from relay.window import describe_next, is_open

    if pacing.window is None:
        return None
    instant = datetime.fromtimestamp(now, UTC)
    if is_open(pacing.window, instant):
        return None
    return f"{WINDOW_CLOSED} ({pacing.window.text}): {describe_next(pacing.window, instant)}"


def over_day_share(feed: str, posts_today: Mapping[str, int], *, max_per_day: int, left_today: int) -> bool:
    """Whether `feed` has taken its share of the account's day while others may still need
    theirs. posts_today maps each feed active for the account in the last 24 hours to its
    posts in that time. A feed's share is max_per_day split evenly among the active feeds;
    past it, the feed may post only from budget that the other feeds' unused shares do not
    need, so a feed that floods early cannot leave nothing for the others later that day."""
    active = {**posts_today, feed: posts_today.get(feed, 0)}
    share = max(1, -(-max_per_day // len(active)))
    if active[feed] < share:
        return False
    reserved = sum(max(0, share - posts) for name, posts in active.items() if name != feed)
    return left_today - reserved <= 0
