"""Polling as a stream (issue 13): each feed is decided and handed on as its result comes
in, in feeds.yaml's order, its body let go once parsed; parser processes start as work
comes, one per usable CPU at most; a parser that dies or overruns costs only its feed. The
decisions are the ones made for all the feeds at once."""

import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay import poll
from relay.config import Config, load_config
from relay.fetch import make_client
from relay.poll import FeedPoll, poll_each, record_poll
from relay.store import Store
from tests.support import feedserver as fs
from tests.support.feeds import numbered
from tests.support.relayrun import relay_process

NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)


def configure(tmp_path: Path, urls: dict[str, str]) -> Config:
    feeds = "".join(f"  - name: {name}\n    url: {url}\n" for name, url in urls.items())
    (tmp_path / "feeds.yaml").write_text(
        "defaults:\n  backfill: 2\n  max_age: 3650d\naccounts:\n  m:\n    platform: mastodon\n"
        f"    instance: https://m.example\n    token: ${{T}}\nfeeds:\n{feeds}"
    )
    return load_config(tmp_path / "feeds.yaml", environ={"T": "t"})


def slow(body: bytes, seconds: float) -> fs.Handler:
    return lambda request: fs.Response(200, body, {"Content-Type": "application/rss+xml"}, delay=seconds)


def polled(config: Config, store: Store | None = None, *, conditional: bool = False) -> list[FeedPoll]:
    with make_client() as client:
        return list(poll_each(config, store, client, NOW, feeds=config.feeds, conditional=conditional))


