"""`deliver` against a scripted target: every branch of a delivery's life, one test each.

A real Store in tmp_path, a real Config from feeds.yaml, the real renderer and a fixed clock
that a test moves forward between runs; only the platform is scripted. Each test names the
branch it covers and asserts what the outbox and the report then say."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.config import Account, Config, Feed, load_config
from relay.dedupe import canonical_url, fingerprint
from relay.deliver import IN_DOUBT_RESEND_WINDOW, DeliveryReport, deliver
from relay.errors import RenderError
from relay.models import DeliveryState, Item, Post, item_payload
from relay.poll import delivery_key
from relay.render import PostRules, Renderer
from relay.schedule import MAX_ATTEMPTS
from relay.store import Delivery, Store, epoch
from relay.targets.base import Limits, PublishError, Receipt, Reply, Target

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_characters=500)

FEEDS_YAML = """\
pacing:
  max_per_run: {max_per_run}
  min_interval: {min_interval}
  max_per_day: {max_per_day}
accounts:
  m:
    platform: mastodon
    instance: https://m.example
    token: ${{M_TOKEN}}
  n:
    platform: mastodon
    instance: https://n.example
    token: ${{N_TOKEN}}
  s:
    platform: bluesky
    handle: s.bsky.social
    app_password: ${{S_PASSWORD}}
feeds:
  - name: a
    url: https://a.example/feed
    to: [m, n, s]
  - name: b
    url: https://b.example/feed
    to: [m, n, s]
"""


def make_config(tmp_path: Path, *, max_per_run: int = 10, min_interval: str = "0s", max_per_day: int = 100) -> Config:
    """Generous pacing unless a test is about pacing, so each test sees only its branch."""
    path = tmp_path / "feeds.yaml"
    path.write_text(FEEDS_YAML.format(max_per_run=max_per_run, min_interval=min_interval, max_per_day=max_per_day))
    return load_config(path, environ={"M_TOKEN": "m-token", "N_TOKEN": "n-token", "S_PASSWORD": "s-password"})


class Clock:
    """A fixed time that a test moves forward between runs."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Interrupted(BaseException):
    """The process dies during the send (a kill, a power cut): no `except Exception` sees it."""


@dataclass(frozen=True)
class Call:
    method: str  # publish | find
    idempotency_key: str
    rkey: str | None
    text: str | None = None  # the post's first line (its title), for publish
    parent: str | None = None  # a thread's reply: the remote id of the post it answers


class ScriptedTarget:
    """A platform whose answers are scripted: each publish (and each find) takes the next
    outcome of its script, a Receipt or an exception to raise. An empty publish script posts;
    an empty find script finds nothing. Every call is recorded with its keys."""

    def __init__(
        self,
        name: str = "m",
        *,
        publish: Iterable[Receipt | BaseException] = (),
        find: Iterable[Receipt | BaseException | None] = (),
        limits: Limits | Exception = LIMITS,
    ) -> None:
        self.name = name
        self.publish_script = list(publish)
        self.find_script = list(find)
        self.limits_answer = limits
        self.calls: list[Call] = []
        self.limits_asked = 0
        self.warnings: list[str] = []

    def limits(self) -> Limits:
        self.limits_asked += 1
        if isinstance(self.limits_answer, Exception):
            raise self.limits_answer
        return self.limits_answer

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None, reply_to: Reply | None = None) -> Receipt:
        parent = reply_to.parent.remote_id if reply_to else None
        self.calls.append(Call("publish", idempotency_key, rkey, post.text.split("\n")[0], parent))
        if self.publish_script:
            outcome = self.publish_script.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        number = len(self.calls)
        return Receipt(str(number), f"https://{self.name}.example/@{self.name}/{number}")

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        self.calls.append(Call("find", idempotency_key, rkey))
        outcome = self.find_script.pop(0) if self.find_script else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def check(self) -> str:
        return f"scripted {self.name}"

    def close(self) -> None:
        pass

    def published(self) -> list[str | None]:
        return [call.text for call in self.calls if call.method == "publish"]


class CountingRenderer(Renderer):
    """The real renderer, counting its renders; `fail` makes it raise for one title."""

    def __init__(self, config: Config, fail: dict[str, Exception] | None = None) -> None:
        super().__init__(config)
        self.rendered: list[str] = []
        self.fail = fail or {}

    def render(self, item: Item, feed: Feed, account: Account, rules: PostRules, feed_title: str = "") -> Post:
        self.rendered.append(item.title)
        if item.title in self.fail:
            raise self.fail[item.title]
        return super().render(item, feed, account, rules, feed_title)


