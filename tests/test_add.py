"""relay add (issue 12, part 1) against a loopback site: a home page naming its feed (relative
href, <base>), several feeds (--pick), none but a common path, a redirect, a 404, a page too
big, a feed already there; feeds.yaml appended to with its comments and order kept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from relay.config import load_config
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay

CONFIG = """\
# feeds.yaml of a collective: these comments must survive `relay add`
defaults:
  every: 30m     # poll every half hour
  hashtags: [SantéNumérique]

accounts:
  mastodon:
    platform: mastodon
    instance: https://mastodon.example
    token: ${TOKEN}

feeds:
  # the first feed, as written by hand
  - name: quadrature
    url: https://www.laquadrature.net/feed/
    include: ["santé", "/microsoft|cloud act/"]
network:
  allow_private: true   # the test site is on loopback
"""


def page(*links: str, base: str = "") -> bytes:
    head = f'<base href="{base}">' if base else ""
    head += "".join(
        f'<link rel="alternate" type="application/rss+xml" title="Flux {n}" href="{href}">'
        for n, href in enumerate(links, 1)
    )
    return f"<!doctype html><html><head><title>Site</title>{head}</head><body>Bonjour</body></html>".encode()


def html(body: bytes) -> Response:
    return Response(200, body, {"Content-Type": "text/html; charset=utf-8"})


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    return path


def add(config: Path, *args: str) -> object:
    return relay("add", "-c", str(config), *args, env={"TOKEN": "x"})


def site(feed_server: FeedServer) -> str:
    return f"/site-{uuid.uuid4().hex[:6]}"


def test_a_home_page_with_a_relative_link(config: Path, feed_server: FeedServer) -> None:
    root = site(feed_server)
    feed_server.add(f"{root}/", lambda request: html(page("feed.xml")))
    feed_url = feed_server.feed(f"{root}/feed.xml", numbered(5, prefix="actu"))
    result = add(config, feed_server.url(f"{root}/"))
    assert result.exit_code == 0, result.output
    assert f'found {feed_url} (the page\'s <link rel="alternate">)' in result.output
    assert "  Test feed: 5 items" in result.output and "  - " in result.output
    assert result.output.count("\n  - ") == 3  # the newest three
    text = config.read_text()
    assert text.startswith(CONFIG.split("network:")[0].rstrip())  # everything before, as written
    for comment in ("# feeds.yaml of a collective", "# poll every half hour", "# the first feed", "# the test site"):
        assert comment in text
    loaded = load_config(config, environ={"TOKEN": "x"})
    added = loaded.feeds[-1]
    assert (added.name, added.url, added.backfill) == ("test-feed", feed_url, 0)
    again = add(config, feed_server.url(f"{root}/"))
    assert again.exit_code == 2 and "is already in feeds.yaml as 'test-feed'" in again.output


def test_several_feeds_take_the_first_or_the_pick(config: Path, feed_server: FeedServer) -> None:
    root = site(feed_server)
    feed_server.add(f"{root}/", lambda request: html(page("/x/articles.xml", "comments.xml", base=f"{root}/y/")))
    feed_server.feed(f"{root}/x/articles.xml", numbered(2, prefix="article"))
    comments = feed_server.feed(f"{root}/y/comments.xml", numbered(2, prefix="commentaire"))
    result = add(config, feed_server.url(f"{root}/"), "--pick", "2", "--name", "commentaires", "--to", "mastodon")
    assert result.exit_code == 0, result.output
    assert "  * --pick 2: " + comments + " (Flux 2)" in result.output
    assert "--pick 1: " in result.output
    feed = load_config(config, environ={"TOKEN": "x"}).feeds[-1]
    assert (feed.name, feed.url, feed.to) == ("commentaires", comments, ("mastodon",))
    wrong = add(config, feed_server.url(f"{root}/"), "--pick", "5")
    assert wrong.exit_code == 2 and "--pick 5, but the page names 2 feeds" in wrong.output


def test_no_link_but_a_common_path_and_a_redirect(config: Path, feed_server: FeedServer) -> None:
    root = site(feed_server)
    feed_server.add(f"{root}/old", lambda request: Response(301, b"", {"Location": f"{root}/"}))
    feed_server.add(f"{root}/", lambda request: html(page()))
    found = feed_server.feed(f"{root}/index.xml", numbered(1, prefix="billet"))
    result = add(config, feed_server.url(f"{root}/old"))
    assert result.exit_code == 0, result.output
    assert f"found {found} (the common path {root}/index.xml)" in result.output


def test_a_feed_address_is_added_as_it_is(config: Path, feed_server: FeedServer) -> None:
    url = feed_server.feed(f"{site(feed_server)}.rss", numbered(3, prefix="note"))
    result = add(config, url)
    assert result.exit_code == 0 and "(the address itself is a feed)" in result.output


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (lambda request: Response(404, b"not found", {"Content-Type": "text/html"}), "HTTP 404"),
        (lambda request: html(b"<html>" + b"x" * 3_000_000 + b"</html>"), "body over 2,000,000 bytes: give the feed's"),
        (lambda request: html(page()), "an HTML page that names no feed"),
    ],
)
def test_nothing_to_add_is_one_line_and_feeds_yaml_is_untouched(
    config: Path, feed_server: FeedServer, respond: object, message: str
) -> None:
    root = site(feed_server)
    feed_server.add(f"{root}/", respond)  # type: ignore[arg-type]
    result = add(config, feed_server.url(f"{root}/"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert config.read_text() == CONFIG


def test_the_starter_and_the_offline_example_keep_every_comment(tmp_path: Path, feed_server: FeedServer) -> None:
    root = Path(__file__).resolve().parent.parent
    for source in (root / "relay" / "starter" / "feeds.yaml", root / "examples" / "offline" / "feeds.yaml"):
        path = tmp_path / "feeds.yaml"
        text = source.read_text()
        path.write_text(text + "\nnetwork:\n  allow_private: true\n")
        url = feed_server.feed(f"{site(feed_server)}.rss", numbered(1, prefix="nouveau"))
        result = relay(
            "add", "-c", str(path), url, env={"RELAY_MASTODON_TOKEN": "x", "RELAY_BLUESKY_APP_PASSWORD": "y"}
        )
        assert result.exit_code == 0, result.output
        written = path.read_text()
        comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
        assert all(comment in written for comment in comments)
        loaded = load_config(path, environ={"RELAY_MASTODON_TOKEN": "x", "RELAY_BLUESKY_APP_PASSWORD": "y"})
        assert loaded.feeds[-1].url == url and loaded.feeds[-1].backfill == 0


# OPML (issue 12, part 2)

FEEDLY = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
  <head><title>Abonnements de Claire dans feedly Cloud</title></head>
  <body>
    <outline text="Santé numérique" title="Santé numérique">
      <outline type="rss" text="La Quadrature du Net" title="La Quadrature du Net"
        xmlUrl="https://www.laquadrature.net/feed/" htmlUrl="https://www.laquadrature.net/"/>
      <outline type="rss" text="InterHop &amp; co" title="InterHop &amp; co" xmlUrl="https://interhop.org/feed.xml"/>
    </outline>
    <outline text="Logiciel libre">
      <outline text="April &#8211; promouvoir le libre" xmlUrl="https://www.april.org/fr/rss.xml"/>
    </outline>
    <outline text="Framablog" xmlUrl="https://framablog.org/feed/"/>
    <outline text="Pas un flux" xmlUrl="javascript:alert(1)"/>
  </body>
</opml>
"""


