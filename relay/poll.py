"""Polling: fetch the due feeds, parse them (in worker processes, each within its time
limit), decide what is new for each account, and record it: items, their deliveries and the
feed's state, one transaction per feed, feed by feed as each comes in (poll_each)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from relay import schedule
from relay.config import Config, Feed, resolve_feed_url
from relay.dedupe import fingerprint
from relay.errors import ParseError
from relay.models import DeliveryState, Item, ParsedFeed, item_payload
from relay.store import FeedOk, FeedState, ItemRow, Store, epoch

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import httpx

    from relay.decide import ItemDecision, Known
    from relay.fetch import FetchResult

FLOOD_WINDOW = 86400  # the flood guard's sliding day, in seconds


@dataclass
class FeedReport:
    name: str
    url: str
    status: str  # ok | not_modified | error
    error: str | None = None
    entries: int = 0
    new: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class FeedPoll:
    feed: Feed
    report: FeedReport
    fetched: FetchResult | None = None
    parsed: ParsedFeed | None = None
    body_hash: bytes | None = None
    decisions: list[ItemDecision] = field(default_factory=list)
    hold_waiting: str | None = None  # the 24-hour flood guard tripped: hold what still waits too


REORDER_LIMIT = 64  # feeds kept back behind a slow one before order gives way to memory


def poll_each(
    config: Config,
    store: Store | None,
    client: httpx.Client,
    now: datetime,
    *,
    feeds: Sequence[Feed],
    conditional: bool,
    all_items: bool = False,
    fast_parser: bool = True,
) -> Iterator[FeedPoll]:
    """Fetch, parse and decide for feeds, yielding each feed's FeedPoll as its result comes
    in, so that the caller records it and lets it go: what is held at once is bounded by the
    downloads and parses in flight, not by the number of feeds. A body is dropped once parsed.

    Feeds are decided and yielded in the order of `feeds` (an article two feeds share is
    credited as feeds.yaml orders them), unless more than REORDER_LIMIT feeds came in behind a
    slow one: those then go on in the order they came. Writes nothing; each decision reads the
    state as it was when the poll began, and this poll's earlier decisions. fast_parser lets
    feedparser-rs read the feeds, when installed (Context.fast_parser)."""
    from relay.fetch import FetchRequest, fetch_each

    states = store.feed_states() if store else {}
    requests = []
    for feed in feeds:
        state = states.get(feed.name)
        same = conditional and state is not None and state.url == feed.url
        requests.append(
            FetchRequest(
                name=feed.name,
                url=resolve_feed_url(config, feed.fetch_url),
                etag=state.etag if same and state else None,
                last_modified=state.last_modified if same and state else None,
                max_bytes=feed.max_bytes,
                timeout=feed.timeout.total_seconds(),
            )
        )
    decider = _Decider(store, states, now, all_items=all_items)
    waiting: dict[int, FeedPoll] = {}  # being parsed
    ready: dict[int, FeedPoll] = {}  # to decide, in order
    released: set[int] = set()
    following = 0  # the next feed in order

    def settle(index: int, parsed: ParsedFeed | str) -> None:
        feed_poll = waiting.pop(index)
        if isinstance(parsed, str):
            feed_poll.report.status = "error"
            feed_poll.report.error = parsed
        else:
            feed_poll.parsed = _without_secrets(parsed, config)
            feed_poll.report.entries = parsed.entries
            feed_poll.report.warnings.extend(parsed.warnings)
        ready[index] = feed_poll

    def release(everything: bool = False) -> Iterator[FeedPoll]:
        nonlocal following
        while ready:
            while following in released:
                following += 1
            if following in ready:
                index = following
            elif everything or len(ready) > REORDER_LIMIT:
                index = min(ready)
            else:
                return
            feed_poll = ready.pop(index)
            released.add(index)
            decider.decide(feed_poll)
            yield feed_poll

    with _Parsers(usable_cpus()) as parsers:
        fetched = fetch_each(requests, client, now=lambda: now, allow_private=config.network.allow_private)
        for index, result in fetched:
            feed = feeds[index]
            feed_poll = FeedPoll(feed, FeedReport(feed.name, feed.url, result.status, error=result.error))
            if result.status != "ok":
                feed_poll.fetched = result
                ready[index] = feed_poll
            else:
                feed_poll.body_hash = hashlib.blake2b(result.body, digest_size=16).digest()
                feed_poll.fetched = dataclasses.replace(result, body=b"")  # the parser has it now
                state = states.get(feed.name)
                if conditional and state and state.body_hash == feed_poll.body_hash and state.url == feed.url:
                    feed_poll.report.status = "not_modified"  # same bytes as last time: skip parsing
                    feed_poll.report.entries = state.entries or 0
                    ready[index] = feed_poll
                else:
                    waiting[index] = feed_poll
                    base = _base_url(result.final_url or result.url, config)
                    # entries the state knows are only skipped: their text is never cleaned (an
                    # older one missing here is parsed whole, then skipped as seen by decide)
                    known = store.feed_key_hashes(feed.name) if store and not all_items else frozenset()
                    parsers.submit(index, ParseJob(result, base, feed.timeout.total_seconds(), known, fast_parser))
            del result
            # no more bodies wait than there are parsers: downloads pause while they catch up
            for parsed_index, parsed in parsers.finished(block=parsers.backlog > parsers.size):
                settle(parsed_index, parsed)
            yield from release()
        while parsers.pending:
            for parsed_index, parsed in parsers.finished(block=True):
                settle(parsed_index, parsed)
            yield from release()
    yield from release(everything=True)


def _base_url(url: str, config: Config) -> str:
    """The feed's address as a base for its relative links, without a user name or password,
    and without its query and fragment when they hold a secret from ${VAR}: a private feed's
    credentials must not end up in item links (and from there in posts)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    if _secret_in(parts.query + parts.fragment, config):
        parts = parts._replace(query="", fragment="")
    return urlunsplit(parts)


