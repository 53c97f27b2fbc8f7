"""SIGKILL `relay run` at N random points (with 500s among the posts), then count duplicates
and losses.

python bench/crash_sweep.py [--kills 100] [--seed 1]"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common  # noqa: F401 - puts the repository on sys.path

from tests.support.crash import sweep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = sweep(Path(tempfile.mkdtemp(prefix="relay-crash-")), kills=args.kills, seed=args.seed)
    print(
        f"crash sweep: {result.kills} SIGKILLs ({result.finished_before_kill} runs finished first),"
        f" {result.server_errors} server errors injected, {result.seconds:.0f} s"
    )
    for stage, count in result.stages.most_common():
        print(f"  killed {stage}: {count}")
    print(
        f"  items {result.items}, statuses {result.statuses}, duplicates {result.duplicates}, missing {result.missing}"
    )


if __name__ == "__main__":
    main()
