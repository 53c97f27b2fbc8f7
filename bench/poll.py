"""First and second poll of N feeds x 20 items from a local feed server that adds latency.

    python bench/poll.py [--feeds 200] [--latency 0.05]

First poll: fetch, parse (in processes), record. Second poll: the server answers 304 to
every conditional GET, so nothing is parsed."""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from common import timed
from feedserve import BenchServer, rss_feed

from relay.config import load_config
from relay.fetch import make_client
from relay.poll import poll_each, record_poll
from relay.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    # one server (host:port) per feed, like real sites: relay allows 2 connections per host
    servers = [BenchServer(latency=args.latency) for _ in range(args.feeds)]
    now = datetime.now(UTC)
    lines = ["feeds:"]
    for n, server in enumerate(servers):
        url = server.feed(f"/feed{n}.xml", rss_feed(args.items, now=now, prefix=f"f{n}", host=f"site{n}.example"))
        lines.append(f"  - name: feed{n}\n    url: {url}")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    (tmp / "feeds.yaml").write_text("\n".join(lines) + "\n")
    config = load_config(tmp / "feeds.yaml", environ={})
    store = Store.open(tmp / "state")

    def one_poll() -> None:
        with make_client() as client:
            for feed_poll in poll_each(config, store, client, now, feeds=config.feeds, conditional=True):
                record_poll(store, config, feed_poll, now)

    first = timed(one_poll)
    hits_first = sum(server.requests for server in servers)
    second = timed(one_poll)
    states = store.feed_states().values()
    print(f"poll: {args.feeds} feeds x {args.items} items, {args.latency * 1000:.0f} ms latency per request")
    print(f"  first poll (fetch + parse + record):  {first:6.2f} s  ({hits_first} requests)")
    print(f"  second poll (all 304, nothing parsed): {second:6.2f} s")
    print(
        f"  items stored: {store.db.execute('SELECT COUNT(*) FROM items').fetchone()[0]}, feeds ok: {sum(1 for s in states if not s.last_error)}"
    )
    for server in servers:
        server.stop()


if __name__ == "__main__":
    main()