def _secret_in(text: str, config: Config) -> str | None:
    """The ${VAR} whose value text contains, if any."""
    return next((variable for value, variable in config.secrets if value in text), None)


def _without_secrets(parsed: ParsedFeed, config: Config) -> ParsedFeed:
    """A relative link resolved against a private feed's address (a token in its path) would
    post the token: such an item is skipped with the reason, such an image left out."""
    if not config.secrets:
        return parsed
    items = []
    for item in parsed.items:
        if item.link and (variable := _secret_in(item.link, config)):
            item = dataclasses.replace(
                item, link=None, skip_reason=f"its link would reveal ${{{variable}}} of the feed's URL"
            )
        if item.image and _secret_in(item.image, config):
            item = dataclasses.replace(item, image=None, image_alt="")
        items.append(item)
    return dataclasses.replace(parsed, items=tuple(items))


@dataclass(frozen=True)
class ParseJob:
    fetched: FetchResult
    base_url: str
    timeout: float
    known: frozenset[bytes] = frozenset()  # the feed's item keys the state holds: not cleaned again
    fast: bool = True  # feedparser-rs may read it (Context.fast_parser)


def _parse_one(job: ParseJob) -> ParsedFeed | str:
    from relay.parse import parse_feed

    try:
        return parse_feed(
            job.fetched.body,
            feed_name=job.fetched.name,
            url=job.base_url,
            content_type=job.fetched.content_type,
            known=job.known,
            fast=job.fast,
        )
    except ParseError as exc:
        return str(exc)
    except Exception as exc:
        return f"cannot parse: {type(exc).__name__}: {exc}"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count: Python
    3.13's os.process_cpu_count where there is one, else the affinity mask."""
    counted = getattr(os, "process_cpu_count", None)
    if counted is not None:
        return max(1, int(counted() or 1))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _serve(connection: Connection, parent_end: Connection, parent: int) -> None:
    """A parser process: one job at a time, until its pipe closes."""
    parent_end.close()  # else its own copy keeps the pipe open when relay's process is gone
    _die_with(parent)
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        connection.send(_parse_one(job))


