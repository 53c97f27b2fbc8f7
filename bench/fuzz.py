"""The hostile-feed fuzzer of tests/test_fuzz.py, for as long as asked: RSS and Atom documents
full of hostile strings, each previewed by `relay preview --all --format json` as a real
process, every post checked. Reports what it tried and saves each failing document.

python bench/fuzz.py --seconds 600 [--seed 7] [--out /tmp/relay-fuzz-failures]"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common  # noqa: F401  (puts the checkout on sys.path)
from fuzzlib import Document, check_preview, documents, run_preview, write_config
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

EXAMPLES_PER_ROUND = 10


@dataclass
class Tally:
    documents: int = 0
    entries: int = 0
    posts: int = 0
    rendered: int = 0
    failures: list[tuple[Path, list[str]]] = field(default_factory=list)


def fuzz_round(round_seed: int, tally: Tally, out: Path, deadline: float) -> None:
    """One Hypothesis run of EXAMPLES_PER_ROUND documents; failures are recorded, never
    raised, so Hypothesis never stops to shrink."""

    @seed(round_seed)
    @settings(
        max_examples=EXAMPLES_PER_ROUND,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(document=documents)
    def one(document: Document) -> None:
        if time.monotonic() > deadline:
            return
        body = document.to_bytes()
        with tempfile.TemporaryDirectory(prefix="relay-fuzz-") as scratch:
            directory = Path(scratch)
            (directory / "feed.xml").write_bytes(body)
            outcome = check_preview(run_preview(write_config(directory), directory / "state"))
        tally.documents += 1
        tally.entries += len(document.entries)
        tally.posts += len(outcome.posts)
        tally.rendered += sum(1 for post in outcome.posts if post.get("text"))
        if outcome.failures:
            out.mkdir(parents=True, exist_ok=True)
            saved = out / f"failure-{round_seed}-{tally.documents}.{document.kind}.xml"
            saved.write_bytes(body)
            tally.failures.append((saved, outcome.failures))

    one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to run (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first round (default: random)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relay-fuzz-failures",
        help="where failing documents go",
    )
    args = parser.parse_args()
    first_seed = args.seed if args.seed is not None else random.randrange(2**32)
    tally = Tally()
    start = time.monotonic()
    deadline = start + args.seconds
    rounds = 0
    while time.monotonic() < deadline:
        fuzz_round(first_seed + rounds, tally, args.out, deadline)
        rounds += 1
    elapsed = time.monotonic() - start
    print(
        f"fuzz: seed {first_seed}, {rounds} rounds, {tally.documents} documents, {tally.entries} entries, "
        f"{tally.posts} previewed posts ({tally.rendered} with text) in {elapsed:.0f} s, "
        f"{len(tally.failures)} failing documents"
    )
    for saved, failures in tally.failures:
        print(f"  {saved}: {len(failures)} failures")
        for failure in failures[:5]:
            print(f"    {failure[:300]}")
    if tally.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