def test_feeds_come_in_feeds_yaml_order_and_their_bodies_are_let_go(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    urls = {"first": feed_server.add("/first", slow(numbered(3, prefix="first", now=NOW), 0.6))}
    urls |= {f"f{n}": feed_server.feed(f"/f{n}", numbered(3, prefix=f"f{n}", now=NOW)) for n in range(4)}
    results = polled(configure(tmp_path, urls))
    assert [p.feed.name for p in results] == ["first", "f0", "f1", "f2", "f3"]
    assert all(p.report.status == "ok" and p.parsed and len(p.parsed.items) == 3 for p in results)
    assert all(p.fetched is not None and p.fetched.body == b"" for p in results)
    assert [p.report.new for p in results] == [3] * 5


def test_a_slow_feed_holds_back_no_more_than_the_reorder_limit(
    tmp_path: Path, feed_server: fs.FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poll, "REORDER_LIMIT", 2)
    urls = {"late": feed_server.add("/late", slow(numbered(2, prefix="late", now=NOW), 3.0))}
    urls |= {f"f{n}": feed_server.feed(f"/f{n}", numbered(2, prefix=f"f{n}", now=NOW)) for n in range(6)}
    names = [p.feed.name for p in polled(configure(tmp_path, urls))]
    # the fast feeds come in on the host's other connection while the first is on its way:
    # once more than 2 wait behind it, they go on (how many depends on the machine's speed)
    assert names.index("late") >= 1 and sorted(names) == sorted(urls)
    assert [name for name in names if name != "late"] == [f"f{n}" for n in range(6)]


def test_parsers_start_as_work_comes_one_per_usable_cpu_at_most(
    tmp_path: Path, feed_server: fs.FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []
    start = poll._Parsers._start

    def counted(self: poll._Parsers) -> poll._Parser:
        started.append(1)
        return start(self)

    monkeypatch.setattr(poll._Parsers, "_start", counted)
    one = configure(tmp_path, {"only": feed_server.feed("/only", numbered(2, now=NOW))})
    polled(one)
    assert len(started) == 1
    started.clear()
    many = configure(
        tmp_path, {f"f{n}": feed_server.feed(f"/f{n}", numbered(2, prefix=f"f{n}", now=NOW)) for n in range(8)}
    )
    monkeypatch.setattr(poll, "usable_cpus", lambda: 1)
    polled(many)
    assert len(started) == 1
    started.clear()
    monkeypatch.setattr(poll, "usable_cpus", lambda: 2)
    polled(many)
    assert 1 <= len(started) <= 2


def test_nothing_to_parse_starts_no_parser(
    tmp_path: Path, feed_server: fs.FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(tmp_path, {"a": feed_server.feed("/a", numbered(2, now=NOW))})
    store = Store.open(tmp_path / "state")
    for feed_poll in polled(config, store):
        record_poll(store, config, feed_poll, NOW)
    monkeypatch.setattr(poll._Parsers, "_start", lambda self: pytest.fail("a parser was started"))
    [again] = polled(config, store, conditional=True)
    assert again.report.status == "not_modified"


def test_a_parser_that_dies_costs_only_its_feed(
    tmp_path: Path, feed_server: fs.FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = poll._parse_one

    def dying(job: poll.ParseJob) -> object:
        if job.fetched.name == "bad":
            os._exit(3)  # the process ends at once, as when the kernel kills it for its memory
        return parse(job)

    monkeypatch.setattr(poll, "_parse_one", dying)  # the forked parsers inherit it
    urls = {name: feed_server.feed(f"/{name}", numbered(2, prefix=name, now=NOW)) for name in ("a", "bad", "c", "d")}
    results = {p.feed.name: p.report for p in polled(configure(tmp_path, urls))}
    assert results["bad"].status == "error" and results["bad"].error == "cannot parse: the parser process stopped"
    assert [results[name].status for name in ("a", "c", "d")] == ["ok"] * 3


def test_an_article_two_new_feeds_share_is_credited_to_the_first_as_each_feed_is_recorded(
    tmp_path: Path, feed_server: fs.FeedServer
) -> None:
    """Each feed is recorded before the next is decided: the second feed must still see the
    shared article as relayed by the first in this poll, not as an item another feed held
    before (which would mark it seen for a renamed feed)."""
    body = numbered(1, prefix="shared", host="ally.example", now=NOW)
    urls = {"a": feed_server.feed("/a", body), "b": feed_server.feed("/b", body)}
    config = configure(tmp_path, urls)
    store = Store.open(tmp_path / "state")
    decided = {}
    for feed_poll in polled(config, store):
        record_poll(store, config, feed_poll, NOW)
        decided[feed_poll.feed.name] = [(d.reason, d.accounts) for d in feed_poll.decisions]
    assert decided == {
        "a": [(None, {"m": ("post", None)})],
        "b": [(None, {"m": ("skip", "already relayed via feed 'a'")})],
    }


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_parser_busy_with_a_hostile_feed_dies_with_a_killed_run(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    """cron's timeout or the OOM killer SIGKILLs relay while a parser is held by a hostile
    feed (a 64 KB <author> keeps feedparser's e-mail regex busy for seconds): the parser
    goes with it, and does not keep the run lock it inherited from the next run."""
    hostile = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title><item><title>x</title>"
        f"<link>https://example.org/1</link><guid>1</guid><author>{'a' * 64_000}</author></item></channel></rss>"
    ).encode()
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  timeout: 60s\naccounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n"
        f"    token: ${{T}}\nfeeds:\n  - name: hostile\n    url: {feed_server.add('/h', fs.static(hostile))}\n"
    )
    env = {"T": "t", "RELAY_STATE_DIR": str(tmp_path / "state"), "RELAY_PARSER": "feedparser"}
    run = relay_process("seed", "-c", str(config), env=env)
    deadline = time.monotonic() + 20
    parsers: list[int] = []
    while not parsers and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
        parsers = _children(run.pid)
    assert parsers, "no parser process was seen"
    time.sleep(0.3)  # it has the body and is parsing
    run.kill()
    run.wait()  # not communicate(): a parser that lives on holds relay's output pipes open
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in parsers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in parsers)
    with open(tmp_path / "state" / "relay.lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while anything holds it
    assert run.stdout and run.stderr
    run.stdout.close()
    run.stderr.close()


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_changed_feed_hands_on_only_its_new_entries(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    """The parser is told which entries the state knows: they are not cleaned or decided again."""
    bodies = {"now": numbered(3, now=NOW)}
    url = feed_server.add(
        "/a", lambda request: fs.Response(200, bodies["now"], {"Content-Type": "application/rss+xml"})
    )
    config = configure(tmp_path, {"a": url})
    store = Store.open(tmp_path / "state")
    for feed_poll in polled(config, store):
        record_poll(store, config, feed_poll, NOW)
    bodies["now"] = numbered(4, now=NOW)  # one entry more
    [again] = polled(config, store, conditional=True)
    assert again.report.entries == 4 and again.parsed is not None
    assert [item.title for item in again.parsed.items] == ["item 3"]
    assert [d.item.title for d in again.decisions] == ["item 3"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_parsers_follow_the_cpus_this_process_may_use() -> None:
    """A process pinned to one CPU (taskset, a container's cpuset) gets one parser, whatever
    the machine has: os.cpu_count() would say otherwise."""
    script = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from relay.poll import usable_cpus; print(usable_cpus(), os.cpu_count())"
    )
    import subprocess
    import sys

    pinned, machine = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert pinned == "1"
    assert int(machine) >= 1


def test_a_parser_that_died_while_idle_is_replaced() -> None:
    """The OOM killer can take an idle parser: the next feed goes to a new one, not to an
    error that ends the poll."""
    from relay.fetch import FetchResult

    body = numbered(2, now=NOW)
    job = poll.ParseJob(
        FetchResult(name="a", url="https://example.org/feed", status="ok", body=body), "https://example.org/feed", 30
    )
    results: list[tuple[int, object]] = []
    with poll._Parsers(1) as parsers:
        parsers.submit(0, job)
        while parsers.pending:
            results += parsers.finished(block=True)
        [idle] = parsers.idle
        idle.process.kill()
        idle.process.join()
        parsers.submit(1, job)
        while parsers.pending:
            results += parsers.finished(block=True)
    assert [index for index, _ in results] == [0, 1]
    assert not any(isinstance(result, str) for _, result in results), results


def test_the_keys_handed_to_the_parser_are_the_feeds_newest_thousand(tmp_path: Path) -> None:
    """A feed's history is not bounded; what goes to the parser is (an older entry the feed
    still shows is parsed whole, then skipped as seen when deciding)."""
    store = Store.open(tmp_path / "state")
    with store.transaction():
        for n in range(1500):
            store.insert_item("f", n.to_bytes(16, "big"), None, f"t{n}", None, None, 0.0, {})
    known = store.feed_key_hashes("f")
    assert len(known) == 1000 and (1499).to_bytes(16, "big") in known and (0).to_bytes(16, "big") not in known