def test_import_adds_every_feed_once_with_its_folders_as_hashtags(config: Path, tmp_path: Path) -> None:
    opml = tmp_path / "feedly.opml"
    opml.write_text(FEEDLY)
    result = relay("import", "-c", str(config), str(opml), "--categories-as-hashtags", "--no-check", env={"TOKEN": "x"})
    assert result.exit_code == 0, result.output
    assert "skipped https://www.laquadrature.net/feed/: already in feeds.yaml as 'quadrature'" in result.output
    assert "3 feeds added to feeds.yaml (backfill: 0), 1 skipped" in result.output
    feeds = load_config(config, environ={"TOKEN": "x"}).feeds
    added = {feed.name: feed for feed in feeds[1:]}
    assert set(added) == {"interhop-co", "april-promouvoir-le-libre", "framablog"}
    assert added["interhop-co"].hashtags == ("SantéNumérique",)
    assert added["april-promouvoir-le-libre"].hashtags == ("LogicielLibre",)
    assert all(feed.backfill == 0 for feed in added.values())
    assert "# the first feed, as written by hand" in config.read_text()
    again = relay("import", "-c", str(config), str(opml), "--no-check", env={"TOKEN": "x"})
    assert "0 feeds added to feeds.yaml (backfill: 0), 4 skipped" in again.output


