from datetime import timedelta

from relay.config import Feed, Pacing
from relay.schedule import delivery_backoff, next_due_after_failure, over_day_share, pacing_budget

FEED = Feed("f", "u", timedelta(minutes=15), timedelta(days=7), 1, "news", "fr", (), ())
PACING = Pacing(max_per_run=3, min_interval=timedelta(minutes=10), max_per_day=5)


def test_failing_feed_backs_off_exponentially_up_to_a_day() -> None:
    delays = [next_due_after_failure(FEED, n, 0, None) for n in (1, 2, 3, 10)]
    assert delays[:3] == [1800, 3600, 7200]
    assert delays[3] == 86400


def test_retry_after_pushes_the_next_poll_back() -> None:
    assert next_due_after_failure(FEED, 1, 0, 10_000) == 10_000


def test_delivery_backoff_doubles_and_caps() -> None:
    assert [delivery_backoff(n).total_seconds() for n in (1, 2, 3)] == [60, 120, 240]
    assert delivery_backoff(20) == timedelta(hours=6)


def test_pacing_budget() -> None:
    assert pacing_budget(PACING, now=10_000, last_posted_at=None, posted_last_day=0)[0] == 3
    assert pacing_budget(PACING, now=10_000, last_posted_at=9_900, posted_last_day=1) == (
        0,
        "min_interval: next post in 8m20s",
    )
    assert pacing_budget(PACING, now=10_000, last_posted_at=9_000, posted_last_day=4)[0] == 1
    assert pacing_budget(PACING, now=10_000, last_posted_at=9_000, posted_last_day=5)[0] == 0


def test_a_feed_past_its_share_of_the_day_waits_while_others_may_need_theirs() -> None:
    # two active feeds, 40 a day: 20 each
    assert not over_day_share("noisy", {"noisy": 19, "legit": 0}, max_per_day=40, left_today=21)
    assert over_day_share("noisy", {"noisy": 20, "legit": 1}, max_per_day=40, left_today=19)
    # budget the others cannot use any more is not wasted
    assert not over_day_share("noisy", {"noisy": 20, "legit": 20}, max_per_day=45, left_today=5)
    # a feed alone today has the whole day
    assert not over_day_share("busy", {"busy": 39}, max_per_day=40, left_today=1)
    # a feed not yet active counts itself in
    assert over_day_share("new", {"other": 0}, max_per_day=1, left_today=1) is False
