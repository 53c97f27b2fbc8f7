"""relay run, the outbox and the steering commands, against relay's own fake Mastodon
server on loopback (tests/support/fake_mastodon.py) and the dry-run target."""

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL.Image import DecompressionBombError

from relay.store import run_lock
from tests.support import feedserver as fs
from tests.support.fake_mastodon import FakeMastodon
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay, relay_process

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token", "TOKEN2": "good-token-2"}


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    server = FakeMastodon(tokens={"good-token": "collectif", "good-token-2": "second"})
    yield server
    server.stop()


def write(
    tmp_path: Path,
    feed_url: str,
    mastodon: FakeMastodon,
    *,
    extra_feed: str = "",
    pacing: str = "",
    second: bool = False,
    template: str = "news",
) -> Path:
    accounts = f"""\
accounts:
  masto:
    platform: mastodon
    instance: {mastodon.url}
    token: ${{TOKEN}}
"""
    if second:
        accounts += f"""\
  other:
    platform: mastodon
    instance: {mastodon.url}
    token: ${{TOKEN2}}
"""
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"defaults:\n  every: 1m\n  backfill: 3\n  template: {template}\n{accounts}"
        f"pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n{pacing}"
        f"feeds:\n  - name: f\n    url: {feed_url}\n{extra_feed}"
    )
    return path


def statuses(mastodon: FakeMastodon) -> list[str]:
    return [s["content"].split("\n")[0] for s in mastodon.statuses]


def test_run_posts_then_is_quiet(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    url = feed_server.feed("/f", numbered(5, now=NOW))
    config = write(tmp_path, url, mastodon)
    first = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert first.exit_code == 0, first.output
    # the first run says once that it starts from no state; later runs are quiet under cron
    assert first.output.startswith("warning: no state yet in ") and first.output.count("\n") == 1
    assert statuses(mastodon) == ["item 2", "item 3", "item 4"]  # backfill 3, oldest first
    assert all(
        s["language"] == "fr" and s["visibility"] == "public" and s["idempotency_key"] for s in mastodon.statuses
    )
    assert relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=1)).output == ""
    again = relay("run", "-c", str(config), "-v", env=ENV, now=NOW + timedelta(minutes=2))
    assert again.exit_code == 0 and "not_modified" in again.output
    assert len(mastodon.statuses) == 3
    history = json.loads(relay("history", "--format", "json").output)
    assert {h["url"] for h in history} == {s["url"] for s in mastodon.statuses}


def test_not_due_feeds_are_not_polled(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    relay("run", "-c", str(config), env=ENV, now=NOW)
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(seconds=30))
    assert feed_server.hits["/f"] == 1


def test_new_items_after_a_304_are_not_lost(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    feed_server.feed("/f", numbered(2, now=NOW), etag='"a"')
    config = write(tmp_path, feed_server.url("/f"), mastodon)
    relay("run", "-c", str(config), env=ENV, now=NOW)
    feed_server.feed("/f", numbered(3, now=NOW + timedelta(hours=1)), etag='"b"')
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=10))
    assert sorted(statuses(mastodon)) == ["item 0", "item 1", "item 2"]


