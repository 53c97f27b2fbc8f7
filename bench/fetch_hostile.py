"""relay's fetcher against hostile servers, in process: how much the peak memory grows over
three gzip bombs and three 40 MB bodies (a 10 MB cap each), then how long fetching a good
feed beside eight hostile ones takes (a 5 s deadline each, fetched concurrently).
tests/test_fetch.py checks the error each feed gets; the figures are here.

    python bench/fetch_hostile.py"""

from __future__ import annotations

import resource
from datetime import UTC, datetime

from common import timed
from feedserve import Answer, BenchServer, forty_megabytes, gzip_bomb, rss_feed, trickle

from relay.fetch import FetchRequest, FetchResult, fetch_all, make_client


def fetch(requests: list[FetchRequest]) -> list[FetchResult]:
    with make_client() as client:
        return fetch_all(requests, client)


def main() -> None:
    server = BenchServer()
    bomb, big = gzip_bomb(), forty_megabytes()
    heavy = [FetchRequest(f"bomb{n}", server.serve(f"/bomb{n}", bomb), timeout=10) for n in range(3)]
    heavy += [FetchRequest(f"big{n}", server.serve(f"/big{n}", big), timeout=10) for n in range(3)]
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused = sum(result.status == "error" for result in fetch(heavy))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    print(
        f"fetch of 3 gzip bombs (1 GiB each) and 3 40 MB bodies: peak RSS grew {grown:.0f} MB, {refused} of 6 refused"
    )

    feeds = {
        "good": server.feed("/good", rss_feed(5, now=datetime.now(UTC), prefix="item", host="example.org")),
        "trickle": server.serve("/trickle", trickle()),
        "bomb": server.serve("/bomb", bomb),
        "big": server.serve("/big", big),
        "error500": server.serve("/500", Answer(500, b"error page")),
        "notfound": server.base + "/missing",
        "loop": server.serve("/loop", Answer(302, b"", (("Location", "/loop"),))),
        "empty": server.serve("/empty", Answer(200, b"")),
        "refused": "http://127.0.0.1:9/feed",
    }
    results: list[FetchResult] = []
    seconds = timed(lambda: results.extend(fetch([FetchRequest(name, url, timeout=5) for name, url in feeds.items()])))
    errors = sum(result.status == "error" for result in results)
    print(f"fetch of 1 good and {len(feeds) - 1} hostile feeds (5 s deadline each): {seconds:.1f} s, {errors} errors")
    server.stop()


if __name__ == "__main__":
    main()