def queue(
    store: Store,
    title: str,
    *,
    feed: str = "a",
    account: str = "m",
    link: str | None = "",
    state: DeliveryState = DeliveryState.QUEUED,
    seen: datetime = NOW - timedelta(hours=1),
) -> int:
    """An item of feed queued for account, as record_poll writes it (a Bluesky account gets
    its record key up front); the delivery's id. The link defaults to one of the feed's own."""
    if link == "":
        link = f"https://{feed}.example/{title.replace(' ', '-')}"
    entry = Item(feed, f"id:{title}", link, canonical_url(link) if link else None, title, "A summary.")
    with store.transaction():
        item_id = store.insert_item(
            feed,
            fingerprint(entry.key),
            fingerprint(entry.canonical_url) if entry.canonical_url else None,
            title,
            link,
            None,
            epoch(seen),
            {**item_payload(entry), "feed_title": f"Feed {feed}"},
        )
        store.insert_delivery(
            item_id,
            account,
            state,
            delivery_key(account, feed, entry.key),
            # deliver passes the record key through untouched: any unique value will do
            f"rkey-{feed}-{title}" if account == "s" else None,
            epoch(seen),
        )
    [delivery] = [d for d in store.deliveries(account=account) if d.item_id == item_id]
    return delivery.id


def get(store: Store, delivery_id: int) -> Delivery:
    found = store.delivery(delivery_id)
    assert found is not None
    return found


def run(
    config: Config, store: Store, clock: Clock, *targets: ScriptedTarget, renderer: Renderer | None = None
) -> DeliveryReport:
    scripted: dict[str, Target] = {target.name: target for target in targets}
    return deliver(config, store, scripted, clock, renderer=renderer)


