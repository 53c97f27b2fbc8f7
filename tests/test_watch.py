"""relay watch (issue 11, part 5) as a process under the test clock (RELAY_CLOCK_FILE: the
test moves time forward): it posts at each feed's time and each account's next allowed post;
a SIGTERM in the middle of a delivery ends that delivery and exits 0; a feeds.yaml that no
longer loads keeps the old one and is reported. And `relay systemd`'s units, checked with
systemd-analyze verify when the machine has it."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.feeds import numbered, one_feed_yaml
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def replace(path: Path, text: str) -> None:
    """Write a file that relay watch may be reading as an editor does: aside, then renamed."""
    aside = path.with_name(path.name + ".new")
    aside.write_text(text)
    os.replace(aside, path)


class Watch:
    """`relay watch` in a subprocess, its stderr collected line by line."""

    def __init__(self, tmp_path: Path, config: Path, env: dict[str, str]) -> None:
        self.clock = tmp_path / "clock"
        self.set(T0)
        self.state = tmp_path / "state"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "watch", "-c", str(config)],
            env={**os.environ, **env, "RELAY_CLOCK_FILE": str(self.clock), "RELAY_STATE_DIR": str(self.state)},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def set(self, when: datetime) -> None:
        # relay watch reads the clock while the test moves it: never half-written (empty).
        replace(self.clock, when.isoformat())

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{what}; relay watch said:\n" + "\n".join(self.lines))

    def wait_line(self, text: str, timeout: float = 30) -> None:
        self.wait_for(lambda: any(text in line for line in self.lines), f"no line with {text!r}", timeout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for watch in started:
        if watch.process.poll() is None:
            watch.process.kill()
            watch.process.wait()


def served(
    tmp_path: Path, feed_server: FeedServer, mock: MastodonMock, name: str, pacing: str, items: int = 1
) -> tuple[str, str, Path]:
    """A new user on mastodon-mock, a feed of `items` items at T0 and feeds.yaml for both:
    (the token, the feed's path, feeds.yaml)."""
    token = mock.new_user(f"{name}{uuid.uuid4().hex[:8]}")
    path = f"/{name}-{uuid.uuid4().hex[:6]}.rss"
    url = feed_server.feed(path, numbered(items, now=T0, prefix="actu"))
    return token, path, one_feed_yaml(tmp_path, mock.url, url, pacing)


def started(tmp_path: Path, config: Path, token: str, watches: list[Watch]) -> Watch:
    watch = Watch(tmp_path, config, {"TOKEN": token})
    watches.append(watch)
    return watch


@pytest.mark.mastodon
def test_watch_posts_at_the_feeds_and_the_accounts_times(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, watches: list[Watch]
) -> None:
    pacing = "  max_per_run: 1\n  min_interval: 30m\n  max_per_day: 100\n"
    token, path, config = served(tmp_path, feed_server, mastodon_mock, "watch", pacing)
    watch = started(tmp_path, config, token, watches)
    watch.wait_for(lambda: len(mastodon_mock.statuses(token)) == 1, "the first item is not posted")
    watch.wait_line("relay watch: next run 2026-11-30 09:10:00")  # the feed's every
    feed_server.feed(path, numbered(3, now=T0 + timedelta(minutes=8), prefix="actu"))  # two new items
    watch.set(T0 + timedelta(minutes=5))  # nothing is due: it sleeps on
    time.sleep(1)
    assert not any(line.startswith("2026-11-30 09:05") for line in watch.lines)
    watch.set(T0 + timedelta(minutes=10))  # the feed is due; the account's min_interval is not over
    watch.wait_line("2026-11-30 09:10:00 feed news: ok, 3 entries, 2 new")
    watch.wait_line("relay watch: next run 2026-11-30 09:20:00")
    assert len(mastodon_mock.statuses(token)) == 1
    for minutes, posts in ((20, 1), (30, 2), (60, 3)):
        watch.set(T0 + timedelta(minutes=minutes))
        watch.wait_line(f"2026-11-30 {9 + minutes // 60:02d}:{minutes % 60:02d}:00 relay watch: next run")
        assert len(mastodon_mock.statuses(token)) == posts, (minutes, watch.lines)
    assert watch.stop() == 0
    assert watch.lines[-1].endswith("relay watch: stopped")


@pytest.mark.mastodon
def test_sigterm_in_the_middle_of_a_delivery_finishes_it_and_exits_0(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, watches: list[Watch]
) -> None:
    pacing = "  max_per_run: 3\n  min_interval: 0s\n  max_per_day: 100\n"
    token, _, config = served(tmp_path, feed_server, mastodon_mock, "term", pacing, items=3)
    slow = {"match": {"methods": ["POST"], "path": "/api/v1/statuses"}, "effect": {"type": "latency", "delay_ms": 3000}}
    mastodon_mock.fault(**slow, count=1)
    try:
        watch = started(tmp_path, config, token, watches)

        def sending() -> bool:
            try:
                with sqlite3.connect(f"file:{watch.state / 'relay.db'}?mode=ro", uri=True) as db:
                    return bool(db.execute("SELECT 1 FROM deliveries WHERE state = 'sending'").fetchone())
            except sqlite3.Error:
                return False

        watch.wait_for(sending, "no delivery under way")
        watch.process.send_signal(signal.SIGTERM)
        assert watch.process.wait(timeout=30) == 0
    finally:
        mastodon_mock.clear_faults()
    assert len(mastodon_mock.statuses(token)) == 1  # the one under way, and no other
    with sqlite3.connect(tmp_path / "state" / "relay.db") as db:
        states = sorted(state for (state,) in db.execute("SELECT state FROM deliveries"))
    assert states == ["posted", "queued", "queued"]


@pytest.mark.mastodon
def test_a_broken_reload_keeps_the_old_feeds_yaml_and_is_reported(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, watches: list[Watch]
) -> None:
    pacing = "  max_per_run: 3\n  min_interval: 0s\n  max_per_day: 100\n"
    token, path, config = served(tmp_path, feed_server, mastodon_mock, "reload", pacing)
    good = config.read_text()
    watch = started(tmp_path, config, token, watches)
    watch.wait_line("relay watch: next run 2026-11-30 09:10:00")
    replace(config, good.replace("every: 10m", "every: often"))
    feed_server.feed(path, numbered(2, now=T0 + timedelta(minutes=5), prefix="actu"))
    watch.set(T0 + timedelta(minutes=10))
    watch.wait_line("feeds[0].every: 'often' is not a duration")
    watch.wait_line("keeping the previous feeds.yaml")
    watch.wait_line("2026-11-30 09:10:00 relay watch: next run")  # and it goes on, with the old one
    watch.wait_for(lambda: len(mastodon_mock.statuses(token)) == 2, "the new item is not posted")
    env = {"TOKEN": token, "RELAY_STATE_DIR": str(tmp_path / "state")}
    check = relay("status", "--check", "-c", str(config), env=env, now=T0 + timedelta(minutes=10))
    assert check.exit_code == 2 and "feeds.yaml does not load" in check.output
    replace(config, good)
    watch.set(T0 + timedelta(minutes=20))
    watch.wait_line("relay watch: feeds.yaml reloaded: 1 feeds")
    check = relay("status", "--check", "-c", str(config), env=env, now=T0 + timedelta(minutes=20))
    assert "does not load" not in check.output
    assert watch.stop() == 0


def test_systemd_prints_and_installs_units_that_verify(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: []\n")
    printed = relay("systemd", "-c", str(config), "--state-dir", str(tmp_path / "state"))
    assert printed.exit_code == 0, printed.output
    assert "# relay-watch.service" in printed.output and "# relay-run.timer" in printed.output
    assert f"watch -c {config} --state-dir {tmp_path / 'state'}" in printed.output
    installed = relay("systemd", "-c", str(config), "--install", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert installed.exit_code == 0, installed.output
    folder = tmp_path / "xdg" / "systemd" / "user"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["relay-run.service", "relay-run.timer", "relay-watch.service"]
    assert "OnCalendar=*:0/5" in (folder / "relay-run.timer").read_text()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze on this machine: the units are not verified")
    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(folder / name) for name in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


@pytest.mark.mastodon
def test_watch_wakes_for_a_call_another_command_scheduled(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, watches: list[Watch]
) -> None:
    pacing = "  max_per_run: 3\n  min_interval: 0s\n  timezone: UTC\n"
    token, _, config = served(tmp_path, feed_server, mastodon_mock, "later", pacing)
    watch = started(tmp_path, config, token, watches)
    watch.wait_line("relay watch: next run 2026-11-30 09:10:00")
    env = {"TOKEN": token, "RELAY_STATE_DIR": str(tmp_path / "state")}
    scheduled = relay("post", "-c", str(config), "Rendez-vous samedi", "--at", "2026-11-30 09:03", env=env, now=T0)
    assert scheduled.output.startswith("scheduled for 2026-11-30 09:03"), scheduled.output
    watch.set(T0 + timedelta(minutes=5))  # its first look at the state since
    watch.wait_for(lambda: len(mastodon_mock.statuses(token)) == 2, "the scheduled call is not posted")
    assert watch.stop() == 0
