"""State and configuration failures end in one line naming the state folder and exit 2,
never a traceback: a database damaged in the middle, a full disk, a read-only state folder,
--state-dir naming a file. The state is kept private (permissions tightened on open, a
private dry-run copy removed even on Ctrl-C), and credentials never reach the output."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.fake_mastodon import FakeMastodon
from tests.support.feeds import numbered, rss
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay, relay_process

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token"}


def write_config(folder: Path, feed_url: str, mastodon: FakeMastodon, extra: str = "") -> Path:
    path = folder / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 500\n  flood_threshold: 1000\n  flood_threshold_day: 1000\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n    token: ${{TOKEN}}\n"
        "pacing:\n  max_per_run: 2\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: f\n    url: {feed_url}\n{extra}"
    )
    return path


def relay_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("relay: ")]


def assert_one_line_exit_2(code: int, output: str, *words: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    [line] = relay_lines(output)
    for word in words:
        assert word in line, line


def test_a_database_damaged_in_the_middle_is_one_line(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    state = Path(os.environ["RELAY_STATE_DIR"])
    config = write_config(tmp_path, feed_server.feed("/f", numbered(60, now=NOW)), mastodon)
    assert relay("run", "-c", str(config), env=ENV, now=NOW).exit_code == 0
    with sqlite3.connect(state / "relay.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # the schema's pages (page 1, and those it grew to)
        schema = {
            row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name IN ('sqlite_schema', 'sqlite_master')")
        }
    data = bytearray((state / "relay.db").read_bytes())
    page = 4096
    assert len(data) > 8 * page
    # the header and the schema stay: opening works, a later query finds the damage
    for number in range(2, len(data) // page):
        if number not in schema:
            data[(number - 1) * page : number * page] = b"\xde\xad\xbe\xef" * (page // 4)
    (state / "relay.db").write_bytes(bytes(data))
    for command in (["run", "-c", str(config)], ["status"], ["queue", "list"], ["history"]):
        result = relay(*command, env=ENV, now=NOW + timedelta(minutes=5))
        assert_one_line_exit_2(result.exit_code, result.output, str(state), "move it away")
        assert "malformed" in result.output or "not a usable relay state file" in result.output
    with pytest.raises(sqlite3.DatabaseError):  # --traceback re-raises, for the developer
        relay("status", "--traceback")


def test_state_dir_naming_a_file_is_one_line(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    config = write_config(tmp_path, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for command in (
        ["run", "-c", str(config)],
        ["status"],
        ["seed", "-c", str(config)],
        ["preview", "-c", str(config)],
    ):
        result = relay(*command, "--state-dir", str(a_file), env=ENV, now=NOW)
        assert_one_line_exit_2(result.exit_code, result.output, str(a_file), "folder")
    assert a_file.read_text() == "x"


def _no_larger_files_than(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_line(tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    big = rss(
        [
            {
                "title": f"item {n}",
                "link": f"https://example.org/{n}",
                "guid": f"g{n}",
                "description": "long text " * 300,
                "published": NOW - timedelta(minutes=n),
            }
            for n in range(200)
        ]
    )
    config = write_config(tmp_path, feed_server.feed("/f", big), mastodon)
    state = tmp_path / "state"
    process = relay_process(
        "run",
        "-c",
        str(config),
        env={**ENV, "RELAY_STATE_DIR": str(state)},
        now=NOW,
        preexec_fn=lambda: _no_larger_files_than(64 * 1024),
    )
    _, err = process.communicate(timeout=120)
    assert_one_line_exit_2(process.returncode, err, str(state))
    assert "full" in err or "File too large" in err
    assert mastodon.statuses == []


def _drop_privileges_then_run() -> str:
    """A child that loads relay as root (the venv is under /root), then runs as nobody."""
    return (
        "import os, sys\n"
        "import relay.cli, relay.config, relay.render, relay.store, relay.pipeline, relay.fetch, relay.show\n"
        "import relay.poll, relay.deliver, relay.decide, relay.parse, relay.targets\n"
        "import yaml, jinja2, click, sqlite3, httpx, difflib, platformdirs, click._textwrap\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "relay.cli.cli(sys.argv[1:], prog_name='relay')\n"
    )


def test_a_read_only_state_folder_is_one_line_for_run(feed_server: FeedServer, mastodon: FakeMastodon) -> None:
    # root ignores permissions: make the run an unprivileged user's, in a folder it can read
    base = Path(tempfile.mkdtemp(prefix="relay-ro-"))
    try:
        base.chmod(0o755)
        config = write_config(base, feed_server.feed("/f", numbered(2, now=NOW)), mastodon)
        config.chmod(0o644)
        state = base / "state"
        environment = {**os.environ, **ENV, "RELAY_STATE_DIR": str(state), "RELAY_NOW": NOW.isoformat()}
        first = subprocess.run(
            [sys.executable, "-m", "relay", "run", "-c", str(config)],
            env=environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert first.returncode == 0, first.stderr
        state.chmod(0o555)  # readable, not writable
        for name in state.iterdir():
            name.chmod(0o444)
        environment["RELAY_NOW"] = (NOW + timedelta(minutes=5)).isoformat()
        if os.geteuid() == 0:
            command = [sys.executable, "-c", _drop_privileges_then_run(), "run", "-c", str(config)]
        else:
            command = [sys.executable, "-m", "relay", "run", "-c", str(config)]
        result = subprocess.run(
            command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert_one_line_exit_2(result.returncode, result.stderr, str(state))
        assert "permission" in result.stderr.lower() or "readonly" in result.stderr.lower()
    finally:
        for path in (base / "state", *(base / "state").glob("*")):
            if path.exists():
                path.chmod(0o700)
        shutil.rmtree(base, ignore_errors=True)


def test_open_permissions_are_tightened_with_a_warning(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    config = write_config(tmp_path, feed_server.feed("/f", numbered(1, now=NOW)), mastodon)
    state = Path(os.environ["RELAY_STATE_DIR"])
    relay("run", "-c", str(config), env=ENV, now=NOW)
    state.chmod(0o755)
    (state / "relay.db").chmod(0o644)
    (state / "relay.lock").chmod(0o666)
    result = relay("run", "-c", str(config), env=ENV, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 0
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert str(state) in warning and "relay.db 0644 -> 0600" in warning and "relay.lock 0666 -> 0600" in warning
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("relay.db", "relay.lock"):
        assert (state / name).stat().st_mode & 0o777 == 0o600
    assert "warning" not in relay("status").output  # once tightened, nothing more to say


def test_dry_run_copy_is_private_and_removed_even_on_ctrl_c(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    url = feed_server.feed("/f", numbered(2, now=NOW))
    config = write_config(tmp_path, url, mastodon)
    state = tmp_path / "state"
    env = {**ENV, "RELAY_STATE_DIR": str(state), "TMPDIR": str(scratch_parent)}
    assert relay_process("run", "-c", str(config), env=env, now=NOW).wait(timeout=120) == 0
    # a dry run of a finished pass leaves nothing behind either
    finished = relay_process("run", "--dry-run", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    finished.communicate(timeout=120)
    assert finished.returncode == 0 and list(scratch_parent.iterdir()) == []
    # now a slow feed: interrupt the dry run while it waits for it
    feed_server.add(
        "/f", lambda request: Response(200, numbered(3, now=NOW), {"Content-Type": "application/rss+xml"}, delay=4)
    )
    process = relay_process("run", "--dry-run", "-c", str(config), env=env, now=NOW + timedelta(minutes=10))
    deadline = time.monotonic() + 60
    while feed_server.hits.get("/f", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    [scratch] = list(scratch_parent.glob("relay-dry-run-*"))
    assert scratch.stat().st_mode & 0o777 == 0o700
    files = list(scratch.iterdir())
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files), [
        (f.name, oct(f.stat().st_mode)) for f in files
    ]
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert list(scratch_parent.glob("relay-dry-run-*")) == []
    assert mastodon.statuses and len(mastodon.statuses) == 2  # only the real run posted


def test_credentials_in_feed_urls_never_reach_the_output(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    feed_server.feed("/f", numbered(1, now=NOW))
    with_password = feed_server.url("/f").replace("http://", "http://campaign:hunter2secret@")
    with_token = feed_server.url("/missing") + "?token=${FEED_TOKEN}"
    config = write_config(tmp_path, with_password, mastodon, extra=f"  - name: private\n    url: {with_token}\n")
    env = {**ENV, "FEED_TOKEN": "tok-987654321"}
    outputs = [
        relay("preview", "-c", str(config), env=env, now=NOW).output,
        relay("preview", "-c", str(config), "--format", "json", env=env, now=NOW).output,
        relay("run", "-c", str(config), "-v", env=env, now=NOW).output,
        relay("status", "-c", str(config), env=env).output,
        relay("status", "-c", str(config), "--format", "json", env=env).output,
        relay("status", "--format", "json", env=env).output,  # without the configuration
    ]
    for output in outputs:
        assert "hunter2secret" not in output and "tok-987654321" not in output, output
    preview = json.loads(outputs[1])
    urls = {f["name"]: f["url"] for f in preview["feeds"]}
    assert urls["f"].startswith("http://campaign:***@") and urls["private"].endswith("?token=${FEED_TOKEN}")
    assert "feed private:" in outputs[2]  # the failing feed is named, its token hidden
    status = json.loads(outputs[4])
    assert {f["name"]: f["url"] for f in status["feeds"]}["f"].startswith("http://campaign:***@")


def test_a_private_feeds_credentials_do_not_reach_its_item_links(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """Relative item links resolve against the feed's address, but not its user:password."""
    body = rss([{"title": "Relative", "link": "/articles/1", "guid": "r1", "published": NOW}])
    url = feed_server.feed("/private/feed", body).replace("http://", "http://campaign:hunter2secret@")
    config = write_config(tmp_path, url, mastodon)
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env=ENV, now=NOW).output)
    [post] = preview["posts"]
    assert post["action"] == "post" and post["link"] == feed_server.url("/articles/1")
    assert relay("run", "-c", str(config), env=ENV, now=NOW).exit_code == 0
    [status] = mastodon.statuses
    assert feed_server.url("/articles/1") in status["content"] and "hunter2secret" not in status["content"]


