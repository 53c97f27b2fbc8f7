import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from relay.cli import cli
from tests.support import feedserver as fs
from tests.support.feeds import TWO_ACCOUNTS, numbered, rss
from tests.support.relayrun import relay_process

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "offline" / "feeds.yaml"


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def config(tmp_path: Path, feeds: str, defaults: str = "") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"defaults:\n  backfill: 5\n{defaults}{TWO_ACCOUNTS}feeds:\n{feeds}")
    return path


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    for command in ("init", "check", "preview", "run", "seed", "status", "history", "queue", "cron"):
        assert command in result.output


def test_check_valid_example() -> None:
    result = invoke("check", "-c", str(EXAMPLE))
    assert result.exit_code == 0
    assert "ok: 4 feeds, 2 accounts" in result.output


def test_check_invalid_is_exit_2_with_file_line_field(tmp_path: Path) -> None:
    path = config(tmp_path, "  - name: a\n    url: https://example.org/feed\n    every: 15 min\n")
    result = invoke("check", "-c", str(path))
    assert result.exit_code == 2
    assert "relay: feeds.yaml:15: feeds[0].every: '15 min' is not a duration (try 15m)" in result.output


def test_check_renders_each_template(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bad.j2").write_text("{{ item.nope }} {{ item.link }}")
    path = config(tmp_path, "  - name: a\n    url: https://example.org/feed\n    template: bad\n")
    result = invoke("check", "-c", str(path))
    assert result.exit_code == 2
    assert "feeds[0].template: bad for mastodon" in result.output


def test_preview_offline_example_shows_posts_and_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = invoke("preview", "-c", str(EXAMPLE), "--state-dir", str(state))
    assert result.exit_code == 0, result.output
    assert "== mastodon (mastodon)" in result.output and "== bluesky (bluesky)" in result.output
    assert "{{ 7*7 }} raisons" in result.output
    assert (
        "[card] Health Data Hub : le Conseil d’État saisi une nouvelle fois — Le collectif SantéNathon" in result.output
    )
    assert "javascript:" not in result.output
    assert not state.exists()


def test_preview_json_contract() -> None:
    result = invoke("preview", "-c", str(EXAMPLE), "--format", "json")
    data = json.loads(result.output)
    assert set(data) == {"feeds", "posts"}
    for feed in data["feeds"]:
        assert {"name", "url", "status", "error", "entries", "new"} <= set(feed)
        assert feed["status"] in ("ok", "not_modified", "error")
    keys = {
        "feed",
        "key",
        "title",
        "link",
        "account",
        "platform",
        "text",
        "length",
        "limit",
        "facets",
        "embed",
        "language",
        "language_source",
        "action",
        "reason",
        "original",
        "credit",
    }
    for post in data["posts"]:
        assert keys <= set(post)
        assert post["action"] in ("post", "boost", "quote", "skip", "hold")
        if post["action"] in ("post", "quote"):
            assert post["length"] <= post["limit"]
            # defaults.language, or the feed's own <language> (framablog declares fr-FR)
            assert (post["language"], post["language_source"]) in {
                ("fr", "default"),
                ("fr", "channel"),
                ("fr-FR", "channel"),
            }
    skipped = [p for p in data["posts"] if p["title"].startswith("Lien piégé")]
    assert skipped and all(p["action"] == "skip" and "not http(s)" in p["reason"] for p in skipped)
    bluesky = [p for p in data["posts"] if p["platform"] == "bluesky" and p["action"] == "post"]
    assert bluesky and all(p["embed"]["$type"] == "app.bsky.embed.external" and p["facets"] for p in bluesky)
    # the ally's Bluesky account: quoted on Bluesky, with the credit; posted on Mastodon
    ally = {p["platform"]: p for p in data["posts"] if p["feed"] == "allie-bsky" and p["action"] != "skip"}
    assert ally["bluesky"]["action"] == "quote"
    assert ally["bluesky"]["embed"]["$type"] == "app.bsky.embed.record"
    assert ally["bluesky"]["embed"]["record"]["uri"] == ally["bluesky"]["original"]
    assert ally["bluesky"]["credit"] == "@collectif-allie.bsky.social"
    assert "via @collectif-allie.bsky.social" in ally["bluesky"]["text"]
    assert ally["mastodon"]["action"] == "post" and ally["mastodon"]["original"].startswith("at://")


def test_preview_reports_a_failing_feed_and_goes_on(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    good = feed_server.feed("/good", numbered(2))
    path = config(
        tmp_path, f"  - name: good\n    url: {good}\n  - name: broken\n    url: {feed_server.url('/missing')}\n"
    )
    result = invoke("preview", "-c", str(path))
    assert result.exit_code == 1
    assert "relay: feed broken: HTTP 404 Not Found" in result.output
    assert "item 1" in result.output


def test_same_article_through_two_feeds_is_previewed_once_per_account(
    tmp_path: Path, feed_server: fs.FeedServer
) -> None:
    now = datetime.now(UTC)
    a = feed_server.feed(
        "/a",
        rss(
            [{"title": "Article", "link": "https://www.example.org/art?utm_source=rss", "guid": "a1", "published": now}]
        ),
    )
    b = feed_server.feed(
        "/b", rss([{"title": "Article (relais)", "link": "http://example.org/art/", "guid": "b1", "published": now}])
    )
    path = config(tmp_path, f"  - name: a\n    url: {a}\n  - name: b\n    url: {b}\n")
    data = json.loads(invoke("preview", "-c", str(path), "--format", "json").output)
    posts = [p for p in data["posts"] if p["action"] == "post"]
    assert sorted(p["account"] for p in posts) == ["masto", "sky"]
    skipped = [p for p in data["posts"] if p["action"] == "skip"]
    assert {p["reason"] for p in skipped} == {"already relayed via feed 'a'"}


def test_backfill_on_first_poll(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    url = feed_server.feed("/f", numbered(10))
    path = config(tmp_path, f"  - name: f\n    url: {url}\n    backfill: 2\n    to: [masto]\n")
    data = json.loads(invoke("preview", "-c", str(path), "--format", "json").output)
    posted = [p["title"] for p in data["posts"] if p["action"] == "post"]
    assert posted == ["item 9", "item 8"]


def test_preview_all_and_feed_filter(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    one = feed_server.feed("/1", numbered(4, prefix="one"))
    two = feed_server.feed("/2", numbered(4, prefix="two"))
    path = config(tmp_path, f"  - name: one\n    url: {one}\n    backfill: 1\n  - name: two\n    url: {two}\n")
    data = json.loads(invoke("preview", "-c", str(path), "--format", "json", "--all", "--feed", "one").output)
    assert [f["name"] for f in data["feeds"]] == ["one"]
    assert len([p for p in data["posts"] if p["action"] == "post"]) == 8  # 4 entries x 2 accounts
    result = invoke("preview", "-c", str(path), "--feed", "nope")
    assert result.exit_code == 2 and "no feed named 'nope'" in result.output


def test_seed_then_nothing_new_and_edits_are_not_reposted(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    now = datetime.now(UTC)
    items = [{"title": "Premier", "link": "https://example.org/1", "guid": "1", "published": now - timedelta(hours=1)}]
    feed_server.feed("/f", rss(items), etag='"v1"')
    path = config(tmp_path, f"  - name: f\n    url: {feed_server.url('/f')}\n")
    result = invoke("seed", "-c", str(path))
    assert result.exit_code == 0 and "1 entries marked seen" in result.output
    items[0]["title"] = "Premier (corrigé)"
    items.append({"title": "Second", "link": "https://example.org/2", "guid": "2", "published": now})
    feed_server.feed("/f", rss(items), etag='"v2"')
    data = json.loads(invoke("preview", "-c", str(path), "--format", "json").output)
    assert {p["title"] for p in data["posts"]} == {"Second"}


def test_preview_needs_no_secret_but_warns(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["preview", "-c", str(EXAMPLE)])
    assert result.exit_code == 0
    assert "RELAY_MASTODON_TOKEN" in result.stderr


def test_init_writes_a_working_configuration(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    assert invoke("init", str(target)).exit_code == 0
    assert (target / "feeds.yaml").exists() and (target / "templates" / "news.j2").exists()
    assert invoke("check", "-c", str(target / "feeds.yaml")).exit_code == 0
    assert "nothing to write" in invoke("init", str(target)).output


def test_a_cron_run_with_nothing_due_imports_only_what_it_uses(tmp_path: Path) -> None:
    """The no-op run (a cron line every few minutes, nothing due) reads feeds.yaml and the
    state, and loads neither the feed, HTTP, template and text machinery nor the SDKs."""
    (tmp_path / "feed.xml").write_text(
        '<rss version="2.0"><channel><title>t</title><item><title>a</title>'
        "<link>https://site.example/a</link></item></channel></rss>"
    )
    (tmp_path / "feeds.yaml").write_text(
        "accounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "feeds:\n  - name: a\n    url: ./feed.xml\n    every: 1h\n"
    )
    env = {"TOKEN": "x", "RELAY_STATE_DIR": str(tmp_path / "state")}
    seeded = relay_process("seed", "-c", str(tmp_path / "feeds.yaml"), env=env)
    assert seeded.wait(timeout=60) == 0, seeded.communicate()
    run = relay_process("run", "-c", str(tmp_path / "feeds.yaml"), env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    _, imports = run.communicate(timeout=60)
    assert run.returncode == 0, imports
    imported = {line.rsplit("|", 1)[-1].strip() for line in imports.splitlines() if line.startswith("import time:")}
    assert "relay.config" in imported and "relay.store" in imported
    heavy = {
        "jinja2",
        "feedparser",
        "httpx",
        "regex",
        "relay.text",
        "relay.poll",
        "relay.render",
        "mastodon",
        "atproto",
    }
    assert heavy & imported == set()


def test_preview_paces_in_the_order_run_sends(tmp_path: Path) -> None:
    """max_per_run 3, a campaign's call to action and four feeds with new items on a first
    run: run sends the call first, then each feed's oldest item, one per feed in turn, feeds
    by name; preview says which wait."""
    result = invoke("preview", "-c", str(EXAMPLE), "--format", "json")
    posts = json.loads(result.output)["posts"]
    later = {
        (p["feed"], p["title"][:20]) for p in posts if p["account"] == "mastodon" and "pacing" in (p["reason"] or "")
    }
    now = {
        (p["feed"], p["title"][:20])
        for p in posts
        if p["account"] == "mastodon" and p["action"] in ("post", "quote", "boost") and not p["reason"]
    }
    assert {feed for feed, _ in now} == {"@campaign:petition-hdh", "allie-bsky", "framablog"}
    assert ("petition", "La pétition est lanc") in later  # the petition's oldest, in the next turn
    assert {feed for feed, _ in later} == {"santenathon", "petition"}