def test_dry_run_takes_the_same_path_and_writes_nothing(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    state = Path(os.environ["RELAY_STATE_DIR"])
    result = relay("run", "-c", str(config), "--dry-run", "-v", now=NOW)
    assert result.exit_code == 0, result.output
    assert "would post to masto: f: item 0" in result.output
    assert mastodon.statuses == [] and not state.exists()


def test_missing_secret_stops_run_but_not_preview(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    result = relay("run", "-c", str(config), now=NOW)
    assert result.exit_code == 2 and "${TOKEN} is not set" in result.output


def test_second_run_exits_3_while_the_lock_is_held(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    with run_lock(Path(os.environ["RELAY_STATE_DIR"])):
        result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 3 and "another relay run holds" in result.output


def test_sigkilled_run_leaves_no_blocking_lock(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    mastodon.fault(hang_before=30)
    process = relay_process("run", "-c", str(config), env=ENV, now=NOW)
    deadline = time.monotonic() + 20
    while not any(p == "/api/v1/statuses" for _, p in mastodon.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    mastodon.faults.clear()
    result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=1))
    assert result.exit_code == 0, result.output
    assert sorted(statuses(mastodon)) == ["item 0", "item 1"]


def test_transient_errors_retry_in_later_runs_exactly_once(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    mastodon.fault(status=503, error="maintenance")
    first = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert first.exit_code == 1 and "will be retried" in first.output and "503" in first.output
    assert relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(seconds=30)).exit_code == 0
    assert mastodon.statuses == []  # backoff: not yet
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=2))
    assert statuses(mastodon) == ["item 0"]


def test_rate_limit_waits_until_the_reset_time(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    reset = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    mastodon.fault(
        status=429,
        error="Too many requests",
        headers={"X-RateLimit-Reset": reset, "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "300"},
    )
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "rate limited" in result.output and "waiting until" in result.output
    status = json.loads(relay("status", "--format", "json").output)
    assert status["accounts"][0]["blocked_until"] is not None


def test_refused_post_is_failed_with_reason_and_not_retried(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    mastodon.fault(status=422, error="Validation failed: Text character limit of 500 exceeded")
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "failed: " in result.output and "character limit" in result.output
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(hours=3))
    assert mastodon.statuses == []
    failed = json.loads(relay("queue", "list", "--format", "json", "--state", "failed").output)
    assert len(failed) == 1 and "character limit" in failed[0]["last_error"]
    assert relay("queue", "retry", str(failed[0]["id"]), now=NOW + timedelta(hours=3)).exit_code == 0
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(hours=4))
    assert statuses(mastodon) == ["item 0"]


def test_auth_error_stops_that_account_only(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon, second=True)
    result = relay("run", "-c", str(config), env={"TOKEN": "bad", "TOKEN2": "good-token-2"}, now=NOW)
    assert result.exit_code == 1
    assert "account masto:" in result.output and "refused the token" in result.output
    assert [s["account"] for s in mastodon.statuses] == ["second"]
    queued = json.loads(relay("queue", "list", "--format", "json").output)
    assert [q["account"] for q in queued] == ["masto"] and queued[0]["state"] == "queued"


def test_pacing_spreads_a_burst_oldest_first_none_lost_none_twice(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(
        tmp_path, feed_server.feed("/f", numbered(50, now=NOW)), mastodon, extra_feed="    backfill: 50\n", pacing=""
    )
    config.write_text(
        config.read_text().replace("max_per_run: 10\n  min_interval: 0s", "max_per_run: 3\n  min_interval: 10m")
    )
    runs = 0
    while len(mastodon.statuses) < 50 and runs < 40:
        relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=10 * runs))
        runs += 1
        assert len(mastodon.statuses) <= 3 * runs
    assert statuses(mastodon) == [f"item {n}" for n in range(50)]
    assert runs == 17


def test_pacing_min_interval_and_max_per_day(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(10, now=NOW)), mastodon, extra_feed="    backfill: 10\n")
    config.write_text(
        config.read_text().replace(
            "max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000",
            "max_per_run: 2\n  min_interval: 10m\n  max_per_day: 5",
        )
    )
    posted_after: dict[int, int] = {}
    for minutes in (0, 5, 9, 10, 15, 20, 30):
        relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=minutes))
        posted_after[minutes] = len(mastodon.statuses)
    assert posted_after == {
        0: 2,  # max_per_run
        5: 2,  # 5 and 9 minutes after the last post: min_interval 10m holds the next
        9: 2,
        10: 4,  # 10 minutes after: two more
        15: 4,
        20: 5,  # only one left of max_per_day 5
        30: 5,  # none left today
    }


def test_flood_guard_holds_then_release(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    feed_server.feed("/f", numbered(3, now=NOW), etag='"1"')
    config = write(tmp_path, feed_server.url("/f"), mastodon)
    relay("seed", "-c", str(config), now=NOW)
    feed_server.feed("/f", numbered(15, start=100, now=NOW, prefix="migrated"), etag='"2"')
    result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert "flood guard: 15 new items" in result.output
    assert mastodon.statuses == []
    status = relay("status")
    assert "held (15)" in status.output
    assert "15 held deliveries now queued" in relay("queue", "release", "f", now=NOW + timedelta(minutes=5)).output
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=6))
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=7))
    assert len(mastodon.statuses) == 15 and len(set(statuses(mastodon))) == 15


def test_render_failure_is_failed_and_the_run_goes_on(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "fragile.j2").write_text("{{ item.link }} {{ 10 // (item.title | length - 6) }}")
    config = write(
        tmp_path,
        feed_server.feed("/f", numbered(12, now=NOW)),
        mastodon,
        template="fragile",
        extra_feed="    backfill: 12\n",
    )
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "render: template fragile.j2: ZeroDivisionError" in result.output, result.output
    assert statuses(mastodon) == [
        "https://example.org/item/10 10",
        "https://example.org/item/11 10",
    ]  # 'item 0'…'item 9' failed, each with its reason
    failed = json.loads(relay("queue", "list", "--format", "json", "--state", "failed").output)
    assert len(failed) == 10 and all("ZeroDivisionError" in f["last_error"] for f in failed)