def test_a_private_feeds_token_never_reaches_a_post(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    """The feed's token comes from ${FEED_TOKEN}. A link relative to the feed's own address
    (`#top`) must not carry the token into a post, and preview must not hide one that would
    (it shows ${FEED_TOKEN}); a link that can only be resolved with the token (token in the
    path) is skipped with the reason."""
    secret = "s3cr3t-feed-token"
    in_query = rss([{"title": "Fragment", "link": "#top", "guid": "q1", "published": NOW}])
    in_path = rss([{"title": "Relative", "link": "item.html", "guid": "p1", "published": NOW}])
    feed_server.feed("/priv.xml", in_query)
    feed_server.feed(f"/feeds/{secret}/rss.xml", in_path)
    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"defaults:\n  backfill: 5\naccounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n"
        "    token: ${TOKEN}\npacing:\n  max_per_run: 10\n  min_interval: 0s\n"
        f"feeds:\n  - name: query\n    url: {feed_server.url('/priv.xml')}?token=${{FEED_TOKEN}}\n"
        f"  - name: path\n    url: {feed_server.url('/feeds/')}${{FEED_TOKEN}}/rss.xml\n"
    )
    env = {**ENV, "FEED_TOKEN": secret}
    preview = relay("preview", "-c", str(config), "--format", "json", env=env, now=NOW)
    posts = {p["feed"]: p for p in json.loads(preview.output)["posts"]}
    assert posts["query"]["action"] == "post" and posts["query"]["link"] == feed_server.url("/priv.xml#top")
    assert posts["path"]["action"] == "skip" and "${FEED_TOKEN}" in posts["path"]["reason"]
    assert secret not in preview.output
    relay("run", "-c", str(config), env=env, now=NOW)
    assert [s["content"].split("\n")[0] for s in mastodon.statuses] == ["Fragment"]
    assert secret not in json.dumps(mastodon.statuses)
