"""Cleaning links of tracking: relay's compiled ClearURLs rules against unalix's own cleaner,
over every link of the corpus plus the tracked links of tests/test_trackers.py.

python bench/trackers.py"""

from __future__ import annotations

import contextlib
import time
import warnings

from common import ROOT

from relay import trackers
from relay.errors import ParseError
from relay.parse import parse_feed

CORPUS = ROOT / "tests" / "feeds" / "corpus"
TRACKED = [
    "https://www.nytimes.com/2026/11/02/world/europe/hdh.html?partner=rss&emc=rss",
    "https://www.lemonde.fr/sante/article/2026/11/02/hdh_6012.html?xtor=RSS-3208",
    "https://www.bbc.co.uk/news/world-123?at_medium=RSS&at_campaign=KARANGA",
    "https://example.org/a?utm_source=rss&utm_medium=feed&p=24275",
    "https://example.org/a?fbclid=IwAR0abc&gclid=Cj0K&mc_cid=5e1&mc_eid=9f2&id=3",
    "https://www.google.com/url?rct=j&sa=t&url=https://www.laquadrature.net/2026/11/hdh/&ct=ga&usg=AOv",
    "https://news.google.com/news/url?sa=t&fd=R&usg=AFQ&url=https://www.liberation.fr/sante/hdh/",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&feature=youtu.be&si=AbC",
]


def links() -> list[str]:
    found = []
    for path in sorted(CORPUS.iterdir()):
        with contextlib.suppress(ParseError):
            parsed = parse_feed(path.read_bytes(), feed_name=path.name, url="https://example.org/feed")
            found += [item.key_link for item in parsed.items if item.key_link]
    return found + TRACKED


def timed(clean, sample: list[str], rounds: int) -> tuple[float, list[str]]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        results = [clean(link) for link in sample]
    return (time.perf_counter() - start) / (rounds * len(sample)) * 1e6, results


HOSTILE = [
    "https://www.google.com/url?" + "a=b&" * 1000,
    "https://example.org/#" + "a=b&" * 1000,
    "https://" + "a-" * 1500 + ".google.com/",
    "https://google." + "ab." * 1300 + "com/",
    "https://www.google.com/url?url=" + "https%3A%2F%2Fwww.google.com%2Furl%3Furl%3D" * 80 + "https://e.org/",
    "https://www.amazon.com/" + "x/" * 1500 + "dp/1",
]


def main() -> None:
    start = time.perf_counter()
    trackers.clean_link(TRACKED[0])
    print(
        f"trackers: first call (catalogue loaded, always-tried providers compiled) {1000 * (time.perf_counter() - start):.1f} ms"
    )
    sample = links()
    per_link, ours = timed(trackers.clean_link, sample, 20)
    changed = sum(a != b for a, b in zip(sample, ours, strict=True))
    print(f"trackers: relay   {per_link:7.1f} µs per link over {len(sample)} links ({changed} changed)")
    worst = max((timed(trackers.clean_link, [link[:4096]], 3)[0], link[:50]) for link in HOSTILE)
    print(
        f"trackers: worst hostile link (4096 characters, the longest relay accepts) {worst[0] / 1000:.2f} ms: {worst[1]}…"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import unalix  # type: ignore[import-untyped]
    except ImportError:
        print("trackers: unalix not importable, no comparison")
        return
    per_link, theirs = timed(unalix.clear_url, sample, 2)
    print(f"trackers: unalix  {per_link:7.1f} µs per link (its own cleaner, same catalogue)")
    differ = [(link, a, b) for link, a, b in zip(sample, ours, theirs, strict=True) if a != b]
    print(
        f"trackers: {len(differ)} links cleaned differently (relay's providers for xtor/at_*/NYT/Google News, host anchoring):"
    )
    for link, a, b in differ[:12]:
        print(f"  {link}\n    relay:  {a}\n    unalix: {b}")


if __name__ == "__main__":
    main()
