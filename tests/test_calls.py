"""Calls to action (issue 11, part 3): `relay post` (text or a template such as the French
`appel`, --dry-run, --at, --now) and `campaigns:` in feeds.yaml, through the outbox against
mastodon-mock and the reference PDS: exactly once, paced, in history; a campaign's
occurrence posted once even when runs are missed, late rather than several times."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.relayrun import relay
from tests.support.servers import MastodonMock, Pds

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PETITION = "https://www.mesopinions.com/petition/sante/hdh-microsoft"
ACTION = "Signez la pétition contre l'hébergement du Health Data Hub chez Microsoft"
WHY = "Nos données de santé doivent rester sous juridiction européenne, hors du Cloud Act."


def write(tmp_path: Path, accounts: str, extra: str = "", pacing: str = "  min_interval: 0s\n") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  hashtags: [HealthDataHub]\n"
        f"pacing:\n  max_per_run: 3\n  max_per_day: 10\n{pacing}"
        f"accounts:\n{accounts}feeds: []\n{extra}"
    )
    return path


def masto(mock: MastodonMock) -> str:
    return f"  masto:\n    platform: mastodon\n    instance: {mock.url}\n    token: ${{TOKEN}}\n"


LOCAL = "  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"


def check_says(tmp_path: Path, campaigns: str, *expected: str) -> None:
    """relay check on a file with these campaigns: exit 2, each problem said."""
    config = write(tmp_path, LOCAL, campaigns)
    result = relay("check", "-c", str(config), env={"TOKEN": "x"})
    assert result.exit_code == 2
    for problem in expected:
        assert problem in result.output, (problem, result.output)


def appel(config: Path, *extra: str, env: dict[str, str] | None = None, now: datetime = NOW) -> Any:
    args = ["post", "-c", str(config), "--template", "appel", "--link", PETITION, "--var", f"action={ACTION}"]
    return relay(*args, "--var", f"why={WHY}", *extra, env=env, now=now)


def test_dry_run_shows_the_post_as_preview_would_and_queues_nothing(tmp_path: Path) -> None:
    config = write(tmp_path, LOCAL)
    result = appel(config, "--dry-run", env={"TOKEN": "x"})
    assert result.exit_code == 0, result.output
    assert "== masto (mastodon): 1 to post" in result.output
    assert f"   | 📣 {ACTION}" in result.output and f"   | 👉 {PETITION}" in result.output
    assert "   | #HealthDataHub" in result.output
    assert not (tmp_path / "state").exists()


@pytest.mark.mastodon
def test_a_call_is_posted_once_and_kept_in_history(tmp_path: Path, mastodon_mock: MastodonMock) -> None:
    token = mastodon_mock.new_user(f"appel{uuid.uuid4().hex[:8]}")
    config = write(tmp_path, masto(mastodon_mock))
    env = {"TOKEN": token}
    result = appel(config, env=env)
    assert result.exit_code == 0, result.output
    assert "posted to masto: @post:" in result.output
    [status] = mastodon_mock.statuses(token)
    assert ACTION.replace("'", "&#39;") in status["content"] or ACTION in status["content"]
    again = appel(config, env=env)  # the same command by mistake
    assert "already queued once: #1 posted" in again.output
    assert len(mastodon_mock.statuses(token)) == 1
    history = json.loads(relay("history", "--format", "json").output)
    assert [(h["feed"], h["title"]) for h in history] == [("@post", ACTION)]


@pytest.mark.mastodon
def test_a_text_call_keeps_its_own_urls_and_mentions_nobody(tmp_path: Path, mastodon_mock: MastodonMock) -> None:
    token = mastodon_mock.new_user(f"texte{uuid.uuid4().hex[:8]}")
    config = write(tmp_path, masto(mastodon_mock))
    text = "Rassemblement samedi 14h devant le ministère, avec @ministre@gouv.example : https://rdv.example/samedi"
    result = relay("post", "-c", str(config), text, env={"TOKEN": token}, now=NOW)
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(token)
    assert "rdv.example/samedi" in status["content"] and status["mentions"] == []


@pytest.mark.mastodon
def test_at_schedules_and_now_skips_min_interval_but_not_max_per_day(
    tmp_path: Path, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"plus{uuid.uuid4().hex[:8]}")
    config = write(tmp_path, masto(mastodon_mock), pacing="  min_interval: 1h\n  timezone: Europe/Paris\n")
    env = {"TOKEN": token}
    scheduled = appel(config, "--at", "2026-12-02 10:00", env=env)
    assert scheduled.output.startswith("scheduled for 2026-12-02 10:00 CET: delivery #1")
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(hours=2))
    assert mastodon_mock.statuses(token) == []
    relay("run", "-c", str(config), env=env, now=datetime(2026, 12, 2, 9, 1, tzinfo=UTC))  # 10:01 in Paris
    assert len(mastodon_mock.statuses(token)) == 1
    later = datetime(2026, 12, 2, 9, 10, tzinfo=UTC)
    waits = relay("post", "-c", str(config), "Deuxième appel", env=env, now=later)
    assert "queued: #2 to masto waits (min_interval: next post in" in waits.output
    assert len(mastodon_mock.statuses(token)) == 1
    urgent = relay("post", "-c", str(config), "Troisième appel", "--now", env=env, now=later)
    assert "posted to masto" in urgent.output and len(mastodon_mock.statuses(token)) == 2


@pytest.mark.mastodon
def test_a_campaign_posts_each_occurrence_once_and_a_missed_one_once_late(
    tmp_path: Path, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"camp{uuid.uuid4().hex[:8]}")
    campaign = (
        "campaigns:\n  - name: petition-hdh\n    template: appel\n"
        f'    link: {PETITION}\n    vars:\n      action: "{ACTION}"\n      why: "{WHY}"\n'
        '    every: 7d\n    from: "2026-12-01 09:00"\n    until: "2026-12-31 23:59"\n'
    )
    config = write(tmp_path, masto(mastodon_mock), campaign, pacing="  min_interval: 0s\n  timezone: Europe/Paris\n")
    env = {"TOKEN": token}
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    preview = relay("preview", "-c", str(config), env=env, now=start + timedelta(minutes=5))
    assert "-- [post] @campaign:petition-hdh:" in preview.output
    for hours in (-1, 0.1, 1, 2):  # before it starts, then three runs the first day
        relay("run", "-c", str(config), env=env, now=start + timedelta(hours=hours))
    assert len(mastodon_mock.statuses(token)) == 1
    status = relay("status", "-c", str(config), env=env, now=start + timedelta(hours=2)).output
    assert "campaign petition-hdh: every 1w, next Tue 2026-12-08 09:00 CET" in status
    # no run for two weeks: the occurrence of the 15th goes out once, the 8th's never
    relay("run", "-c", str(config), env=env, now=start + timedelta(days=16))
    relay("run", "-c", str(config), env=env, now=start + timedelta(days=16, hours=1))
    assert len(mastodon_mock.statuses(token)) == 2
    relay("run", "-c", str(config), env=env, now=start + timedelta(days=40))  # over
    assert len(mastodon_mock.statuses(token)) == 2
    history = json.loads(relay("history", "--format", "json").output)
    assert {h["feed"] for h in history} == {"@campaign:petition-hdh"}


@pytest.mark.bluesky
def test_a_text_call_on_bluesky_without_a_link_has_no_card(tmp_path: Path, pds: Pds) -> None:
    me = pds.account("mia.test")
    accounts = f"  sky:\n    platform: bluesky\n    handle: mia.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
    config = write(tmp_path, accounts)
    tag = uuid.uuid4().hex[:6]
    result = relay("post", "-c", str(config), f"Écrivez à votre CPAM et à la CNIL {tag}", env={"PASSWORD": "mia-pass"})
    assert result.exit_code == 0, result.output
    [record] = [r for r in pds.records(me["did"]) if tag in r["value"]["text"]]
    assert "embed" not in record["value"]
    assert [f["features"][0]["tag"] for f in record["value"]["facets"]] == ["HealthDataHub"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give the TEXT to post, or --template NAME"),
        (("x", "--template", "appel"), "give the TEXT to post, or --template NAME"),
        (("--template", "nope"), "no template 'nope'"),
        (("x", "--link", "ftp://x"), "--link 'ftp://x' is not an http(s) URL"),
        (("x", "--to", "ghost"), "--to 'ghost' is not an account"),
        (("x", "--at", "demain"), "--at 'demain' is not a date and time"),
        (("x", "--var", "novalue"), "--var 'novalue' is not KEY=VALUE"),
    ],
)
def test_bad_calls_are_refused_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    config = write(tmp_path, LOCAL)
    result = relay("post", "-c", str(config), *args, env={"TOKEN": "x"})
    assert result.exit_code == 2 and message in result.output, result.output


def test_campaign_keys_are_checked(tmp_path: Path) -> None:
    campaigns = (
        "campaigns:\n  - name: a\n    template: appel\n    text: both\n    every: often\n    from: tomorrow\n"
        "  - name: b\n    text: x\n    link: ftp://x\n    every: 7d\n    from: 2026-12-10\n    until: 2026-12-01\n"
    )
    check_says(
        tmp_path,
        campaigns,
        "campaigns[0].template: write either template: NAME or text:",
        "campaigns[0].every: 'often' is not a duration",
        "campaigns[0].from: 'tomorrow' is not a date and time",
        "campaigns[1].link: 'ftp://x' is not an http(s) URL",
        "campaigns[1].until: is before from",
    )


# what a review found (issue 11)


@pytest.mark.mastodon
def test_a_campaign_read_in_another_time_zone_is_not_posted_twice(tmp_path: Path, mastodon_mock: MastodonMock) -> None:
    token = mastodon_mock.new_user(f"tz{uuid.uuid4().hex[:8]}")
    campaign = (
        'campaigns:\n  - name: hdh\n    text: "Signez la pétition"\n    every: 7d\n    from: "2026-12-01 09:00"\n'
    )
    config = write(tmp_path, masto(mastodon_mock), campaign)
    moment = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    for zone in ("UTC", "Europe/Paris", "America/Cayenne"):  # cron and a shell may not agree
        relay("run", "-c", str(config), env={"TOKEN": token, "TZ": zone}, now=moment)
    assert len(mastodon_mock.statuses(token)) == 1


def test_a_weekly_campaign_keeps_its_wall_clock_hour_across_daylight_saving() -> None:
    from zoneinfo import ZoneInfo

    from relay.calls import next_occurrence, occurrence
    from relay.config import Campaign

    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 1, 5, 9, 0, tzinfo=paris)  # a Monday, in winter
    campaign = Campaign("hdh", "message", "x", "", (), timedelta(days=7), start, None, ())
    summer = datetime(2026, 7, 6, 9, 30, tzinfo=paris)
    found = occurrence(campaign, summer)
    assert found is not None and found[1] == datetime(2026, 7, 6, 9, 0, tzinfo=paris)
    assert next_occurrence(campaign, summer) == datetime(2026, 7, 13, 9, 0, tzinfo=paris)
    assert occurrence(campaign, datetime(2026, 7, 6, 8, 59, tzinfo=paris)) == (
        25,
        datetime(2026, 6, 29, 9, 0, tzinfo=paris),
    )


# what a newcomer's walk found (issue 11)


def test_appel_needs_its_action_and_knows_its_variables(tmp_path: Path) -> None:
    config = write(tmp_path, LOCAL)
    base = ("post", "-c", str(config), "--template", "appel", "--link", PETITION, "--dry-run")
    missing = relay(*base, env={"TOKEN": "x"})
    assert missing.exit_code == 2 and "--var: the template appel needs action" in missing.output
    typo = relay(*base, "--var", "acton=Signez", env={"TOKEN": "x"})
    assert typo.exit_code == 2 and "knows action, why, not acton" in typo.output
    campaigns = (
        "campaigns:\n  - name: a\n    template: appel\n    every: 7d\n    from: 2026-12-01\n    vars: {acton: x}\n"
        "  - name: b\n    template: appell\n    every: 30m\n    from: 2026-12-01\n"
        "  - name: c\n    text: x\n    every: 1 semaine\n"
        "  - name: c\n    text: x\n    every: 7d\n    from: 2026-12-01\n"
    )
    check_says(
        tmp_path,
        campaigns,
        "campaigns[0].vars: the template appel knows action, why, not acton",
        "campaigns[1].template: no template 'appell' (built in: appel, message, news, news-en, petition)",
        "campaigns[1].every: '30m' is too often",
        "campaigns[2].every: '1 semaine' is not a duration (try 1w)",
        "campaigns[2].from: missing (required)",
        "campaigns[3].name: 'c' is the name of another campaign",
    )


@pytest.mark.mastodon
def test_again_posts_a_call_once_more_and_at_refuses_the_past(tmp_path: Path, mastodon_mock: MastodonMock) -> None:
    token = mastodon_mock.new_user(f"again{uuid.uuid4().hex[:8]}")
    config = write(tmp_path, masto(mastodon_mock))
    env = {"TOKEN": token}
    relay("post", "-c", str(config), "Écrivez à la CNIL", env=env, now=NOW)
    same = relay("post", "-c", str(config), "Écrivez à la CNIL", env=env, now=NOW + timedelta(days=60))
    assert "already queued once: #1 posted" in same.output and "--again" in same.output
    again = relay("post", "-c", str(config), "Écrivez à la CNIL", "--again", env=env, now=NOW + timedelta(days=60))
    assert again.exit_code == 0 and len(mastodon_mock.statuses(token)) == 2
    past = relay("post", "-c", str(config), "x", "--at", "2020-01-01 09:00", env=env, now=NOW)
    assert past.exit_code == 2 and "is in the past" in past.output


def test_dry_run_and_at_say_when_the_posting_window_is_closed(tmp_path: Path) -> None:
    config = write(tmp_path, LOCAL, pacing='  hours: "08:00-21:00"\n  days: [mon-sat]\n  timezone: Europe/Paris\n')
    sunday = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    dry = relay("post", "-c", str(config), "Rassemblement", "--dry-run", env={"TOKEN": "x"}, now=sunday)
    assert "queued now, posted once the posting window opens (opens Mon 2026-12-07 08:00 CET)" in dry.output
    later = relay(
        "post", "-c", str(config), "Rassemblement", "--at", "2026-12-06 12:00", env={"TOKEN": "x"}, now=sunday
    )
    assert "masto: queued now, posted once the posting window opens (opens Mon 2026-12-07 08:00 CET)" in later.output
