"""`relay preview` over hostile feeds, as a real process: how long it takes and its peak
resident memory (its own or its parse workers', whichever is larger). tests/test_preview_hostile.py
checks what the user sees (one error line per bad feed); the figures are here.

    python bench/preview_hostile.py

The set: a feed sending a byte a second, a gzip body inflating to 1 GiB, a 40 MB body, an
HTML page, an empty body, a 500, a redirect loop, a 404, a refused connection, a 10,000 x
10 KB entity expansion, and one good feed. Then a feed whose <author> takes feedparser
about 15 s, stopped at its 2 s timeout."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT
from feedserve import RSS, Answer, BenchServer, forty_megabytes, gzip_bomb, rss_feed, trickle

# run relay's CLI, then write the peak RSS (kB on Linux) of the process and of its children
PEAK = """\
import atexit, resource, sys
atexit.register(lambda: sys.stderr.write('PEAK_KB %d\\n' % max(
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)))
sys.argv[0] = 'relay'
from relay.cli import main
main()
"""


def hostile(server: BenchServer) -> dict[str, str]:
    expansion = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "{"A" * 10_000}">]><rss version="2.0"><channel>'
        f"<title>t</title><item><title>{'&big;' * 10_000}</title><link>https://example.org/e</link>"
        "<guid>e</guid></item></channel></rss>"
    )
    return {
        "good": server.feed("/good", rss_feed(3, now=datetime.now(UTC), prefix="item", host="example.org")),
        "trickle": server.serve("/trickle", trickle()),
        "gzipbomb": server.serve("/gzip", gzip_bomb()),
        "forty_mb": server.serve("/big", forty_megabytes()),
        "html": server.serve(
            "/html", Answer(200, b"<!DOCTYPE html><html><body>Accueil</body></html>", (("Content-Type", "text/html"),))
        ),
        "empty": server.serve("/empty", Answer(200, b"", RSS)),
        "error500": server.serve("/500", Answer(500, b"error page")),
        "loop": server.serve("/loop", Answer(302, b"", (("Location", "/loop"),))),
        "notfound": server.base + "/missing",
        "refused": "http://127.0.0.1:9/feed",
        "entities": server.serve("/entities", Answer(200, expansion.encode(), RSS)),
    }


def preview(feeds: dict[str, str], timeout: str) -> tuple[float, float, str]:
    """Seconds, peak MB and the stderr of one `relay preview` of these feeds."""
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    config = tmp / "feeds.yaml"
    config.write_text(
        f"defaults:\n  timeout: {timeout}\n  backfill: 5\naccounts:\n  masto:\n    platform: mastodon\n"
        "    instance: https://m.example\n    token: ${T}\nfeeds:\n"
        + "".join(f"  - name: {name}\n    url: {url}\n" for name, url in feeds.items())
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, "preview", "-c", str(config), "--state-dir", str(tmp / "state")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - start
    peak_kb = int(done.stderr.rsplit("PEAK_KB ", 1)[1].split()[0])
    return seconds, peak_kb / 1024, done.stderr


def main() -> None:
    server = BenchServer()
    feeds = hostile(server)
    seconds, peak, stderr = preview(feeds, "8s")
    failed = sum(line.startswith("relay: feed ") for line in stderr.splitlines())
    print(f"preview of {len(feeds)} feeds, {len(feeds) - 1} hostile (timeout 8s):")
    print(f"  {seconds:5.1f} s, peak RSS {peak:.0f} MB, {failed} feeds failed")
    slow = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>t</title><item><title>x</title>"
        f"<link>https://example.org/1</link><guid>1</guid><author>{'a' * 64_000}</author></item></channel></rss>"
    ).encode()
    seconds, peak, stderr = preview(
        {"slow": server.serve("/slow", Answer(200, slow, RSS)), "good": feeds["good"]}, "2s"
    )
    stopped = "parsing took longer than 2s" in stderr
    print(f"preview of a feed that parses for ~15 s (timeout 2s): {seconds:5.1f} s, peak RSS {peak:.0f} MB")
    print(f"  parse stopped at its timeout: {'yes' if stopped else 'NO: ' + stderr.strip().splitlines()[-2]}")
    server.stop()


if __name__ == "__main__":
    main()