def _die_with(parent: int) -> None:
    """On Linux, the kernel kills this process when relay's dies (cron's timeout, the OOM
    killer, a SIGKILL): a parser kept busy by a hostile feed must not live on, holding the
    run lock it inherited and keeping every later run out."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's end still stops an idle parser
        pass
    if os.getppid() != parent:  # relay's process died before the kernel was told
        os._exit(0)


_PR_SET_PDEATHSIG = 1


@dataclass
class _Parser:
    process: BaseProcess
    connection: Connection


class _Parsers:
    """Processes that parse one feed at a time each, started as work comes in, at most one
    per usable CPU (one for a run with one changed feed). feedparser holds the GIL and has
    no time limit of its own, and a hostile body can keep it in a C regex for hours: a parse
    that overruns its feed's timeout is stopped by killing its process, that feed is an
    error, the others go on. Parsing in the cron process itself would leave it no way out."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.idle: list[_Parser] = []
        self.busy: dict[int, tuple[_Parser, int, float, float]] = {}  # fd → parser, index, deadline, timeout
        self.queue: deque[tuple[int, ParseJob]] = deque()
        self.refused = 0  # parsers in a row that died before taking a job
        self.lost: list[tuple[int, str]] = []  # jobs no parser could take, with the error

    def __enter__(self) -> _Parsers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.queue.clear()
        for parser in [*self.idle, *(busy[0] for busy in self.busy.values())]:
            self._stop(parser)
        self.idle.clear()
        self.busy.clear()

    @property
    def backlog(self) -> int:
        """Jobs (and their bodies) waiting for a parser."""
        return len(self.queue)

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.busy) + len(self.lost)

    def submit(self, index: int, job: ParseJob) -> None:
        self.queue.append((index, job))
        self._dispatch()

    def finished(self, *, block: bool) -> list[tuple[int, ParsedFeed | str]]:
        """The parses that ended (each an index and a ParsedFeed or the error); with block,
        waits until at least one ends or overruns."""
        results: list[tuple[int, ParsedFeed | str]] = [*self.lost]
        self.lost.clear()
        if not self.busy:
            return results
        from multiprocessing.connection import Connection, wait

        timeout = 0.0
        if block and not results:
            timeout = max(0.0, min(deadline for _, _, deadline, _ in self.busy.values()) - time.monotonic())
        for connection in wait([busy[0].connection for busy in self.busy.values()], timeout):
            assert isinstance(connection, Connection)
            parser, index, _, _ = self.busy.pop(connection.fileno())
            try:
                results.append((index, connection.recv()))
                self.idle.append(parser)
            except (EOFError, OSError):  # the process died (out of memory, killed)
                results.append((index, "cannot parse: the parser process stopped"))
                self._stop(parser)
        moment = time.monotonic()
        for key, (parser, index, deadline, limit) in list(self.busy.items()):
            if deadline <= moment:
                del self.busy[key]
                self._stop(parser)
                results.append((index, f"parsing took longer than {limit:g}s (timeout): a broken or hostile feed"))
        self._dispatch()
        return results

    def _dispatch(self) -> None:
        while self.queue:
            if self.idle:
                parser = self.idle.pop()
            elif len(self.busy) < self.size:
                parser = self._start()
            else:
                return
            index, job = self.queue[0]
            try:
                parser.connection.send(job)
            except OSError:  # the parser died (the OOM killer): another one takes the job
                self._stop(parser)
                self.refused += 1
                if self.refused >= 3:  # no parser stays alive: the feed is an error, not a loop
                    self.queue.popleft()
                    self.lost.append((index, "cannot parse: no parser process could take the feed"))
                    self.refused = 0
                continue
            self.refused = 0
            self.queue.popleft()
            self.busy[parser.connection.fileno()] = (parser, index, time.monotonic() + job.timeout, job.timeout)

    def _start(self) -> _Parser:
        import multiprocessing

        # what a parser runs is imported here, before the fork: a fetch thread importing a
        # module at the moment of the fork would leave that module's lock taken in the child
        import relay.parse  # noqa: F401

        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, ours, os.getpid()), daemon=True)
        process.start()
        theirs.close()
        return _Parser(process, ours)

    @staticmethod
    def _stop(parser: _Parser) -> None:
        # killed, never asked to exit: a forked process must not run the finalisers of the
        # objects it shares with this one (the state's database connection)
        parser.process.kill()
        parser.process.join()
        parser.connection.close()


