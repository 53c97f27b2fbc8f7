"""Cold start: `relay --help`, and `relay run` when no feed is due (a cron line every minute).
Also what validating feeds.yaml with pydantic would add to that run (issue 9): its import,
the definition of models shaped like relay's, and the validation of 200 feeds, in a fresh
process, against relay's own loader reading a 200-feed file.

python bench/cold_start.py"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, command_ms

NO_OP_BUDGET_MS = 120  # issue 13: the no-op cron run at 200 feeds
FEEDS = 200

# Timed inside a fresh interpreter, so the figures leave out its own start.
PYDANTIC = f"""
import time
start = time.perf_counter()
from pydantic import BaseModel, ConfigDict
imported = time.perf_counter()


class Pacing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_per_run: int = 3
    min_interval: str = "10m"
    max_per_day: int = 40


class Account(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    platform: str
    instance: str = ""
    token: str = ""
    visibility: str = "public"
    max_characters: int | None = None
    handle: str = ""
    app_password: str = ""
    service: str = "https://bsky.social"
    pacing: Pacing = Pacing()


class Feed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    url: str
    every: str = "15m"
    max_age: str = "7d"
    backfill: int = 1
    template: str = "news"
    language: str = "fr"
    hashtags: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_bytes: int = 10_000_000
    timeout: str = "30s"
    flood_threshold: int = 10
    flood_threshold_day: int = 30
    content_warning: str = ""
    sensitive: bool = False
    images: bool = False
    visibility: str = ""


class File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    accounts: dict[str, Account]
    feeds: tuple[Feed, ...]


defined = time.perf_counter()
File.model_validate(
    {{
        "accounts": {{"masto": {{"platform": "mastodon", "instance": "https://m.example", "token": "t"}}}},
        "feeds": [
            {{"name": f"feed{{n}}", "url": f"https://site{{n}}.example/feed", "hashtags": ["tag"], "to": ["masto"]}}
            for n in range({FEEDS})
        ],
    }}
)
done = time.perf_counter()
print((imported - start) * 1000, (defined - imported) * 1000, (done - defined) * 1000)
"""

LOADER = """
import sys, time
start = time.perf_counter()
from relay.config import load_config
imported = time.perf_counter()
load_config(sys.argv[1], environ={"TOKEN": "t"})
print((imported - start) * 1000, (time.perf_counter() - imported) * 1000)
"""


def main() -> None:
    relay = shutil.which("relay") or str(Path(sys.executable).parent / "relay")
    median, best = command_ms([relay, "--help"])
    print(f"cold start: relay --help              median {median:5.0f} ms, best {best:5.0f} ms")
    heavy = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import relay.cli"], capture_output=True, text=True, check=False
    ).stderr
    for module in ("atproto", "mastodon", "feedparser", "httpx", "jinja2", "pydantic"):
        print(f"  {module} imported by relay --help: {'yes' if f' {module}' in heavy else 'no'}")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    shutil.copytree(ROOT / "examples" / "offline", tmp / "offline")
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},  # as installed: .pyc cached
        "RELAY_STATE_DIR": str(tmp / "state"),
        "RELAY_MASTODON_TOKEN": "x",
        "RELAY_BLUESKY_APP_PASSWORD": "x",
    }
    config = str(tmp / "offline" / "feeds.yaml")
    subprocess.run([relay, "seed", "-c", config], env=env, check=True, capture_output=True)
    median, best = command_ms([relay, "run", "-c", config], env=env)
    print(f"no-op cron run: relay run (none due) median {median:5.0f} ms, best {best:5.0f} ms")
    imports = subprocess.run(
        [relay, "run", "-c", config],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    print(f"  pydantic imported by the no-op run: {'yes' if ' pydantic' in imports else 'no'}")
    print("  the no-op run's 10 costliest imports (cumulative, µs):")
    for cumulative, module in top_imports(imports, 10):
        print(f"    {cumulative:7d}  {module}")
    config_cost(tmp, median)


def top_imports(importtime: str, count: int) -> list[tuple[int, str]]:
    """The top-level imports (not the ones they pulled in) of `python -X importtime` output,
    costliest first."""
    found = []
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and not name.startswith("  "):
                found.append((int(cumulative), name.strip()))
    return sorted(found, reverse=True)[:count]


def config_cost(tmp: Path, no_op_ms: float, runs: int = 10) -> None:
    """Medians over fresh processes: pydantic's cost next to relay's own loader, at 200 feeds."""
    pydantic = [_figures([sys.executable, "-c", PYDANTIC]) for _ in range(runs)]
    imported, defined, validated = (statistics.median(column) for column in zip(*pydantic, strict=True))
    path = tmp / "feeds-200.yaml"
    path.write_text(
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "feeds:\n"
        + "".join(
            f"  - name: feed{n}\n    url: https://site{n}.example/feed\n    hashtags: [tag]\n    to: [masto]\n"
            for n in range(FEEDS)
        )
    )
    loader = [_figures([sys.executable, "-c", LOADER, str(path)]) for _ in range(runs)]
    loader_import, loader_load = (statistics.median(column) for column in zip(*loader, strict=True))
    added = imported + defined + validated
    print(
        f"config with pydantic: import {imported:5.1f} ms, models {defined:5.1f} ms,"
        f" {FEEDS} feeds validated {validated:5.1f} ms: {added:5.0f} ms in all (median of {runs} processes)"
    )
    print(f"config as it is: import relay.config {loader_import:5.1f} ms, {FEEDS} feeds loaded {loader_load:5.1f} ms")
    # pydantic would replace the checks, not the YAML reading: its cost comes on top of that
    print(
        f"  pydantic alone: {added:.0f} ms, {100 * added / NO_OP_BUDGET_MS:.0f}% of the no-op run's budget of"
        f" {NO_OP_BUDGET_MS} ms (the run takes {no_op_ms:.0f} ms today)"
    )


def _figures(args: list[str]) -> list[float]:
    output = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return [float(figure) for figure in output.split()]


if __name__ == "__main__":
    main()