def test_export_then_import_is_a_round_trip(config: Path, tmp_path: Path) -> None:
    exported = relay("export", "--opml", "-c", str(config), env={"TOKEN": "x"})
    assert exported.exit_code == 0 and exported.output.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">'
    )
    assert (
        '<outline type="rss" text="quadrature" title="quadrature" xmlUrl="https://www.laquadrature.net/feed/"/>'
        in exported.output
    )
    opml = tmp_path / "out.opml"
    opml.write_text(exported.output)
    other = tmp_path / "other.yaml"
    other.write_text(
        "accounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\nfeeds: []\n"
    )
    imported = relay("import", "-c", str(other), str(opml), "--no-check", env={"TOKEN": "x"})
    assert imported.exit_code == 0, imported.output
    assert [(f.name, f.url) for f in load_config(other, environ={"TOKEN": "x"}).feeds] == [
        ("quadrature", "https://www.laquadrature.net/feed/")
    ]


def test_import_fetches_each_new_feed_and_leaves_out_those_that_do_not_answer(
    config: Path, tmp_path: Path, feed_server: FeedServer
) -> None:
    alive = feed_server.feed("/alive.rss", numbered(2))
    also = feed_server.feed("/also.rss", numbered(1))
    home = feed_server.add("/home", lambda r: html(page()))
    missing = feed_server.url("/gone.rss")
    outlines = "".join(
        f'<outline text="{title}" xmlUrl="{url}"/>'
        for title, url in [("Vivant", alive), ("Aussi", also), ("Accueil", home), ("Disparu", missing)]
    )
    opml = tmp_path / "reader.opml"
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><body>{outlines}</body></opml>')
    result = relay("import", "-c", str(config), str(opml), env={"TOKEN": "x"})
    assert result.exit_code == 1, result.output
    assert f"relay import: not added {missing}: HTTP 404" in result.output
    assert f"relay import: not added {home}: a web page, not a feed: `relay add {home}` finds" in result.output
    assert "2 feeds added to feeds.yaml (backfill: 0), 0 skipped, 2 not added" in result.output
    added = [feed.url for feed in load_config(config, environ={"TOKEN": "x"}).feeds[1:]]
    assert added == [alive, also]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            '<opml version="2.0"><body><outline text="&lol2;" xmlUrl="https://x.example/feed"/></body></opml>',
            "declares a DOCTYPE or entities",
        ),
        ("<opml><body><!--" + "x" * 50_000_000 + "--></body></opml>", "an OPML file is refused over 5,000,000"),
        ("<html><body>not opml</body></html>", "not an OPML file (no <opml><body>)"),
        ("<opml><body><outline", "not an OPML file (unclosed token"),
    ],
)
def test_a_hostile_or_broken_opml_is_one_line_and_changes_nothing(
    config: Path, tmp_path: Path, content: str, message: str
) -> None:
    opml = tmp_path / "bad.opml"
    opml.write_text(content)
    result = relay("import", "-c", str(config), str(opml), env={"TOKEN": "x"})
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert config.read_text() == CONFIG
