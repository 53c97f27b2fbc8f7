"""Progress on a terminal (issue 12, part 4): preview, seed, run -v, add and import draw feeds
fetched / total, errors so far and the time on stderr when it is a terminal (a real pseudo-
terminal here), and nothing at all when it is not: cron's output stays as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-24T12:00:00+00:00"


def relay_on(terminal: bool, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """relay as a process, its stderr a pseudo-terminal (terminal) or a pipe: (exit code,
    stdout, stderr as the terminal or the pipe got it)."""
    environment = {**os.environ, "RELAY_NOW": NOW, "TERM": "xterm", "COLUMNS": "100", **(env or {})}
    if not terminal:
        done = subprocess.run(
            [sys.executable, "-m", "relay", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=ROOT,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr
    main, other = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", *args],
        stdout=subprocess.PIPE,
        stderr=other,
        stdin=subprocess.DEVNULL,
        env=environment,
        cwd=ROOT,
    )
    os.close(other)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert process.stdout is not None
    out = process.stdout.read().decode()
    process.wait(timeout=120)
    reader.join(timeout=10)
    os.close(main)
    return process.returncode, out, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def config(tmp_path: Path, feed_server: FeedServer) -> Path:
    feeds = [feed_server.feed(f"/f{n}.rss", numbered(2, prefix=f"feed{n}")) for n in range(4)]
    feeds.append(feed_server.url("/missing.rss"))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  backfill: 1\n"
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://mastodon.example\n    token: ${T}\n"
        "network:\n  allow_private: true\n"
        "feeds:\n" + "".join(f"  - name: f{n}\n    url: {url}\n" for n, url in enumerate(feeds))
    )
    return path


def test_preview_shows_progress_on_a_terminal_only(config: Path, tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, terminal = relay_on(True, "preview", "-c", str(config), *state)
    assert code == 1
    assert "fetching feeds" in terminal and "5/5" in terminal and "1 error" in terminal and " s" in terminal
    assert "relay: feed f4: HTTP 404" in terminal  # the error line is still there
    piped_code, piped_out, piped_err = relay_on(False, "preview", "-c", str(config), *state)
    assert piped_code == 1 and piped_out == out  # the same listing
    assert "fetching feeds" not in piped_err and "\r" not in piped_err
    quiet = relay_on(True, "preview", "-q", "-c", str(config), *state)[2]
    assert "fetching feeds" not in quiet
    dumb = relay_on(True, "preview", "-c", str(config), *state, env={"TERM": "dumb"})[2]
    assert "fetching feeds" not in dumb


def test_seed_and_run_verbose_show_progress_run_without_v_does_not(config: Path, tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    seeded = relay_on(True, "seed", "-c", str(config), *state)[2]
    assert "fetching feeds" in seeded and "5/5" in seeded
    env = {"T": "x", "RELAY_NOW": "2026-11-24T13:00:00+00:00"}
    quiet_run = relay_on(True, "run", "--dry-run", "-c", str(config), *state, env=env)[2]
    assert "fetching feeds" not in quiet_run  # cron's run: exactly as before
    env["RELAY_NOW"] = "2026-11-24T14:00:00+00:00"
    verbose_run = relay_on(True, "run", "--dry-run", "-v", "-c", str(config), *state, env=env)[2]
    assert "fetching feeds" in verbose_run and "1 error" in verbose_run


def test_import_shows_its_checks(config: Path, tmp_path: Path, feed_server: FeedServer) -> None:
    urls = [feed_server.feed(f"/new{n}.rss", numbered(1)) for n in range(3)]
    opml = tmp_path / "reader.opml"
    outlines = "".join(f'<outline text="new{n}" xmlUrl="{url}"/>' for n, url in enumerate(urls))
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><body>{outlines}</body></opml>')
    code, out, terminal = relay_on(True, "import", "-c", str(config), str(opml), env={"T": "x"})
    assert code == 0, terminal
    assert "checking feeds" in terminal and "3/3" in terminal and "0 errors" in terminal
    assert "3 feeds added" in out


def test_add_shows_the_common_paths_it_tries(config: Path, feed_server: FeedServer) -> None:
    from tests.support.feedserver import Response

    site = feed_server.add(
        "/site/", lambda r: Response(200, b"<html><head></head><body>x</body></html>", {"Content-Type": "text/html"})
    )
    feed_server.feed("/site/feed.xml", numbered(2))
    code, out, terminal = relay_on(True, "add", site, "-c", str(config), env={"T": "x"})
    assert code == 0, terminal
    assert "trying the common paths" in terminal
    assert "found " in out and "/site/feed.xml" in out
