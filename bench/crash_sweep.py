"""The crash sweep's figures. The sweep itself is a test, tests/test_crash.py: a real
`relay run` SIGKILLed at 100 random points, with 500s among the posts, then let finish,
checking that every item reached every account exactly once. bench/ does not import
tests/, so this runs that test with pytest, in its own process, and prints what it counted.

    python bench/crash_sweep.py"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time

from common import ROOT

COUNTS = ("kills", "finished_before_kill", "server_errors", "items", "statuses", "duplicates", "missing", "final_runs")


def main() -> None:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_crash.py", "-q", "-s", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    # the test prints its SweepResult: crash sweep: SweepResult(kills=100, ..., stages=Counter({...}), ...)
    found = re.search(r"^crash sweep: SweepResult\((.*)\)$", done.stdout, re.MULTILINE)
    if found is None:
        sys.exit(f"crash sweep: no result printed (pytest exit {done.returncode}):\n{done.stdout[-3000:]}")
    result = found.group(1)
    count = {name: int(value) for name, value in re.findall(rf"\b({'|'.join(COUNTS)})=(\d+)\b", result)}
    stages = re.search(r"stages=Counter\((\{.*?\})?\)", result)
    killed_at: dict[str, int] = ast.literal_eval(stages.group(1)) if stages and stages.group(1) else {}
    print(
        f"crash sweep: {count['kills']} SIGKILLs ({count['finished_before_kill']} runs finished first),"
        f" {count['server_errors']} server errors injected, {seconds:.0f} s (pytest included)"
    )
    for stage, kills in sorted(killed_at.items(), key=lambda pair: -pair[1]):
        print(f"  killed {stage}: {kills}")
    print(
        f"  items {count['items']}, statuses {count['statuses']}, duplicates {count['duplicates']},"
        f" missing {count['missing']}; tests/test_crash.py {'passed' if done.returncode == 0 else 'FAILED'}"
    )


if __name__ == "__main__":
    main()
