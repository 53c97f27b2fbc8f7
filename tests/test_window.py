"""Posting windows (issue 11, part 1): open and next opening on the wall clock of a zone,
across both daylight-saving changes of Europe/Paris in 2026 (Sunday 29 March, 02:00 → 03:00;
Sunday 25 October, 03:00 → 02:00), with window edges in the skipped and the repeated hour."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from relay.window import END_OF_DAY, Window, describe_next, is_open, next_open, parse_hours

PARIS = ZoneInfo("Europe/Paris")
EVERY_DAY = frozenset(range(7))


def window(hours: str, days: frozenset[int] = EVERY_DAY) -> Window:
    parsed = parse_hours(hours)
    assert parsed is not None
    return Window(parsed[0], parsed[1], days, PARIS, "Europe/Paris", hours)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_open_inside_the_hours_and_closed_outside() -> None:
    w = window("08:00-21:30")
    assert is_open(w, utc("2026-11-30T07:00"))  # 08:00 in Paris (CET, +1)
    assert not is_open(w, utc("2026-11-30T06:59"))
    assert is_open(w, utc("2026-11-30T20:29"))
    assert not is_open(w, utc("2026-11-30T20:30"))  # 21:30: closed
    assert next_open(w, utc("2026-11-30T21:00")) == utc("2026-12-01T07:00")


def test_days_and_a_window_across_midnight() -> None:
    weekdays = frozenset(range(5))
    w = window("08:00-18:00", weekdays)
    friday_evening = utc("2026-12-04T18:00")  # 19:00 Friday in Paris
    assert not is_open(w, friday_evening)
    assert next_open(w, friday_evening) == utc("2026-12-07T07:00")  # Monday 08:00
    night = window("22:00-02:00", frozenset({4}))  # Friday night only
    assert is_open(night, utc("2026-12-04T21:00"))  # Friday 22:00
    assert is_open(night, utc("2026-12-05T00:59"))  # Saturday 01:59, the Friday's night
    assert not is_open(night, utc("2026-12-05T01:00"))  # Saturday 02:00
    assert not is_open(night, utc("2026-12-05T21:30"))  # Saturday 22:30
    to_midnight = window("20:00-24:00")
    assert parse_hours("20:00-24:00") == (time(20), END_OF_DAY)
    assert is_open(to_midnight, utc("2026-11-30T22:59")) and not is_open(to_midnight, utc("2026-11-30T23:00"))


def test_march_a_start_in_the_skipped_hour_opens_when_the_clock_passes_it() -> None:
    w = window("02:30-21:00")
    # 29 March 2026: at 01:00 UTC the clocks go from 02:00 CET to 03:00 CEST; 02:30 never shows
    assert not is_open(w, utc("2026-03-29T00:59"))  # 01:59 CET
    assert is_open(w, utc("2026-03-29T01:00"))  # 03:00 CEST, past 02:30
    assert next_open(w, utc("2026-03-29T00:00")) == utc("2026-03-29T01:00")
    assert describe_next(w, utc("2026-03-29T00:00")) == "opens Sun 2026-03-29 03:00 CEST"
    # the day before and after, 02:30 is 02:30
    assert next_open(w, utc("2026-03-27T21:00")) == utc("2026-03-28T01:30")
    assert next_open(w, utc("2026-03-29T20:00")) == utc("2026-03-30T00:30")


def test_march_an_end_in_the_skipped_hour_closes_when_the_clock_passes_it() -> None:
    w = window("22:00-02:30")
    assert is_open(w, utc("2026-03-29T00:59"))  # 01:59 CET
    assert not is_open(w, utc("2026-03-29T01:00"))  # 03:00 CEST
    assert next_open(w, utc("2026-03-29T01:00")) == utc("2026-03-29T20:00")  # 22:00 CEST


def test_october_a_start_in_the_repeated_hour_opens_at_its_first_pass_and_stays_open() -> None:
    w = window("02:30-21:00")
    # 25 October 2026: at 01:00 UTC the clocks go from 03:00 CEST back to 02:00 CET
    assert not is_open(w, utc("2026-10-25T00:29"))  # 02:29 CEST
    assert is_open(w, utc("2026-10-25T00:30"))  # 02:30 CEST, the first pass
    assert is_open(w, utc("2026-10-25T01:10"))  # 02:10 CET, the repeat: still open
    assert next_open(w, utc("2026-10-24T22:00")) == utc("2026-10-25T00:30")
    assert describe_next(w, utc("2026-10-24T22:00")) == "opens Sun 2026-10-25 02:30 CEST"


def test_october_an_end_in_the_repeated_hour_closes_at_its_first_pass_and_stays_closed() -> None:
    w = window("20:00-02:30")
    assert is_open(w, utc("2026-10-25T00:29"))  # 02:29 CEST
    assert not is_open(w, utc("2026-10-25T00:30"))  # 02:30 CEST
    assert not is_open(w, utc("2026-10-25T01:10"))  # 02:10 CET, the repeat: still closed
    assert next_open(w, utc("2026-10-25T01:10")) == utc("2026-10-25T19:00")  # 20:00 CET


@pytest.mark.parametrize("value", ["8-21", "08:00", "25:00-26:00", "08:00-08:00", "24:00-08:00", "8:5-9:00", ""])
def test_bad_hours_are_refused(value: str) -> None:
    assert parse_hours(value) is None


def test_every_minute_of_a_year_agrees_with_the_wall_clock_outside_the_changes() -> None:
    w = window("08:00-21:30", frozenset({0, 2, 4}))
    instant = utc("2026-01-01T00:00")
    while instant.year == 2026:
        local = instant.astimezone(PARIS)
        expected = local.weekday() in (0, 2, 4) and time(8) <= local.time() < time(21, 30)
        assert is_open(w, instant) == expected, instant
        if not expected:
            opening = next_open(w, instant)
            assert opening > instant and is_open(w, opening) and not is_open(w, opening - timedelta(minutes=1))
        instant += timedelta(minutes=37)


# End to end: feeds.yaml's pacing window, relay run against mastodon-mock at pinned times,
# relay status and relay preview saying when the window opens

import json  # noqa: E402
import uuid  # noqa: E402
from email.utils import format_datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.support.feeds import one_feed_yaml  # noqa: E402
from tests.support.feedserver import FeedServer  # noqa: E402
from tests.support.relayrun import relay  # noqa: E402
from tests.support.servers import MastodonMock  # noqa: E402


def windowed(tmp_path: Path, mock_url: str, feed_url: str, pacing: str) -> Path:
    return one_feed_yaml(
        tmp_path, mock_url, feed_url, f"  max_per_run: 10\n  min_interval: 0s\n{pacing}", name="petition", every="1m"
    )


def one_item_feed(feed_server: FeedServer, published: datetime) -> str:
    tag = uuid.uuid4().hex[:8]
    body = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Pétition</title><item>"
        f"<title>Signez la pétition {tag}</title><link>https://petition.example/{tag}</link>"
        f"<pubDate>{format_datetime(published)}</pubDate></item></channel></rss>"
    )
    return feed_server.feed(f"/window-{tag}.rss", body.encode())


@pytest.mark.mastodon
def test_outside_the_window_items_wait_and_go_out_when_it_opens(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"win{uuid.uuid4().hex[:8]}")
    night = utc("2026-11-30T02:00")  # 03:00 in Paris
    url = one_item_feed(feed_server, night - timedelta(hours=1))
    config = windowed(
        tmp_path, mastodon_mock.url, url, '  hours: "08:00-21:30"\n  days: [mon-fri]\n  timezone: Europe/Paris\n'
    )
    env = {"TOKEN": token}
    preview = relay("preview", "-c", str(config), env=env, now=night)
    assert "queued now, posted once the posting window opens (opens Mon 2026-11-30 08:00 CET)" in preview.output
    result = relay("run", "-c", str(config), "-v", env=env, now=night)
    assert result.exit_code == 0, result.output
    assert "pacing masto: outside the posting window (08:00-21:30 mon,tue,wed,thu,fri Europe/Paris)" in result.output
    assert mastodon_mock.statuses(token) == []
    status = relay("status", "-c", str(config), env=env, now=night)
    assert "1 queued" in status.output and "closed, opens Mon 2026-11-30 08:00 CET" in status.output
    window = json.loads(relay("status", "-c", str(config), "--format", "json", env=env, now=night).output)
    assert window["accounts"][0]["window"] == {
        "window": "08:00-21:30 mon,tue,wed,thu,fri Europe/Paris",
        "open": False,
        "next_open": "2026-11-30T07:00:00+00:00",
        "opens": "Mon 2026-11-30 08:00 CET",
    }
    result = relay("run", "-c", str(config), env=env, now=utc("2026-11-30T07:01"))
    assert result.exit_code == 0, result.output
    assert len(mastodon_mock.statuses(token)) == 1


@pytest.mark.mastodon
def test_a_run_in_the_skipped_hour_of_march_waits_then_posts_at_three(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"dst{uuid.uuid4().hex[:8]}")
    url = one_item_feed(feed_server, utc("2026-03-28T23:00"))
    config = windowed(tmp_path, mastodon_mock.url, url, '  hours: "02:30-21:00"\n  timezone: Europe/Paris\n')
    env = {"TOKEN": token}
    relay("run", "-c", str(config), env=env, now=utc("2026-03-29T00:59"))  # 01:59 CET
    assert mastodon_mock.statuses(token) == []
    relay("run", "-c", str(config), env=env, now=utc("2026-03-29T01:00"))  # 03:00 CEST
    assert len(mastodon_mock.statuses(token)) == 1


def test_window_keys_are_checked_and_accounts_inherit_them(tmp_path: Path) -> None:
    from relay.config import load_config

    path = tmp_path / "feeds.yaml"
    base = (
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "  night:\n    platform: mastodon\n    instance: https://n.example\n    token: ${TOKEN}\n"
        '    pacing:\n      hours: "22:00-06:00"\n'
        "feeds:\n  - name: f\n    url: https://f.example/feed\n"
    )
    path.write_text('pacing:\n  hours: "08:00-21:30"\n  days: [mon, wed-fri]\n  timezone: Europe/Paris\n' + base)
    config = load_config(path, environ={"TOKEN": "x"})
    day, night = config.accounts["masto"].pacing.window, config.accounts["night"].pacing.window
    assert day is not None and night is not None
    assert day.days == frozenset({0, 2, 3, 4}) and night.days == day.days  # inherited
    assert (night.start, night.end) == (time(22), time(6)) and night.zone_name == "Europe/Paris"
    assert config.accounts["masto"].pacing.max_per_run == 3  # the rest of pacing as before
    path.write_text('pacing:\n  hours: "8h-21h"\n  days: [lundi]\n  timezone: Europe/Pariss\n' + base)
    result = relay("check", "-c", str(path), env={"TOKEN": "x"})
    assert result.exit_code == 2
    assert "feeds.yaml:2: pacing.hours: '8h-21h' is not a time range like \"08:00-21:30\"" in result.output
    assert "pacing.days: 'lundi' is not a day" in result.output
    assert "feeds.yaml:4: pacing.timezone: 'Europe/Pariss' is not a time zone name like Europe/Paris" in result.output
    path.write_text(base.replace('      hours: "22:00-06:00"\n', "      max_per_run: 2\n"))
    assert load_config(path, environ={"TOKEN": "x"}).accounts["masto"].pacing.window is None
