"""Shared helpers for the benchmarks (figures, not assertions)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def command_ms(args: list[str], runs: int = 10, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median and best wall time of a command, in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=False, capture_output=True, env=env)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)
