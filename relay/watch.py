"""One `relay run` (run_cycle), and `relay watch`, which runs the same code in one process at
each feed's `every`, each account's next allowed post and each campaign's next occurrence,
sleeping in between (it wakes at least every MAX_SLEEP seconds to see whether feeds.yaml
changed, at once on SIGHUP). SIGTERM or SIGINT: the delivery under way ends, no other
starts, and it exits 0. A feeds.yaml that no longer loads keeps the previous one, and is a
problem the alerts report until it is fixed."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from relay.edge import context, dry_run_state, load, now, open_store, run_lock, test_clock
from relay.errors import ConfigError, LockedError

if TYPE_CHECKING:
    from relay.config import Account, Config, Feed
    from relay.store import Store

Line = tuple[str, bool]  # text, to stderr
MAX_SLEEP = 300.0  # seconds: asleep, feeds.yaml is looked at at least this often
MIN_GAP = 60.0  # seconds between two runs of watch: its runs pace like cron's
LOCK_RETRY = 60.0  # another run holds the lock: try again in a minute
CONFIG_PROBLEM = "config"  # the alerts' condition key of a feeds.yaml that does not load


def run_cycle(
    config: Config,
    state_dir: Path,
    feeds: list[Feed],
    *,
    dry_run: bool,
    verbose: bool,
    quiet: bool,
    stopping: Callable[[], bool] | None = None,
    config_loaded: bool = True,
    progress: bool = False,
) -> tuple[list[Line], bool]:
    """One `relay run` under the lock the caller holds: its lines and whether it failed.
    config_loaded: feeds.yaml loaded as it is now (relay watch may run on the previous one);
    progress: the feeds fetched shown on stderr, when it is a terminal (run -v)."""
    import dataclasses

    from relay import show
    from relay.pipeline import run_once

    run_context = context(config, dry_run=dry_run, state_dir=state_dir, progress=progress)
    if stopping is not None:
        run_context = dataclasses.replace(run_context, stopping=stopping)
    notifying = config.alerts.notifies and not dry_run
    warnings: list[str] = []
    if notifying:
        from relay import alerts

        warnings += [w for w in [alerts.ping_start(config, run_context)] if w]
    with dry_run_state(state_dir) if dry_run else contextlib.closing(open_store(state_dir)) as store:
        report = run_once(config, store, run_context, feeds)
        # what the run saw for the alerts: nothing to note in a run that delivered nothing,
        # when no condition is recorded (the no-op cron run loads no more than that)
        if not dry_run and (notifying or report.delivery is not None or store.conditions()):
            from relay import alerts

            moment = run_context.clock().timestamp()
            alerts.note_run(store, report, moment, config, config_loaded=config_loaded)
            if notifying:
                warnings += alerts.notify(config, store, run_context, run_failed=report.failed, now=moment)
    lines = show.run_lines(report, state_dir, verbose=verbose, quiet=quiet, dry_run=dry_run)
    return lines + [(f"warning: {line}", True) for line in warnings], report.failed


def note_locked(config: Config, state_dir: Path) -> list[Line]:
    """Another run holds the lock: noted, and told once it has lasted more than an hour."""
    from relay import alerts

    with contextlib.closing(open_store(state_dir)) as store:
        moment = now().timestamp()
        alerts.note_locked(store, moment)
        if not config.alerts.notifies:
            return []
        warnings = alerts.notify(
            config, store, context(config, state_dir=state_dir), run_failed=False, now=moment, ping=False
        )
    return [(f"warning: {line}", True) for line in warnings]


class _Wake(Exception):
    pass


class Watcher:
    def __init__(
        self,
        config_path: Path,
        state_dir: Path,
        echo: Callable[[Config | None, list[Line]], None],
        *,
        quiet: bool = False,
    ) -> None:
        self.quiet = quiet  # -q: posts and problems only, not each feed's poll
        self.config_path = config_path
        self.state_dir = state_dir
        self.echo = echo
        self.stop = False
        self.reload_asked = False
        self.sleeping = False
        self.config_loads = True  # feeds.yaml loads as it is now

    def _signal(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGHUP:
            self.reload_asked = True
        else:
            self.stop = True  # the delivery under way ends; no other starts
        if self.sleeping:
            raise _Wake

    def log(self, config: Config | None, text: str) -> None:
        self.echo(config, [(f"{now():%Y-%m-%d %H:%M:%S} {text}", True)])

    def run(self) -> int:
        config = load(self.config_path)  # a feeds.yaml that does not load stops it at once (exit 2)
        seen = self._stamp()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self._signal)
        self.log(config, f"relay watch: {len(config.feeds)} feeds, {len(config.accounts)} accounts; SIGTERM stops")
        while not self.stop:
            wake = self._cycle(config)
            if self.stop:
                break
            self.log(config, f"relay watch: next run {wake:%Y-%m-%d %H:%M:%S %Z}")
            # asleep until then, awake every MAX_SLEEP to see whether feeds.yaml changed
            while not self.stop:
                self._sleep_until(min(wake, now() + timedelta(seconds=MAX_SLEEP)))
                if self.reload_asked or self._stamp() != seen:
                    self.reload_asked = False
                    seen = self._stamp()
                    config = self._reload(config)
                    break  # a new feeds.yaml may have feeds due now
                if now() >= wake:
                    break
                # work another command queued meanwhile (relay post --at, relay queue retry)
                with contextlib.closing(open_store(self.state_dir)) as store:
                    wake = min(wake, next_wake(config, store, now(), gap=0))
                if now() >= wake:
                    break
        self.log(config, "relay watch: stopped")
        return 0

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.config_path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def _reload(self, config: Config) -> Config:
        try:
            fresh = load(self.config_path)
        except ConfigError as exc:
            self.config_loads = False
            first = exc.problems[0] if exc.problems else str(exc)
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            self.log(config, f"relay watch: {first}{more}; keeping the previous feeds.yaml")
            with contextlib.closing(open_store(self.state_dir)) as store:
                store.set_condition(
                    CONFIG_PROBLEM,
                    f"{self.config_path.name} does not load ({first}): relay watch keeps the previous one",
                    now().timestamp(),
                )
            return config
        self.config_loads = True
        with contextlib.closing(open_store(self.state_dir)) as store:
            if CONFIG_PROBLEM in store.conditions():
                store.clear_condition(CONFIG_PROBLEM)
        self.log(fresh, f"relay watch: {self.config_path.name} reloaded: {len(fresh.feeds)} feeds")
        return fresh

    def _cycle(self, config: Config) -> datetime:
        started = now()
        try:
            with run_lock(self.state_dir):
                lines, _ = run_cycle(
                    config,
                    self.state_dir,
                    list(config.feeds),
                    dry_run=False,
                    verbose=not self.quiet,
                    quiet=self.quiet,
                    stopping=lambda: self.stop,
                    config_loaded=self.config_loads,
                )
        except LockedError:
            self.echo(config, note_locked(config, self.state_dir))
            self.log(config, "relay watch: another relay run holds the lock; trying again in a minute")
            return started + timedelta(seconds=LOCK_RETRY)
        stamp = f"{now():%Y-%m-%d %H:%M:%S}"
        self.echo(config, [(f"{stamp} {text}", True) for text, _ in lines])
        with contextlib.closing(open_store(self.state_dir)) as store:
            return next_wake(config, store, now())

    def _sleep_until(self, wake: datetime) -> None:
        if test_clock():  # the test moves the clock file: follow it, not the wall
            while not self.stop and not self.reload_asked and now() < wake:
                time.sleep(0.05)
            return
        seconds = min(MAX_SLEEP, (wake - now()).total_seconds())
        try:
            self.sleeping = True
            if seconds > 0 and not self.stop and not self.reload_asked:
                time.sleep(seconds)
        except _Wake:
            pass
        finally:
            self.sleeping = False


def next_wake(config: Config, store: Store, moment: datetime, *, gap: float = MIN_GAP) -> datetime:
    """When the next run has something to do: a feed due, an account allowed to post what
    waits for it, a campaign's next occurrence; at least MIN_GAP from now."""
    from relay.calls import next_occurrence

    at = moment.timestamp()
    times = [at + 86400]  # nothing scheduled: a run a day all the same
    states = store.feed_states()
    stopped = store.conditions()
    for feed in config.feeds:
        state = states.get(feed.name)
        times.append(state.next_due_at if state and state.next_due_at is not None else at)
    for account in config.accounts.values():
        if f"account:{account.name}" in stopped:
            continue  # its credentials were refused: the next feed's run tries it again
        waiting = store.next_delivery_at(account.name)
        if waiting is not None:
            times.append(max(waiting, allowed_at(account, store, at)))
    for campaign in config.campaigns:
        upcoming = next_occurrence(campaign, moment)
        if upcoming is not None:
            times.append(upcoming.timestamp())
    wake = max(min(times), at + gap)
    return datetime.fromtimestamp(wake, tz=moment.tzinfo)


def allowed_at(account: Account, store: Store, at: float) -> float:
    """The first time the account's pacing lets it post again."""
    from relay.window import next_open

    pacing = account.pacing
    times = [at]
    last = store.last_posted_at(account.name)
    if last is not None:
        times.append(last + pacing.min_interval.total_seconds())
    posted = store.posted_times(account.name, at - 86400)
    if pacing.max_per_day and len(posted) >= pacing.max_per_day:
        times.append(posted[len(posted) - pacing.max_per_day] + 86400)
    blocked = store.account_state(account.name).blocked_until
    if blocked:
        times.append(blocked)
    allowed = max(times)
    if pacing.window is not None:
        allowed = next_open(pacing.window, datetime.fromtimestamp(allowed, UTC)).timestamp()
    return allowed