def test_corrupted_or_newer_state_is_a_clear_error(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    state = Path(os.environ["RELAY_STATE_DIR"])
    state.mkdir(parents=True)
    (state / "relay.db").write_bytes(b"this is not sqlite" * 100)
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 2 and "not a usable relay state file" in result.output
    assert (state / "relay.db").read_bytes() == b"this is not sqlite" * 100
    (state / "relay.db").unlink()
    relay("run", "-c", str(config), env=ENV, now=NOW)
    with sqlite3.connect(state / "relay.db") as db:
        db.execute("PRAGMA user_version = 99")
    result = relay("status")
    assert result.exit_code == 2 and "written by a newer relay" in result.output


def test_state_file_is_private(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    relay("run", "-c", str(config), env=ENV, now=NOW)
    state = Path(os.environ["RELAY_STATE_DIR"])
    assert (state / "relay.db").stat().st_mode & 0o077 == 0


def test_status_and_queue_drop(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(3, now=NOW)), mastodon, pacing="")
    config.write_text(config.read_text().replace("max_per_run: 10", "max_per_run: 1"))
    relay("run", "-c", str(config), env=ENV, now=NOW)
    status = json.loads(relay("status", "--format", "json").output)
    assert status["accounts"][0]["outbox"] == {"posted": 1, "queued": 2}
    assert status["feeds"][0]["name"] == "f" and status["feeds"][0]["next_due_at"]
    queued = json.loads(relay("queue", "list", "--format", "json").output)
    assert relay("queue", "drop", str(queued[0]["id"])).exit_code == 0
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=1))
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=2))
    assert len(mastodon.statuses) == 2
    assert relay("queue", "drop", "9999").exit_code == 2


def test_cron_prints_absolute_paths_and_installs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    crontab_file = tmp_path / "crontab.txt"
    (bin_dir / "crontab").write_text(
        f'#!/bin/sh\nif [ "$1" = "-l" ]; then cat {crontab_file} 2>/dev/null || exit 1; else cat > {crontab_file}; fi\n'
    )
    (bin_dir / "crontab").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    line = relay("cron", "-c", "feeds.yaml").output.strip()
    assert line.startswith("*/5 * * * * /") and " run -c /" in line and ">> /" in line
    assert relay("cron", "-c", "feeds.yaml", "--install").exit_code == 0
    assert "nothing changed" in relay("cron", "-c", "feeds.yaml", "--install").output
    assert crontab_file.read_text().count(" run -c ") == 1


# the delivery boundary: whatever an SDK raises, one delivery never stops the others