def outcomes(report: DeliveryReport) -> list[tuple[str, str]]:
    return [(event.title, event.outcome) for event in report.events]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def test_posted_on_the_first_try_keeps_the_receipt(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    target = ScriptedTarget(publish=[Receipt("109", "https://m.example/@m/109")])
    report = run(config, store, Clock(), target)
    delivery = get(store, delivery_id)
    assert delivery.state == DeliveryState.POSTED
    assert (delivery.remote_id, delivery.remote_url) == ("109", "https://m.example/@m/109")
    assert (delivery.attempts, delivery.posted_at, delivery.last_error) == (1, epoch(NOW), None)
    assert target.calls == [Call("publish", delivery_key("m", "a", "id:one"), None, "one")]
    assert outcomes(report) == [("one", "posted")] and report.events[0].url == "https://m.example/@m/109"
    assert not report.failed and report.account_errors == []


def test_a_bluesky_delivery_is_published_with_its_record_key(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one", account="s")
    rkey = get(store, delivery_id).rkey
    target = ScriptedTarget("s")
    run(config, store, Clock(), target)
    assert rkey is not None and target.calls == [Call("publish", delivery_key("s", "a", "id:one"), rkey, "one")]
    assert get(store, delivery_id).state == DeliveryState.POSTED


def test_a_transient_error_requeues_with_backoff_and_the_rest_goes_on(config: Config, store: Store) -> None:
    first, second = queue(store, "one"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    target = ScriptedTarget(publish=[PublishError("m.example answered 503", transient=True)])
    report = run(config, store, Clock(), target)
    delivery = get(store, first)
    assert delivery.state == DeliveryState.QUEUED
    assert (delivery.attempts, delivery.last_error) == (1, "m.example answered 503")
    assert delivery.next_attempt_at == epoch(NOW) + 60  # the first backoff: a minute
    assert delivery.doubt_since is None  # the server answered: nothing was posted
    assert get(store, second).state == DeliveryState.POSTED
    assert outcomes(report) == [("one", "retry"), ("two", "posted")] and report.failed


def test_a_retry_waits_for_its_time_then_backs_off_longer(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    clock = Clock()
    error = PublishError("m.example answered 503", transient=True)
    target = ScriptedTarget(publish=[error, error])
    run(config, store, clock, target)
    clock.advance(seconds=30)  # before next_attempt_at: not due
    early = run(config, store, clock, target)
    assert early.events == [] and len(target.published()) == 1
    clock.advance(seconds=30)
    run(config, store, clock, target)
    delivery = get(store, delivery_id)
    assert delivery.attempts == 2 and delivery.next_attempt_at == epoch(clock.now) + 120  # doubled


def test_a_retry_sends_the_post_rendered_at_the_first_attempt(config: Config, store: Store) -> None:
    """The post is rendered once and kept: a retry sends exactly what the first attempt sent,
    even if templates or limits changed in between."""
    delivery_id = queue(store, "one")
    clock = Clock()
    renderer = CountingRenderer(config)
    target = ScriptedTarget(publish=[PublishError("m.example answered 503", transient=True)])
    run(config, store, clock, target, renderer=renderer)
    kept = get(store, delivery_id).post
    clock.advance(minutes=5)
    run(config, store, clock, target, renderer=renderer)
    assert renderer.rendered == ["one"] and kept is not None
    assert get(store, delivery_id).post == kept and get(store, delivery_id).state == DeliveryState.POSTED
    assert target.published() == ["one", "one"]


def test_a_refused_post_fails_with_the_reason_and_the_rest_goes_on(config: Config, store: Store) -> None:
    first, second = queue(store, "one"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    refused = PublishError("m.example refused the post: 422 Validation failed: Text too long", transient=False)
    report = run(config, store, Clock(), ScriptedTarget(publish=[refused]))
    delivery = get(store, first)
    assert delivery.state == DeliveryState.FAILED
    assert (delivery.attempts, delivery.last_error) == (1, str(refused))
    assert get(store, second).state == DeliveryState.POSTED
    assert outcomes(report) == [("one", "failed"), ("two", "posted")] and report.events[0].detail == str(refused)
    assert report.failed


def test_attempts_exhausted_fail_the_delivery(config: Config, store: Store) -> None:
    """The last allowed attempt (MAX_ATTEMPTS) failing transiently fails the delivery for good;
    the one before it is still a retry."""
    last, before_last = queue(store, "last"), queue(store, "before last", seen=NOW - timedelta(minutes=30))
    store.requeue(last, epoch(NOW), "m.example answered 503", MAX_ATTEMPTS - 1)
    store.requeue(before_last, epoch(NOW), "m.example answered 503", MAX_ATTEMPTS - 2)
    error = PublishError("m.example answered 503", transient=True)
    report = run(config, store, Clock(), ScriptedTarget(publish=[error, error]))
    delivery = get(store, last)
    assert delivery.state == DeliveryState.FAILED and delivery.attempts == MAX_ATTEMPTS
    assert delivery.last_error == f"gave up after {MAX_ATTEMPTS} attempts: m.example answered 503"
    assert (get(store, before_last).state, get(store, before_last).attempts) == (DeliveryState.QUEUED, MAX_ATTEMPTS - 1)
    assert outcomes(report) == [("last", "failed"), ("before last", "retry")]


def test_an_auth_error_stops_the_account_for_this_run_only(config: Config, store: Store) -> None:
    first = queue(store, "one")
    others = [queue(store, title, seen=NOW - timedelta(minutes=30)) for title in ("two", "three")]
    elsewhere = queue(store, "one", account="n")
    m = ScriptedTarget(publish=[PublishError("m.example refused the token (401)", transient=False, auth=True)])
    n = ScriptedTarget("n")
    report = run(config, store, Clock(), m, n)
    delivery = get(store, first)
    # back in the queue, due at once, the attempt not counted: the token is at fault, not the post
    assert (delivery.state, delivery.attempts) == (DeliveryState.QUEUED, 0)
    assert delivery.last_error == "m.example refused the token (401)"
    assert delivery.next_attempt_at == epoch(NOW)
    assert m.published() == ["one"]  # the account's next deliveries were not attempted
    assert [get(store, other).state for other in others] == [DeliveryState.QUEUED] * 2
    assert report.account_errors == ["account m: m.example refused the token (401)"]
    assert get(store, elsewhere).state == DeliveryState.POSTED  # the other account went on
    assert outcomes(report) == [("one", "posted")] and report.failed


def test_a_rate_limit_blocks_the_account_until_the_reset(config: Config, store: Store) -> None:
    first, second = queue(store, "one"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    reset = NOW + timedelta(minutes=30)
    clock = Clock()
    target = ScriptedTarget(publish=[PublishError("m.example: 429 rate limited", transient=True, retry_at=reset)])
    report = run(config, store, clock, target)
    delivery = get(store, first)
    assert delivery.state == DeliveryState.QUEUED
    assert (delivery.attempts, delivery.next_attempt_at) == (1, epoch(reset))
    assert store.account_state("m").blocked_until == epoch(reset)
    assert store.account_state("m").last_error == "m.example: 429 rate limited"
    assert target.published() == ["one"] and get(store, second).state == DeliveryState.QUEUED
    assert outcomes(report) == [("one", "retry")]
    assert report.account_errors == ["account m: m.example: 429 rate limited; waiting until 2026-11-28 12:30:00 UTC"]

    clock.advance(minutes=10)  # still blocked: nothing is attempted
    blocked = run(config, store, clock, target)
    assert blocked.events == [] and len(target.calls) == 1
    assert blocked.account_errors == ["account m: waiting until 2026-11-28 12:30:00 UTC (m.example: 429 rate limited)"]

    clock.advance(minutes=21)  # past the reset: the account goes on
    after = run(config, store, clock, target)
    assert outcomes(after) == [("one", "posted"), ("two", "posted")] and after.account_errors == []


def test_a_rate_limit_on_the_last_attempt_fails_the_delivery_and_still_blocks_the_account(
    config: Config, store: Store
) -> None:
    """The last allowed attempt answered 429: the delivery has had its attempts, but the
    account's next delivery must not be sent into the rate limit."""
    last, behind = queue(store, "last"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    store.requeue(last, epoch(NOW), "m.example answered 503", MAX_ATTEMPTS - 1)
    reset = NOW + timedelta(minutes=30)
    target = ScriptedTarget(publish=[PublishError("m.example: 429 rate limited", transient=True, retry_at=reset)])
    report = run(config, store, Clock(), target)
    assert outcomes(report) == [("last", "failed")] and len(report.account_errors) == 1
    assert get(store, last).state == DeliveryState.FAILED
    assert store.account_state("m").blocked_until == epoch(reset)
    assert target.published() == ["last"] and get(store, behind).state == DeliveryState.QUEUED


def test_a_blocked_account_is_not_attempted_and_the_others_go_on(config: Config, store: Store) -> None:
    waiting, elsewhere = queue(store, "one"), queue(store, "one", account="n")
    store.update_account("m", blocked_until=epoch(NOW + timedelta(hours=1)), last_error="rate limited")
    m, n = ScriptedTarget(), ScriptedTarget("n")
    report = run(config, store, Clock(), m, n)
    assert m.calls == [] and m.limits_asked == 0
    assert get(store, waiting).state == DeliveryState.QUEUED and get(store, waiting).attempts == 0
    assert report.account_errors == ["account m: waiting until 2026-11-28 13:00:00 UTC (rate limited)"]
    assert get(store, elsewhere).state == DeliveryState.POSTED


def test_an_account_without_a_target_is_left_alone(config: Config, store: Store) -> None:
    """An account that could not start has no target: its deliveries wait, the others go."""
    waiting, elsewhere = queue(store, "one"), queue(store, "one", account="n")
    report = run(config, store, Clock(), ScriptedTarget("n"))
    assert get(store, waiting).state == DeliveryState.QUEUED and get(store, elsewhere).state == DeliveryState.POSTED
    assert report.account_errors == []


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PublishError("m.example is unreachable", transient=True), "account m: m.example is unreachable"),
        (KeyError("configuration"), "account m: cannot read its limits: KeyError: 'configuration'"),
    ],
    ids=["PublishError", "unexpected"],
)
def test_limits_that_cannot_be_read_stop_the_account(config: Config, store: Store, error: Exception, line: str) -> None:
    waiting, elsewhere = queue(store, "one"), queue(store, "one", account="n")
    m = ScriptedTarget(limits=error)
    report = run(config, store, Clock(), m, ScriptedTarget("n"))
    assert m.calls == [] and report.account_errors == [line]
    assert (get(store, waiting).state, get(store, waiting).attempts) == (DeliveryState.QUEUED, 0)
    assert get(store, elsewhere).state == DeliveryState.POSTED


def test_limits_are_read_once_per_run_and_not_when_nothing_is_due(config: Config, store: Store) -> None:
    idle = ScriptedTarget("n")
    queue(store, "one")
    queue(store, "two", seen=NOW - timedelta(minutes=30))
    busy = ScriptedTarget()
    run(config, store, Clock(), busy, idle)
    assert (busy.limits_asked, idle.limits_asked) == (1, 0)


def test_a_maybe_sent_error_resends_with_the_same_key_within_the_window(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    clock = Clock()
    target = ScriptedTarget(publish=[PublishError("m.example timed out", transient=True, maybe_sent=True)])
    report = run(config, store, clock, target)
    delivery = get(store, delivery_id)
    assert delivery.state == DeliveryState.QUEUED
    assert (delivery.attempts, delivery.doubt_since, delivery.next_attempt_at) == (1, epoch(NOW), epoch(NOW) + 60)
    assert outcomes(report) == [("one", "retry")]
    clock.advance(seconds=IN_DOUBT_RESEND_WINDOW)  # the window's last second: still safe to resend
    again = run(config, store, clock, target)
    assert outcomes(again) == [("one", "posted")] and get(store, delivery_id).attempts == 2
    [first, second] = target.calls
    assert first.idempotency_key == second.idempotency_key == delivery_key("m", "a", "id:one")


def test_a_delivery_in_doubt_past_the_window_fails_without_a_resend(config: Config, store: Store) -> None:
    """The server keeps idempotency keys an hour: a resend later could post twice. The window
    counts from the first attempt in doubt, not the latest."""
    delivery_id = queue(store, "one")
    clock = Clock()
    timeout = PublishError("m.example timed out", transient=True, maybe_sent=True)
    target = ScriptedTarget(publish=[timeout, timeout])
    run(config, store, clock, target)
    clock.advance(minutes=30)
    run(config, store, clock, target)
    assert get(store, delivery_id).doubt_since == epoch(NOW)  # kept from the first doubt
    clock.advance(minutes=26)
    report = run(config, store, clock, target)
    delivery = get(store, delivery_id)
    assert delivery.state == DeliveryState.FAILED and delivery.attempts == 2
    assert delivery.last_error is not None and delivery.last_error.startswith(
        "an attempt more than an hour ago got no answer: it may have been posted;"
    )
    assert f"relay queue retry {delivery_id}" in delivery.last_error
    assert report.events[0].detail == "an earlier attempt may have posted and is too old to resend safely"
    assert outcomes(report) == [("one", "failed")] and len(target.published()) == 2


def test_a_bluesky_delivery_is_never_in_doubt_thanks_to_its_record_key(config: Config, store: Store) -> None:
    """A record key makes a resend harmless (the same record), so no window applies."""
    delivery_id = queue(store, "one", account="s")
    clock = Clock()
    target = ScriptedTarget("s", publish=[PublishError("bsky.social timed out", transient=True, maybe_sent=True)])
    run(config, store, clock, target)
    assert get(store, delivery_id).doubt_since is None
    clock.advance(hours=2)
    report = run(config, store, clock, target)
    assert outcomes(report) == [("one", "posted")]
    assert [call.rkey for call in target.calls] == [get(store, delivery_id).rkey] * 2


def interrupt(config: Config, store: Store, clock: Clock, account: str = "m") -> None:
    """A run killed during the send: the delivery stays 'sending', its post stored."""
    with pytest.raises(Interrupted):
        run(config, store, clock, ScriptedTarget(account, publish=[Interrupted()]))


def test_an_interrupted_send_found_on_the_server_is_posted_without_a_resend(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    clock = Clock()
    interrupt(config, store, clock)
    assert (get(store, delivery_id).state, get(store, delivery_id).attempts) == (DeliveryState.SENDING, 1)
    clock.advance(minutes=5)
    target = ScriptedTarget(find=[Receipt("77", "https://m.example/@m/77")])
    report = run(config, store, clock, target)
    delivery = get(store, delivery_id)
    assert target.calls == [Call("find", delivery_key("m", "a", "id:one"), None)]
    assert delivery.state == DeliveryState.POSTED and delivery.attempts == 1
    assert (delivery.remote_id, delivery.remote_url, delivery.posted_at) == (
        "77",
        "https://m.example/@m/77",
        epoch(clock.now),
    )
    assert outcomes(report) == [("one", "posted")]
    assert report.events[0].detail == "confirmed after an interrupted attempt"


@pytest.mark.parametrize(
    "find",
    [None, PublishError("m.example answered 502", transient=True)],
    ids=["not-found", "find-failed"],
)
def test_an_interrupted_send_not_found_is_resent_with_the_same_key(
    config: Config, store: Store, find: PublishError | None
) -> None:
    """find asks first; when the post is not there (or find cannot tell) it is sent again
    with the same key, which the server honours within the window."""
    delivery_id = queue(store, "one")
    clock = Clock()
    interrupt(config, store, clock)
    clock.advance(minutes=5)
    target = ScriptedTarget(find=[find])
    report = run(config, store, clock, target)
    key = delivery_key("m", "a", "id:one")
    assert target.calls == [Call("find", key, None), Call("publish", key, None, "one")]
    assert get(store, delivery_id).state == DeliveryState.POSTED and get(store, delivery_id).attempts == 2
    assert outcomes(report) == [("one", "posted")]


def test_an_interrupted_send_past_the_window_fails_without_a_resend(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    clock = Clock()
    interrupt(config, store, clock)
    clock.advance(seconds=IN_DOUBT_RESEND_WINDOW + 1)
    target = ScriptedTarget()
    report = run(config, store, clock, target)
    assert [call.method for call in target.calls] == ["find"]
    assert get(store, delivery_id).state == DeliveryState.FAILED
    assert outcomes(report) == [("one", "failed")]


def test_an_interrupted_bluesky_send_is_resent_with_its_record_key_even_late(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one", account="s")
    rkey = get(store, delivery_id).rkey
    clock = Clock()
    interrupt(config, store, clock, account="s")
    clock.advance(hours=3)
    target = ScriptedTarget("s")
    report = run(config, store, clock, target)
    assert [(call.method, call.rkey) for call in target.calls] == [("find", rkey), ("publish", rkey)]
    assert outcomes(report) == [("one", "posted")]


def test_an_auth_error_while_checking_an_interrupted_send_stops_the_account(config: Config, store: Store) -> None:
    interrupted = queue(store, "one")
    behind = queue(store, "two", seen=NOW - timedelta(minutes=30))
    clock = Clock()
    interrupt(config, store, clock)
    clock.advance(minutes=5)
    target = ScriptedTarget(find=[PublishError("m.example refused the token (401)", transient=False, auth=True)])
    report = run(config, store, clock, target)
    assert [call.method for call in target.calls] == ["find"]
    assert get(store, interrupted).state == DeliveryState.SENDING  # still unknown: asked again next run
    assert get(store, behind).state == DeliveryState.QUEUED and get(store, behind).attempts == 0
    assert report.account_errors == ["account m: m.example refused the token (401)"] and report.events == []


def test_an_unexpected_error_during_the_send_requeues_the_delivery_in_doubt(config: Config, store: Store) -> None:
    """An error nobody anticipated after the delivery was marked sending: the post may exist."""
    delivery_id, behind = queue(store, "one"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    report = run(config, store, Clock(), ScriptedTarget(publish=[KeyError("id")]))
    delivery = get(store, delivery_id)
    assert delivery.state == DeliveryState.QUEUED
    assert (delivery.attempts, delivery.last_error) == (1, "KeyError: 'id'")
    assert (delivery.next_attempt_at, delivery.doubt_since) == (epoch(NOW) + 60, epoch(NOW))
    assert get(store, behind).state == DeliveryState.POSTED
    assert outcomes(report) == [("one", "retry"), ("two", "posted")]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PublishError("m.example timed out", transient=True, maybe_sent=True), "m.example timed out"),
        (RecursionError("deep"), "RecursionError: deep"),  # unexpected, after the send began
    ],
)
def test_giving_up_on_an_attempt_that_may_have_posted_says_so(
    config: Config, store: Store, error: Exception, reason: str
) -> None:
    """Giving up on a delivery whose last attempt may have landed must not invite a blind
    retry: the reason says to check the account first."""
    delivery_id = queue(store, "one")
    store.requeue(delivery_id, epoch(NOW), "earlier", MAX_ATTEMPTS - 1)
    report = run(config, store, Clock(), ScriptedTarget(publish=[error]))
    delivery = get(store, delivery_id)
    assert delivery.state == DeliveryState.FAILED
    assert delivery.last_error == (
        f"gave up after {MAX_ATTEMPTS} attempts: {reason}; the last attempt may have posted:"
        f" check the account before `relay queue retry {delivery_id}`"
    )
    assert outcomes(report) == [("one", "failed")]


def test_an_unexpected_error_while_rendering_requeues_without_doubt(tmp_path: Path, store: Store) -> None:
    """Nothing was sent, so no doubt and no use of the run's budget (the next delivery goes
    out); the attempt is counted all the same."""
    delivery_id, behind = queue(store, "one"), queue(store, "two", seen=NOW - timedelta(minutes=30))
    config = make_config(tmp_path, max_per_run=1)
    renderer = CountingRenderer(config, fail={"one": ValueError("x")})
    target = ScriptedTarget()
    report = run(config, store, Clock(), target, renderer=renderer)
    delivery = get(store, delivery_id)
    assert (delivery.state, delivery.attempts, delivery.doubt_since) == (DeliveryState.QUEUED, 1, None)
    assert delivery.last_error == "ValueError: x" and target.published() == ["two"]
    assert outcomes(report) == [("one", "retry"), ("two", "posted")]
    assert get(store, behind).state == DeliveryState.POSTED


def test_a_state_error_ends_the_run(config: Config, store: Store) -> None:
    queue(store, "one")
    with pytest.raises(sqlite3.OperationalError):
        run(config, store, Clock(), ScriptedTarget(publish=[sqlite3.OperationalError("database or disk is full")]))


def test_a_render_error_fails_the_delivery_without_using_the_budget(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, max_per_run=1)
    broken = queue(store, "no link", link=None)
    good = queue(store, "two", seen=NOW - timedelta(minutes=30))
    target = ScriptedTarget()
    report = run(config, store, Clock(), target)
    delivery = get(store, broken)
    assert (delivery.state, delivery.attempts, delivery.last_error) == (DeliveryState.FAILED, 0, "render: no link")
    assert (
        outcomes(report) == [("no link", "failed"), ("two", "posted")] and report.events[0].detail == "render: no link"
    )
    assert target.published() == ["two"] and get(store, good).state == DeliveryState.POSTED


def test_a_template_error_fails_the_delivery_with_its_message(config: Config, store: Store) -> None:
    delivery_id = queue(store, "one")
    renderer = CountingRenderer(config, fail={"one": RenderError("template news.j2:3: unexpected '}'")})
    report = run(config, store, Clock(), ScriptedTarget(), renderer=renderer)
    assert get(store, delivery_id).last_error == "render: template news.j2:3: unexpected '}'"
    assert outcomes(report) == [("one", "failed")]


def test_a_delivery_of_a_feed_no_longer_configured_fails(config: Config, store: Store) -> None:
    gone = queue(store, "one", feed="gone")
    target = ScriptedTarget()
    report = run(config, store, Clock(), target)
    assert get(store, gone).state == DeliveryState.FAILED
    assert get(store, gone).last_error == "feed 'gone' is no longer in the configuration"
    assert report.events[0].detail == "feed removed" and target.calls == [] and target.limits_asked == 0


def test_a_duplicate_already_posted_via_another_feed_is_dropped(config: Config, store: Store) -> None:
    shared = "https://news.example/story"
    posted = queue(store, "story", feed="b", link=shared, seen=NOW - timedelta(hours=2))
    store.mark_sending(posted, epoch(NOW - timedelta(hours=2)), Post("mastodon", "m", "story", 5, 500, "fr", shared))
    store.mark_posted(posted, epoch(NOW - timedelta(hours=2)), "1", "https://m.example/@m/1")
    duplicate = queue(store, "story again", feed="a", link=shared + "?utm_source=feed")
    elsewhere = queue(store, "story again", feed="a", link=shared, account="n")  # n has not posted it
    m, n = ScriptedTarget(), ScriptedTarget("n")
    report = run(config, store, Clock(), m, n)
    assert get(store, duplicate).state == DeliveryState.DROPPED and m.calls == []
    assert get(store, duplicate).last_error == "already relayed via feed 'b'"
    assert get(store, elsewhere).state == DeliveryState.POSTED
    assert [(e.account, e.outcome, e.detail) for e in report.events] == [
        ("m", "dropped", "already relayed via feed 'b'"),
        ("n", "posted", ""),
    ]
    assert not report.failed


def test_held_deliveries_are_not_sent(config: Config, store: Store) -> None:
    held = queue(store, "one", state=DeliveryState.HELD)
    target = ScriptedTarget()
    report = run(config, store, Clock(), target)
    assert get(store, held).state == DeliveryState.HELD and target.calls == [] and report.events == []


def test_max_per_run_limits_the_posts_of_one_run(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, max_per_run=2)
    ids = [queue(store, f"item {n}", seen=NOW - timedelta(minutes=60 - n)) for n in range(4)]
    target = ScriptedTarget()
    report = run(config, store, Clock(), target)
    assert target.published() == ["item 0", "item 1"]
    assert [get(store, i).state for i in ids] == [DeliveryState.POSTED] * 2 + [DeliveryState.QUEUED] * 2
    assert report.pacing == {"m": "max_per_run 2"}


def test_a_retry_uses_the_budget_a_refusal_does_not(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, max_per_run=1)
    refused, retried, behind = (queue(store, f"item {n}", seen=NOW - timedelta(minutes=60 - n)) for n in range(3))
    target = ScriptedTarget(
        publish=[
            PublishError("m.example refused the post: 422", transient=False),
            PublishError("m.example answered 503", transient=True),
        ]
    )
    report = run(config, store, Clock(), target)
    assert outcomes(report) == [("item 0", "failed"), ("item 1", "retry")]
    assert [get(store, i).state for i in (refused, retried)] == [DeliveryState.FAILED, DeliveryState.QUEUED]
    assert get(store, behind).state == DeliveryState.QUEUED and get(store, behind).attempts == 0
    assert report.pacing == {"m": "max_per_run 1"}


def test_min_interval_waits_after_the_last_post(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, min_interval="10m")
    queue(store, "one")
    later = queue(store, "two", seen=NOW - timedelta(minutes=30))
    clock = Clock()
    target = ScriptedTarget()
    first = run(config, store, clock, target)
    # min_interval gates a run (README: "a run posts only if the last post is at least this old")
    assert outcomes(first) == [("one", "posted"), ("two", "posted")]
    queue(store, "three", seen=clock.now)
    clock.advance(minutes=4)
    waiting = run(config, store, clock, target)
    assert waiting.events == [] and waiting.pacing == {"m": "min_interval: next post in 6m00s"}
    assert get(store, later).state == DeliveryState.POSTED and len(target.published()) == 2
    clock.advance(minutes=6)
    assert outcomes(run(config, store, clock, target)) == [("three", "posted")]


def test_max_per_day_limits_the_posts_of_a_day(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, max_per_day=2)
    ids = [queue(store, f"item {n}", seen=NOW - timedelta(minutes=60 - n)) for n in range(3)]
    clock = Clock()
    target = ScriptedTarget()
    first = run(config, store, clock, target)
    assert outcomes(first) == [("item 0", "posted"), ("item 1", "posted")]
    assert first.pacing == {"m": "max_per_day 2"}
    clock.advance(hours=1)
    full = run(config, store, clock, target)
    assert full.events == [] and full.pacing == {"m": "max_per_day: 2 posts in the last 24 hours"}
    assert get(store, ids[2]).state == DeliveryState.QUEUED
    clock.advance(hours=23, seconds=1)  # the first posts leave the sliding day
    assert outcomes(run(config, store, clock, target)) == [("item 2", "posted")]


def test_a_feed_past_its_share_of_the_day_leaves_room_for_the_others(tmp_path: Path, store: Store) -> None:
    """max_per_day 4 over two active feeds: a share of 2 each; a's third item waits for what b
    may still post today."""
    config = make_config(tmp_path, max_per_day=4)
    a_ids = [queue(store, f"a {n}", seen=NOW - timedelta(minutes=60 - n)) for n in range(3)]
    queue(store, "b 0", feed="b", seen=NOW - timedelta(minutes=50))
    target = ScriptedTarget()
    report = run(config, store, Clock(), target)
    assert target.published() == ["a 0", "b 0", "a 1"]
    assert get(store, a_ids[2]).state == DeliveryState.QUEUED and get(store, a_ids[2]).attempts == 0
    assert report.pacing == {"m": "feed a has had its share of max_per_day; others go first"}


def test_pacing_applies_to_each_account_apart(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, max_per_run=1)
    for title in ("one", "two"):
        for account in ("m", "n"):
            queue(store, title, account=account, seen=NOW - timedelta(minutes=60 if title == "one" else 30))
    m, n = ScriptedTarget(), ScriptedTarget("n")
    report = run(config, store, Clock(), m, n)
    assert (m.published(), n.published()) == (["one"], ["one"])
    assert report.pacing == {"m": "max_per_run 1", "n": "max_per_run 1"}
