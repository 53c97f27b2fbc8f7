"""SIGKILL a real `relay run` at random points, again and again, then let it finish, and
count: every item must reach every account exactly once. Used by tests/test_crash.py,
which bench/crash_sweep.py runs to report the figures.

Every run has work to do: the feed, like a real one, shows its newest WINDOW items and gains
GROWTH new ones per run, as many deliveries as pacing lets one run send, so the outbox never
runs dry and kills land in polling, in sends, and between them. Before some runs the server
is told to fail one post with a 500, either refusing it or after accepting it, so server
errors land in the middle of batches too."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.fake_mastodon import FakeMastodon
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay_process

ACCOUNTS = {"masto": "token-a", "other": "token-b"}
WINDOW = 60  # items the feed shows
START = 30  # items in the feed at the first run
GROWTH = 3  # new items per run: 6 deliveries, what one run may send (max_per_run 3, 2 accounts)
SERVER_ERROR_CHANCE = 0.3  # of a run getting one 500 among its posts


@dataclass
class SweepResult:
    kills: int = 0
    finished_before_kill: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0  # 500s injected (a few may be left unused when the sweep ends)
    items: int = 0
    statuses: int = 0
    duplicates: int = 0
    missing: int = 0
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    final_runs: int = 0
    seconds: float = 0.0


def _config(path: Path, feed_url: str, fake: FakeMastodon, max_per_run: int) -> None:
    accounts = "".join(
        f"  {name}:\n    platform: mastodon\n    instance: {fake.url}\n    token: ${{TOKEN_{name.upper()}}}\n"
        for name in ACCOUNTS
    )
    path.write_text(
        f"defaults:\n  every: 1m\n  backfill: 1000\n  flood_threshold: 1000\n  flood_threshold_day: 1000000\n"
        f"accounts:\n{accounts}"
        f"pacing:\n  max_per_run: {max_per_run}\n  min_interval: 0s\n  max_per_day: 100000\n"
        f"feeds:\n  - name: f\n    url: {feed_url}\n"
    )


def _stage(state: Path, fake: FakeMastodon) -> str:
    db_path = state / "relay.db"
    if not db_path.exists():
        return "before any state was written"
    with sqlite3.connect(db_path) as db:
        sending = [row[0] for row in db.execute("SELECT idempotency_key FROM deliveries WHERE state = 'sending'")]
    accepted = {s["idempotency_key"] for s in fake.statuses}
    if any(key in accepted for key in sending):
        return "after the server accepted, before relay recorded it"
    if sending:
        return "after marking sending, before the server accepted"
    return "starting, polling, or between deliveries"


def sweep(tmp: Path, kills: int, seed: int = 1) -> SweepResult:
    rng = random.Random(seed)
    result = SweepResult()
    start = time.monotonic()
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    fake = FakeMastodon(tokens={token: name for name, token in ACCOUNTS.items()})
    fake.latency = 0.06  # each request takes a while, so kills land inside runs
    feeds = FeedServer().start()
    total = {"items": START}

    def feed(request: object) -> Response:
        count = min(WINDOW, total["items"])
        body = numbered(count, start=total["items"] - count, now=now + timedelta(days=1))
        return Response(200, body, {"Content-Type": "application/rss+xml"})

    url = feeds.add("/f", feed)
    state = tmp / "state"
    env = {"RELAY_STATE_DIR": str(state), **{f"TOKEN_{n.upper()}": t for n, t in ACCOUNTS.items()}}
    config = tmp / "feeds.yaml"
    _config(config, url, fake, max_per_run=GROWTH)
    number = 0
    try:
        while result.kills < kills and number < kills * 4:
            number += 1
            total["items"] += GROWTH
            if rng.random() < SERVER_ERROR_CHANCE:
                fake.fault(status=500, error="Internal Server Error", accept_first=rng.random() < 0.5)
                result.server_errors += 1
            process = relay_process("run", "-c", str(config), env=env, now=now + timedelta(minutes=number))
            time.sleep(rng.uniform(0.05, 1.2))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                result.kills += 1
                result.stages[_stage(state, fake)] += 1
            else:
                process.communicate()
                result.finished_before_kill += 1
        # let it finish: no more kills, faults, new items or latency; a large budget; after a
        # first run that settles interrupted sends, hours apart so every backoff has passed
        fake.latency = 0.0
        fake.faults.clear()
        _config(config, url, fake, max_per_run=100_000)
        expected_deliveries = total["items"] * len(ACCOUNTS)
        while result.final_runs < 20:
            result.final_runs += 1
            later = timedelta(minutes=number + 1) + timedelta(hours=result.final_runs - 1)
            process = relay_process("run", "-c", str(config), env=env, now=now + later)
            process.communicate(timeout=300)
            with sqlite3.connect(state / "relay.db") as db:
                left = db.execute("SELECT COUNT(*) FROM deliveries WHERE state != 'posted'").fetchone()[0]
                queued = db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
            if left == 0 and queued == expected_deliveries:
                break
    finally:
        feeds.stop()
        fake.stop()
    seen = Counter((s["account"], s["content"].split("\n")[0]) for s in fake.statuses)
    expected = {(name, f"item {n}") for name in ACCOUNTS for n in range(total["items"])}
    result.items = total["items"]
    result.statuses = len(fake.statuses)
    result.duplicates = sum(count - 1 for count in seen.values() if count > 1)
    result.missing = len(expected - set(seen))
    result.unexpected = sorted(set(seen) - expected)
    result.seconds = time.monotonic() - start
    return result
