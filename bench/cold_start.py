"""Cold start: `relay --help`, and `relay run` when no feed is due (a cron line every minute).

python bench/cold_start.py"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, command_ms


def main() -> None:
    relay = shutil.which("relay") or str(Path(sys.executable).parent / "relay")
    median, best = command_ms([relay, "--help"])
    print(f"cold start: relay --help              median {median:5.0f} ms, best {best:5.0f} ms")
    heavy = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import relay.cli"], capture_output=True, text=True, check=False
    ).stderr
    for module in ("atproto", "mastodon", "feedparser", "httpx", "jinja2"):
        print(f"  {module} imported by relay --help: {'yes' if f' {module}' in heavy else 'no'}")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    shutil.copytree(ROOT / "examples" / "offline", tmp / "offline")
    env = {
        **os.environ,
        "RELAY_STATE_DIR": str(tmp / "state"),
        "RELAY_MASTODON_TOKEN": "x",
        "RELAY_BLUESKY_APP_PASSWORD": "x",
    }
    config = str(tmp / "offline" / "feeds.yaml")
    subprocess.run([relay, "seed", "-c", config], env=env, check=True, capture_output=True)
    median, best = command_ms([relay, "run", "-c", config], env=env)
    print(f"no-op cron run: relay run (none due) median {median:5.0f} ms, best {best:5.0f} ms")


if __name__ == "__main__":
    main()
