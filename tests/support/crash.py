"""SIGKILL a real `relay run` at random points, again and again, then let it finish, and
count: every item must reach every account exactly once. Used by tests/test_crash.py and
bench/crash_sweep.py (which reports the figures)."""

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

ITEMS = 160
ACCOUNTS = {"masto": "token-a", "other": "token-b"}


@dataclass
class SweepResult:
    kills: int = 0
    finished_before_kill: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    statuses: int = 0
    duplicates: int = 0
    missing: int = 0
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    final_runs: int = 0
    seconds: float = 0.0


def _config(tmp: Path, feed_url: str, fake: FakeMastodon) -> Path:
    accounts = "".join(
        f"  {name}:\n    platform: mastodon\n    instance: {fake.url}\n    token: ${{TOKEN_{name.upper()}}}\n"
        for name in ACCOUNTS
    )
    path = tmp / "feeds.yaml"
    path.write_text(
        f"defaults:\n  every: 1m\n  backfill: {ITEMS}\n  flood_threshold: {ITEMS}\naccounts:\n{accounts}"
        "pacing:\n  max_per_run: 4\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: f\n    url: {feed_url}\n"
    )
    return path


def _stage(state: Path, fake: FakeMastodon) -> str:
    db_path = state / "relay.db"
    if not db_path.exists():
        return "before any state was written"
    with sqlite3.connect(db_path) as db:
        sending = [row[0] for row in db.execute("SELECT idempotency_key FROM deliveries WHERE state = 'sending'")]
        counts = dict(db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
    accepted = {s["idempotency_key"] for s in fake.statuses}
    if any(key in accepted for key in sending):
        return "after the server accepted, before relay recorded it"
    if sending:
        return "after marking sending, before the server accepted"
    if not counts:
        return "while polling (nothing queued yet)"
    return "between deliveries, or after the run's last one"


def sweep(tmp: Path, kills: int, seed: int = 1) -> SweepResult:
    rng = random.Random(seed)
    result = SweepResult()
    start = time.monotonic()
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    fake = FakeMastodon(tokens={token: name for name, token in ACCOUNTS.items()})
    fake.latency = 0.1  # each request takes a while, so kills land inside runs
    feeds = FeedServer().start()
    visible = {"count": 3}
    feeds.add(
        "/f", lambda r: Response(200, numbered(visible["count"], now=now), {"Content-Type": "application/rss+xml"})
    )
    state = tmp / "state"
    env = {"RELAY_STATE_DIR": str(state), **{f"TOKEN_{n.upper()}": t for n, t in ACCOUNTS.items()}}
    config = _config(tmp, feeds.url("/f"), fake)
    try:
        number = 0
        while result.kills < kills and number < kills * 3:
            number += 1
            visible["count"] = min(ITEMS, 4 + 4 * number)  # a backlog: every run has posts to make
            process = relay_process("run", "-c", str(config), env=env, now=now + timedelta(minutes=number))
            time.sleep(rng.uniform(0.05, 1.4))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                result.kills += 1
                result.stages[_stage(state, fake)] += 1
            else:
                process.communicate()
                result.finished_before_kill += 1
        visible["count"] = ITEMS
        later = now + timedelta(minutes=number)
        while result.final_runs < 60:
            result.final_runs += 1
            process = relay_process("run", "-c", str(config), env=env, now=later + timedelta(minutes=result.final_runs))
            process.communicate(timeout=120)
            with sqlite3.connect(state / "relay.db") as db:
                left = db.execute("SELECT COUNT(*) FROM deliveries WHERE state != 'posted'").fetchone()[0]
                total = db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
            if left == 0 and total == ITEMS * len(ACCOUNTS):
                break
    finally:
        feeds.stop()
        fake.stop()
    seen = Counter((s["account"], s["content"].split("\n")[0]) for s in fake.statuses)
    expected = {(name, f"item {n}") for name in ACCOUNTS for n in range(ITEMS)}
    result.statuses = len(fake.statuses)
    result.duplicates = sum(count - 1 for count in seen.values() if count > 1)
    result.missing = len(expected - set(seen))
    result.unexpected = sorted(set(seen) - expected)
    result.seconds = time.monotonic() - start
    return result