def decide_all(
    polls: Sequence[FeedPoll],
    store: Store | None,
    states: dict[str, FeedState],
    now: datetime,
    *,
    all_items: bool = False,
) -> None:
    """For each new item of each parsed feed and each account: post, hold, or skip with a
    reason, feed after feed, as poll_each decides them."""
    decider = _Decider(store, states, now, all_items=all_items)
    for feed_poll in polls:
        decider.decide(feed_poll)


class _Decider:
    """decide() for one feed at a time, as each comes in. What the state knows is read per
    feed, as it was before this poll recorded anything (items and deliveries it added are
    left out), and the articles this poll already sends to an account are carried from one
    feed to the next: the same decisions as for all the feeds at once."""

    def __init__(self, store: Store | None, states: dict[str, FeedState], now: datetime, *, all_items: bool) -> None:
        self.store = store
        self.states = states
        self.now = now
        self.all_items = all_items
        self.batch: dict[tuple[bytes, str], str] = {}
        self.before = store.last_item_id() if store else 0

    def decide(self, feed_poll: FeedPoll) -> None:
        from relay.decide import decide

        if feed_poll.parsed is None:
            return
        feeds: list[tuple[Feed, Sequence[Item]]] = [(feed_poll.feed, feed_poll.parsed.items)]
        known = _known(self.store, feeds, self.states, self.now, all_items=self.all_items, before=self.before)
        (result,) = decide(feeds, known, self.now, all_items=self.all_items, batch=self.batch)
        feed_poll.decisions = result.decisions
        feed_poll.report.new = len(result.decisions)
        feed_poll.hold_waiting = result.hold_waiting
        if result.flood:
            feed_poll.report.warnings.append(result.flood)


def _known(
    store: Store | None,
    feeds: list[tuple[Feed, Sequence[Item]]],
    states: dict[str, FeedState],
    now: datetime,
    *,
    all_items: bool,
    before: int,
) -> Known:
    from relay.decide import Known

    first_poll = frozenset(
        feed.name for feed, _ in feeds if (state := states.get(feed.name)) is None or state.last_ok_at is None
    )
    if store is None or all_items:
        return Known(first_poll=first_poll)
    canonicals = {feed.name: [fingerprint(i.canonical_url) for i in items if i.canonical_url] for feed, items in feeds}
    return Known(
        keys={
            feed.name: frozenset(store.known_keys(feed.name, [fingerprint(i.key) for i in items]))
            for feed, items in feeds
        },
        first_poll=first_poll,
        recent=store.recent_item_counts(
            [feed.name for feed, _ in feeds if feed.name not in first_poll], epoch(now) - FLOOD_WINDOW
        ),
        seen_elsewhere={
            (name, canonical): other
            for name in first_poll
            for canonical, other in store.seen_elsewhere(canonicals.get(name, []), name, before=before).items()
        },
        relayed=store.relayed((c for values in canonicals.values() for c in values), before=before),
    )


def delivery_key(account: str, feed: str, key: str) -> str:
    return hashlib.sha256(f"{account}\0{feed}\0{key}".encode()).hexdigest()[:40]


