"""Parse throughput over the real-world corpus (one core, in process).

python bench/parse.py"""

from __future__ import annotations

import contextlib
import time

from common import ROOT

from relay import text
from relay.errors import ParseError
from relay.parse import parse_feed

CORPUS = ROOT / "tests" / "feeds" / "corpus"


def main() -> None:
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".xml", ".rss", ".atom", ".rdf"))
    bodies = [(p.name, p.read_bytes()) for p in files]
    entries = 0
    start = time.perf_counter()
    for _ in range(3):
        for name, body in bodies:
            with contextlib.suppress(ParseError):
                entries += parse_feed(body, feed_name=name, url="https://example.org/feed").entries
    seconds = time.perf_counter() - start
    size = sum(len(b) for _, b in bodies) * 3
    print(f"parse: {len(bodies)} corpus files x 3, {size / 1e6:.1f} MB, {entries} entries in {seconds:.2f} s")
    print(
        f"  {entries / seconds:,.0f} entries/s, {size / 1e6 / seconds:.2f} MB/s, {seconds / entries * 1000:.2f} ms per entry (one core)"
    )
    mojibake_cost(bodies)


def mojibake_cost(bodies: list[tuple[str, bytes]]) -> None:
    """What repairing double-encoded text (ftfy, in clean_text) costs per entry: the same
    parse with the repair replaced by the identity."""
    repair = text.repair_mojibake
    timings = {}
    for label, function in (("with", repair), ("without", lambda value: value)):
        text.repair_mojibake = function  # type: ignore[assignment]
        entries = 0
        start = time.perf_counter()
        for name, body in bodies:
            with contextlib.suppress(ParseError):
                entries += parse_feed(body, feed_name=name, url="https://example.org/feed").entries
        timings[label] = (time.perf_counter() - start) / entries
    text.repair_mojibake = repair
    extra = (timings["with"] - timings["without"]) * 1000
    print(f"  mojibake repair (ftfy): {extra:.3f} ms per entry ({extra / (timings['without'] * 1000):.1%} of parsing)")


if __name__ == "__main__":
    main()
