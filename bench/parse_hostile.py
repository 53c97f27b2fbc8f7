"""Parsing a feed that declares a 10 KB entity and references it 10,000 times (100 MB if
it were expanded): the time it takes and how much the process's peak memory grows.
tests/test_parse.py checks that the entity is not expanded; the figures are here.

    python bench/parse_hostile.py"""

from __future__ import annotations

import resource
import time

import common  # noqa: F401 - puts the repository on sys.path

from relay.errors import ParseError
from relay.parse import parse_feed


def main() -> None:
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "{"A" * 10_000}">]><rss version="2.0"><channel>'
        f"<title>t</title><item><title>{'&big;' * 10_000}</title><link>https://example.org/a</link>"
        "<guid>1</guid></item></channel></rss>"
    ).encode()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        longest = max(
            (len(item.title) for item in parse_feed(body, feed_name="f", url="https://example.org/").items), default=0
        )
        outcome = f"parsed, longest title {longest:,} characters"
    except ParseError as exc:
        outcome = f"refused: {exc}"
    seconds = time.perf_counter() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    print(f"parse of a {len(body) / 1000:.0f} KB entity expansion (100 MB if expanded): {outcome}")
    print(f"  {seconds * 1000:.0f} ms, peak RSS grew {growth:.0f} MB")


if __name__ == "__main__":
    main()