def _raise_once(monkeypatch: pytest.MonkeyPatch, method: str, error: BaseException) -> list[int]:
    """Make mastodon.Mastodon.<method> raise `error` on its first call, then work."""
    import mastodon as sdk

    original = getattr(sdk.Mastodon, method)
    calls: list[int] = []

    def patched(self: object, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sdk.Mastodon, method, patched)
    return calls


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth exceeded while calling a Python object"),
        KeyError("id"),
        ValueError("Invalid response\nwith a second line"),
        DecompressionBombError("Image size (100020001 pixels) exceeds limit of 89478485 pixels"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_sdk_error_requeues_one_delivery_and_the_run_goes_on(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    config = write(tmp_path, feed_server.feed("/f", numbered(3, now=NOW)), mastodon, second=True)
    _raise_once(monkeypatch, "status_post", error)
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    [line] = [line for line in result.output.splitlines() if line.startswith("relay:")]
    assert line.startswith("relay: account masto: delivery ") and line.endswith(f"will be retried: {reason}")
    # the two others of that account and all three of the other account went out
    assert sorted(statuses(mastodon)) == ["item 0", "item 1", "item 1", "item 2", "item 2"]
    [queued] = json.loads(relay("queue", "list", "--format", "json").output)
    assert (queued["account"], queued["state"], queued["attempts"], queued["last_error"]) == (
        "masto",
        "queued",
        1,
        reason,
    )
    later = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert later.exit_code == 0 and sorted(statuses(mastodon)).count("item 0") == 2  # retried, exactly once


def test_instance_failing_during_an_image_upload_does_not_wedge_the_account(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """The issue's case: when /api/v1/instance fails during an image upload, Mastodon.py
    recursed until RecursionError, which killed the run with a traceback and left the
    delivery 'sending', with every later item stuck behind it."""
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    image_url = feed_server.add("/i.png", fs.static(png.getvalue(), "image/png"))
    with_image = numbered(1, now=NOW, prefix="pictured").replace(
        b"</description>", f"&lt;img src=&quot;{image_url}&quot;&gt;</description>".encode()
    )
    config = write(
        tmp_path,
        feed_server.feed("/f", with_image),
        mastodon,
        extra_feed=f"    images: true\n  - name: g\n    url: {feed_server.feed('/g', numbered(1, now=NOW))}\n",
    )
    config.write_text(config.read_text() + "network:\n  allow_private: true\n")
    mastodon.fault(path="/api/v1/instance", status=500, error="down", count=10**6)
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert "Traceback" not in result.output
    assert "item 0" in statuses(mastodon)  # the other feed's item went out
    listed = json.loads(relay("queue", "list", "--format", "json").output)
    assert all(d["state"] != "sending" for d in listed)
    # either the target posted without the image (exit 0, a warning), or the delivery is back
    # in the queue with a one-line reason (exit 1)
    if "pictured 0" not in statuses(mastodon):
        assert result.exit_code == 1 and [d["title"] for d in listed] == ["pictured 0"]
        assert "will be retried: RecursionError: " in result.output
    mastodon.faults.clear()
    relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert sorted(statuses(mastodon)) == ["item 0", "pictured 0"]


def test_an_account_whose_sdk_will_not_start_stops_only_that_account(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.targets import mastodon as target_module

    original = target_module.MastodonTarget.__init__

    def refuse_masto(self: object, account: object, *args: object, **kwargs: object) -> None:
        if getattr(account, "name", "") == "masto":
            raise ValueError("Invalid api_base_url")
        original(self, account, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(target_module.MastodonTarget, "__init__", refuse_masto)
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon, second=True)
    result = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "relay: account masto: cannot start: ValueError: Invalid api_base_url" in result.output
    assert [s["account"] for s in mastodon.statuses] == ["second"]
    [queued] = json.loads(relay("queue", "list", "--format", "json").output)
    assert (queued["account"], queued["state"]) == ("masto", "queued")


@pytest.mark.parametrize(("later", "outcome"), [(timedelta(minutes=5), "posted"), (timedelta(minutes=70), "failed")])
def test_an_attempt_that_got_no_answer_is_resent_only_within_the_idempotency_hour(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon, later: timedelta, outcome: str
) -> None:
    """The server accepted the post but the answer never came (a timeout). Mastodon honours
    the Idempotency-Key for an hour: a resend within it returns the same status; after it, a
    resend would post twice, so the delivery is failed for the user to check instead."""
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    mastodon.fault(path="/api/v1/statuses", hang_after=3)
    env = {**ENV, "RELAY_REQUEST_TIMEOUT": "1"}
    first = relay("run", "-c", str(config), env=env, now=NOW)
    assert first.exit_code == 1 and "will be retried" in first.output
    assert statuses(mastodon) == ["item 0"]  # it landed, relay does not know
    time.sleep(2.5)  # let the fake server finish answering the abandoned request
    second = relay("run", "-c", str(config), env=env, now=NOW + later)
    assert statuses(mastodon) == ["item 0"]  # exactly once either way
    queue = json.loads(relay("queue", "list", "--state", "posted", "--state", "failed", "--format", "json").output)
    assert [d["state"] for d in queue] == [outcome]
    if outcome == "failed":
        assert second.exit_code == 1 and "may have been posted" in queue[0]["last_error"]
        assert f"relay queue retry {queue[0]['id']}" in queue[0]["last_error"]


def test_a_refused_connection_is_not_in_doubt(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    """Nothing was sent when the instance refused the connection: retrying hours later is safe."""
    from tests.support.servers import free_port

    feed = feed_server.feed("/f", numbered(1, now=NOW))
    config = write(tmp_path, feed, mastodon)
    live = config.read_text()
    config.write_text(live.replace(mastodon.url, f"http://127.0.0.1:{free_port()}"))
    first = relay("run", "-c", str(config), env=ENV, now=NOW)
    assert first.exit_code == 1 and "will be retried" in first.output
    config.write_text(live)
    assert relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(hours=3)).exit_code == 0
    assert statuses(mastodon) == ["item 0"]


def test_a_template_using_the_feed_title_posts_what_preview_showed(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "titled.j2").write_text("{{ feed.title }}: {{ item.title }}\n{{ item.link }}\n")
    config = write(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon, template="titled")
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env=ENV, now=NOW).output)
    [post] = preview["posts"]
    assert post["text"].startswith("Test feed: item 0")
    assert relay("run", "-c", str(config), env=ENV, now=NOW).exit_code == 0
    [status] = mastodon.statuses
    assert status["content"] == post["text"]
