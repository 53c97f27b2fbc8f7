"""Parse throughput (one core, in process), feedparser against the fast path (feedparser-rs
through relay.fastparse, where it agrees), over the real-world corpus and over generated
20-item feeds: ms per entry of parse_feed (Items included) and of reading the document alone.

python bench/parse.py"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from common import ROOT
from feedserve import rss_feed

from relay import fastparse, text
from relay.errors import ParseError
from relay.parse import parse_feed

CORPUS = ROOT / "tests" / "feeds" / "corpus"
URL = "https://example.org/feed"
ROUNDS = 3


def main() -> None:
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".xml", ".rss", ".atom", ".rdf"))
    corpus = [(p.name, p.read_bytes()) for p in files]
    now = datetime.now(UTC)
    generated = [(f"feed{n}", rss_feed(20, now=now, prefix=f"feed{n}", host=f"feed{n}.example")) for n in range(200)]
    if not fastparse.available():
        print("feedparser-rs is not installed (pip install 'relay[fast]'): feedparser only")
    for label, bodies in (
        (f"{len(corpus)} corpus files", corpus),
        (f"{len(generated)} generated 20-item feeds", generated),
    ):
        size = sum(len(body) for _, body in bodies)
        fast = sum(1 for _, body in bodies if fastparse.read(body, {"content-location": URL}) is not None)
        print(f"parse: {label}, {size / 1e6:.1f} MB, x{ROUNDS}; fast path taken by {fast} of {len(bodies)}")
        timings = {}
        for parser in ("feedparser", "fast"):
            timings[parser] = per_entry(bodies, parser)
            seconds, entries = timings[parser]
            print(
                f"  {parser:10} {seconds / entries * 1000:.3f} ms per entry, {entries / seconds:,.0f} entries/s, "
                f"{size * ROUNDS / 1e6 / seconds:.2f} MB/s"
            )
        print(f"  fast path: {timings['feedparser'][0] / timings['fast'][0]:.1f}x feedparser's speed (Items included)")
        document_only(bodies)
    mojibake_cost(corpus)


def _parse_all(bodies: list[tuple[str, bytes]], rounds: int = ROUNDS, *, fast: bool = True) -> int:
    entries = 0
    for _ in range(rounds):
        for name, body in bodies:
            with contextlib.suppress(ParseError):
                entries += parse_feed(body, feed_name=name, url=URL, fast=fast).entries
    return entries


def per_entry(bodies: list[tuple[str, bytes]], parser: str) -> tuple[float, int]:
    """Seconds and entries of parse_feed over every body, ROUNDS times, with one parser."""
    start = time.perf_counter()
    entries = _parse_all(bodies, fast=parser != "feedparser")
    return time.perf_counter() - start, entries


def document_only(bodies: list[tuple[str, bytes]]) -> None:
    """The document stage alone, over the bodies the fast path takes: feedparser.parse
    against fastparse.read (its checks included)."""
    import io

    import feedparser

    headers = {"content-location": URL}
    bodies = [(name, body) for name, body in bodies if fastparse.read(body, headers) is not None]
    if not bodies:
        return
    readers: dict[str, Callable[[bytes], object]] = {
        "feedparser": lambda body: feedparser.parse(io.BytesIO(body), response_headers=headers),
        "fast": lambda body: fastparse.read(body, headers),
    }
    seconds = {}
    for name, reader in readers.items():
        start = time.perf_counter()
        for _ in range(ROUNDS):
            for _, body in bodies:
                reader(body)
        seconds[name] = time.perf_counter() - start
    print(
        f"  document only, the {len(bodies)} bodies the fast path takes: feedparser "
        f"{seconds['feedparser'] * 1000 / ROUNDS:.0f} ms, fastparse.read {seconds['fast'] * 1000 / ROUNDS:.0f} ms "
        f"({seconds['feedparser'] / seconds['fast']:.1f}x)"
    )


def mojibake_cost(bodies: list[tuple[str, bytes]]) -> None:
    """What repairing double-encoded text (ftfy, in clean_text) costs per entry: the same
    parse with the repair replaced by the identity."""
    repair = text.repair_mojibake
    timings = {}
    for label, function in (("with", repair), ("without", lambda value: value)):
        text.repair_mojibake = function  # type: ignore[assignment]
        start = time.perf_counter()
        entries = _parse_all(bodies, rounds=1)
        timings[label] = (time.perf_counter() - start) / entries
    text.repair_mojibake = repair
    extra = (timings["with"] - timings["without"]) * 1000
    print(f"mojibake repair (ftfy): {extra:.3f} ms per entry ({extra / (timings['without'] * 1000):.1%} of parsing)")


if __name__ == "__main__":
    main()