class Recorder:
    """record_poll for each feed as it comes in, except that the state of a feed that
    brought nothing new (a 304, an unchanged body) waits and is written with others,
    STATES_PER_WRITE in one statement, the rest when the recorder closes. With many fetch
    threads holding the GIL, each statement of the recording thread waits for it: a
    thousand feeds answering 304 took a second to record one by one. A crash loses at most
    the states waiting: those feeds are polled again at the next run, and answer 304 again."""

    STATES_PER_WRITE = 100

    def __init__(self, store: Store, config: Config, now: datetime, *, seed: bool = False) -> None:
        self.store, self.config, self.now, self.seed = store, config, now, seed
        self._pending: list[FeedOk] = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def record(self, feed_poll: FeedPoll) -> None:
        record_poll(self.store, self.config, feed_poll, self.now, seed=self.seed, pending=self._pending)
        if len(self._pending) >= self.STATES_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.store.save_feeds_ok(self._pending)
            self._pending = []


def record_poll(
    store: Store,
    config: Config,
    feed_poll: FeedPoll,
    now: datetime,
    *,
    seed: bool = False,
    pending: list[FeedOk] | None = None,
) -> None:
    """One transaction per feed: new items and their deliveries, then the feed's ETag, so a
    later 304 can never lose an item. A feed with nothing new only has its state saved, in
    one statement, or added to `pending` for the caller to save with others (Recorder)."""
    from relay.targets import record_key

    feed = feed_poll.feed
    now_s = epoch(now)
    result = feed_poll.fetched
    if feed_poll.report.status == "error":
        state = store.feed_state(feed.name)
        failures = (state.consecutive_failures if state else 0) + 1
        retry_at = epoch(result.retry_after) if result and result.retry_after else None
        due = schedule.next_due_after_failure(feed, failures, now_s, retry_at)
        # kept in the state and shown by status: no secret
        error = config.redact(feed_poll.report.error or "error")
        store.record_feed_error(feed.name, feed.url, error, now_s, due)
        return
    feed_title = feed_poll.parsed.title if feed_poll.parsed else ""

    def row(decision: ItemDecision) -> ItemRow:
        item = decision.item
        return ItemRow(
            feed.name,
            decision.key_hash,
            fingerprint(item.canonical_url) if item.canonical_url else None,
            item.title,
            item.link,
            epoch(item.published) if item.published else None,
            now_s,
            # the feed's title travels with the item, so run renders what preview showed
            {**item_payload(item), "feed_title": feed_title},
        )

    saved = FeedOk(
        feed.name,
        feed.url,
        result.etag if result else None,
        result.last_modified if result else None,
        feed_poll.body_hash,
        now_s,
        schedule.next_due_after_success(feed, now_s),
        feed_poll.parsed.entries if feed_poll.parsed else None,
    )
    holding = None if seed else feed_poll.hold_waiting
    if not feed_poll.decisions and not holding:
        # nothing new (a 304, an unchanged body): its state alone, one statement
        if pending is None:
            store.save_feeds_ok([saved])
        else:
            pending.append(saved)
        return
    delivered = (
        [] if seed else [d for d in feed_poll.decisions if any(a in ("post", "hold") for a, _ in d.accounts.values())]
    )
    with store.transaction():
        # items only marked seen (a seed, a first poll's backlog) in one statement
        chosen = {id(decision) for decision in delivered}
        if len(chosen) < len(feed_poll.decisions):
            store.insert_items(row(d) for d in feed_poll.decisions if id(d) not in chosen)
        for decision in delivered:
            item = decision.item
            item_id = store.insert_item(*row(decision))
            for account, (action, _) in decision.accounts.items():
                if action not in ("post", "hold"):
                    continue
                store.insert_delivery(
                    item_id,
                    account,
                    DeliveryState.QUEUED if action == "post" else DeliveryState.HELD,
                    delivery_key(account, feed.name, item.key),
                    record_key(config.accounts[account], now),
                    now_s,
                )
        if holding:
            store.hold_waiting(feed.name, holding)
        store.save_feeds_ok([saved])
