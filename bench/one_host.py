"""Many feeds on one host, all 304: relay's fetch of N feeds (20 items each) that all live on
one host, the second poll (every conditional GET gets 304), with a latency on every answer,
over HTTP/2 (hypercorn over TLS, a self-signed CA) and over HTTP/1.1 (hypercorn over TLS
with HTTP/2 switched off, and bench/feedserve's plain HTTP server). Reports the time of the
poll and the connections the server saw.

    python bench/one_host.py [--feeds 200] [--latency 0.05] [--runs 3] [--streams 16]

HTTP/1.1 keeps relay's 2 connections per host, so N feeds take about N / 2 x latency (5 s
for 200 feeds at 50 ms): the goal of 1 s is for hosts that speak HTTP/2."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from common import timed
from feedserve import BenchServer, TlsBenchServer, rss_feed

from relay import fetch
from relay.fetch import FetchRequest, fetch_all, make_client


def poll(server: BenchServer | TlsBenchServer, feeds: int, runs: int) -> tuple[list[float], int, int, str]:
    """A first poll for the ETags, then `runs` polls with them, each on a new client (a new
    relay run); the times, the connections and requests of the last one, its protocol."""
    now = datetime.now(UTC)
    urls = [
        server.feed(f"/feed{n}.xml", rss_feed(20, now=now, prefix=f"f{n}", host="one.example")) for n in range(feeds)
    ]
    verify = server.client_context() if isinstance(server, TlsBenchServer) else None
    with make_client(verify=verify) as client:
        first = fetch_all([FetchRequest(f"feed{n}", url) for n, url in enumerate(urls)], client)
    assert all(result.status == "ok" for result in first), {result.error for result in first}
    conditional = [FetchRequest(r.name, r.url, etag=r.etag) for r in first]
    times = []
    results = []
    for _ in range(runs):
        if isinstance(server, TlsBenchServer):
            server.reset()
        else:
            server.requests = server.connections = 0

        def again() -> None:
            nonlocal results
            with make_client(verify=verify) as client:
                results = fetch_all(conditional, client)

        times.append(timed(again))
    assert all(result.status == "not_modified" for result in results), {result.error for result in results}
    return times, server.connections, server.requests, results[0].http_version


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=fetch.PER_HTTP2_HOST, help="streams per HTTP/2 host")
    args = parser.parse_args()
    fetch.PER_HTTP2_HOST = args.streams
    print(
        f"one host: {args.feeds} feeds x 20 items, all 304 (second poll), "
        f"{args.latency * 1000:.0f} ms latency per answer, {args.streams} streams per HTTP/2 host"
    )
    servers: list[tuple[str, BenchServer | TlsBenchServer]] = [
        ("HTTP/2, TLS (hypercorn)", TlsBenchServer(http2=True, latency=args.latency)),
        ("HTTP/1.1, TLS (hypercorn)", TlsBenchServer(http2=False, latency=args.latency)),
        ("HTTP/1.1, plain (http.server)", BenchServer(latency=args.latency)),
    ]
    for label, server in servers:
        started = time.perf_counter()
        try:
            times, connections, requests, version = poll(server, args.feeds, args.runs)
        finally:
            server.stop()
        print(
            f"  {label:31} {statistics.median(times):6.2f} s median, best {min(times):.2f} s of {len(times)}"
            f"  ({requests} requests over {connections} connection{'s' * (connections != 1)}, {version})"
            f"  [{time.perf_counter() - started:.0f} s with setup]"
        )


if __name__ == "__main__":
    main()
