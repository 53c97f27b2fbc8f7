"""`relay preview --html` (issue 12, part 3): one self-contained page of the posts, each
account a column, as Mastodon and Bluesky show them; tested in Debian's headless Chromium
through Playwright, with hostile feed text: shown as text, no script run, nothing loaded."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.page import Pictures, bluesky_html, mastodon_html, render_page
from tests.support import feedserver as fs
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay, relay_process

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OFFLINE = ROOT / "examples" / "offline" / "feeds.yaml"
HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1"> </script><script>window.__pwned=6</script> \u202eHDH'
HOSTILE_TEXT = (
    '</script><script>window.__pwned=2</script> "><svg onload="window.__pwned=3"> '
    "\u202etxet desrever\u202c et &lt;b onmouseover=window.__pwned=4&gt;gras&lt;/b&gt;"
)
IMAGES = "app.bsky.embed.images"
SENTENCE = "Le Health Data Hub reste hébergé chez Microsoft malgré les recours des associations. "


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and the text of its <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


class Text(HTMLParser):
    """The text content of a fragment, as a browser's textContent."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(html: str) -> str:
    parser = Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(out, format="JPEG")
    return out.getvalue()


def serve_site(feed_server: FeedServer) -> dict[str, str]:
    """A loopback site: an article page with its og:image, the images, and three feeds (a
    hostile one, one with a card image and images, one long enough for a thread)."""
    image = jpeg(1200, 630)
    photo = jpeg(800, 800)
    urls = {
        "og": feed_server.add("/og.jpg", lambda r: Response(200, image, {"Content-Type": "image/jpeg"})),
        "photo": feed_server.add("/photo.jpg", lambda r: Response(200, photo, {"Content-Type": "image/jpeg"})),
    }
    article = (
        "<!DOCTYPE html><html><head><title>Article</title>"
        '<meta property="og:title" content="Recours au Conseil d\'État">'
        '<meta property="og:description" content="Le collectif dépose un recours.">'
        f'<meta property="og:image" content="{urls["og"]}"></head><body>…</body></html>'
    ).encode()
    urls["article"] = feed_server.add("/article", fs.static(article, "text/html; charset=utf-8"))

    def rss(title: str, items: str) -> bytes:
        return (
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0' xmlns:media='http://search.yahoo.com/mrss/'>"
            f"<channel><title>{title}</title><link>https://example.org/</link><language>fr</language>{items}"
            "</channel></rss>"
        ).encode()

    date = format_datetime(NOW)
    hostile = (
        f"<item><title>{escape(HOSTILE_TITLE)}</title><link>https://example.org/hostile</link><guid>h1</guid>"
        f"<description>{escape('<p>' + HOSTILE_TEXT + '</p><img src=x onerror=window.__pwned=5>')}</description>"
        f"<pubDate>{date}</pubDate></item>"
    )
    pictured = (
        f"<item><title>Recours au Conseil d'État</title><link>{urls['article']}</link><guid>p1</guid>"
        "<description>"
        + escape(
            f'<p>Le collectif SantéNathon saisit le Conseil d’État.</p><img src="{urls["photo"]}" alt="Une photo">'
        )
        + f"</description><pubDate>{date}</pubDate></item>"
    )
    long = (
        f"<item><title>Un long texte</title><link>https://example.org/long</link><guid>l1</guid>"
        f"<description>{escape('<p>' + SENTENCE * 14 + '</p>')}</description><pubDate>{date}</pubDate></item>"
    )
    urls["hostile"] = feed_server.feed("/hostile.rss", rss("Hostile", hostile))
    urls["pictured"] = feed_server.feed("/pictured.rss", rss("Collectif", pictured))
    urls["long"] = feed_server.feed("/long.rss", rss("Long", long))
    return urls


def write_config(tmp_path: Path, urls: dict[str, str]) -> Path:
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  backfill: 5\n  language: fr\n"
        "network:\n  allow_private: true\n"
        "accounts:\n"
        "  masto:\n    platform: mastodon\n    instance: https://mastodon.example\n    token: ${T}\n"
        "  sky:\n    platform: bluesky\n    handle: collectif.bsky.social\n    app_password: ${P}\n"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 100\n"
        "feeds:\n"
        f"  - name: hostile\n    url: {urls['hostile']}\n"
        f"  - name: pictured\n    url: {urls['pictured']}\n    images: true\n    bluesky_embed: card\n"
        f"    credit: {{mastodon: '@collectif@mastodon.example'}}\n"
        f"  - name: long\n    url: {urls['long']}\n    template: news-en\n    thread: 3\n"
    )
    return config


def preview_json(config: Path) -> dict[str, Any]:
    result = relay("preview", "-c", str(config), "--format", "json", now=NOW)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def write_page(config: Path, page: Path) -> str:
    result = relay("preview", "-c", str(config), "--html", str(page), now=NOW)
    assert result.exit_code == 0, result.output
    assert f"preview page written to {page}: " in result.output.splitlines()[-1]  # said last
    return page.read_text(encoding="utf-8")


def check_self_contained(html: str) -> Tags:
    """No script, no external resource, a policy that forbids both, its style by hash."""
    tags = Tags()
    tags.feed(html)
    names = {tag for tag, _ in tags.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "form", "frame", "svg", "video", "audio"}
    for tag, attrs in tags.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if "src" in attrs:
            assert tag == "img" and (attrs["src"] or "").startswith("data:image/jpeg;base64,"), (tag, attrs)
        if "href" in attrs:
            assert re.match(r"^https?://", attrs["href"] or ""), (tag, attrs)
    policy = next(
        a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert policy is not None
    assert "default-src 'none'" in policy and "script-src 'none'" in policy and "img-src data:;" in policy
    digest = base64.b64encode(hashlib.sha256(tags.style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in policy
    assert "url(" not in tags.style and "@import" not in tags.style
    return tags


def test_the_offline_example_as_a_page(tmp_path: Path) -> None:
    page = tmp_path / "preview.html"
    html = write_page(OFFLINE, page)
    tags = check_self_contained(html)
    posts = preview_json(OFFLINE)["posts"]
    articles = [attrs for tag, attrs in tags.tags if tag == "article"]
    assert sorted(int(a["data-index"] or -1) for a in articles) == list(range(len(posts)))
    for attrs in articles:
        post = posts[int(attrs["data-index"] or -1)]
        assert (attrs["data-account"], attrs["data-action"]) == (post["account"], post["action"])
    assert html.count('class="card"') == sum(1 for p in posts if p["embed"] and "external" in p["embed"]) + sum(
        1 for p in posts if p["platform"] == "mastodon" and p["action"] == "post" and p["text"] and "http" in p["text"]
    )


@pytest.mark.browser
def test_the_page_in_chromium_shows_each_post_as_the_json_has_it(
    tmp_path: Path, feed_server: FeedServer, browser: Any
) -> None:
    urls = serve_site(feed_server)
    config = write_config(tmp_path, urls)
    data = preview_json(config)
    page_file = tmp_path / "preview.html"
    html = write_page(config, page_file)
    check_self_contained(html)
    posts = data["posts"]
    actions = {(p["feed"], p["platform"]): p["action"] for p in posts}
    assert actions[("long", "bluesky")] == "thread" and actions[("hostile", "mastodon")] == "post"

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri())
    shot = tmp_path / "preview.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # kept under the test's temp dir, the CI artifact
    print(f"screenshot: {shot}")

    assert requests == [page_file.as_uri()]  # nothing but the page itself is loaded
    assert page.evaluate("typeof window.__pwned") == "undefined"  # no injected handler ran
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('img:not([src^=\"data:\"]), svg').length") == 0
    assert page.title().startswith("relay preview")
    for index, post in enumerate(posts):
        article = f'article[data-index="{index}"]'
        if post["text"] is None:
            continue
        assert page.eval_on_selector(f"{article} > .text", "e => e.textContent") == post["text"], post["key"]
        count = page.eval_on_selector(f"{article} > .head > .count", "e => e.textContent")
        assert count == f"{post['length']}/{post['limit']}"
        replies = page.eval_on_selector_all(f"{article} .reply-text", "es => es.map(e => e.textContent)")
        assert replies == [part["text"] for part in post["thread"] or []]

    hostile = next(p for p in posts if p["feed"] == "hostile" and p["platform"] == "mastodon")
    shown = page.eval_on_selector(f'article[data-index="{posts.index(hostile)}"] > .text', "e => e.textContent")
    assert "<img src=x onerror=" in shown and "</script><script>" in shown  # as text
    assert "\u202e" not in shown  # relay drops bidi overrides from feed text

    # the card: relay's own on Bluesky (the item's image), the instance's on Mastodon (og:image)
    sky = posts.index(next(p for p in posts if p["feed"] == "pictured" and p["platform"] == "bluesky"))
    assert page.eval_on_selector(f'article[data-index="{sky}"] .card-title', "e => e.textContent") == (
        "Recours au Conseil d'État"
    )
    width = page.eval_on_selector(f'article[data-index="{sky}"] .card img.thumb', "e => e.naturalWidth")
    assert 0 < width <= 360  # decoded, and shrunk
    assert page.eval_on_selector_all(f'article[data-index="{sky}"] .images', "es => es.length") == 0  # the card
    masto = posts.index(next(p for p in posts if p["feed"] == "pictured" and p["platform"] == "mastodon"))
    alts = page.eval_on_selector_all(f'article[data-index="{masto}"] .images img', "es => es.map(e => e.alt)")
    assert alts == ["Une photo"]
    links = page.eval_on_selector_all(f'article[data-index="{masto}"] > .text a', "es => es.map(e => e.href)")
    assert "https://mastodon.example/@collectif" in links  # the credit, a live mention
    assert errors == []

    # The escaping holds alone: the same page without its policy runs no injected script either.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html), encoding="utf-8")
    page.goto(bare.as_uri())
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.close()


def test_the_page_counts_as_the_listing_and_folds_what_every_account_skips(tmp_path: Path) -> None:
    html = write_page(OFFLINE, tmp_path / "page.html")
    posts = preview_json(OFFLINE)["posts"]
    sent = [p for p in posts if p["action"] in ("post", "thread", "boost", "quote")]
    later = [p for p in sent if p["reason"]]
    skipped = [p for p in posts if p["action"] == "skip"]
    assert f"{len(sent)} to post ({len(sent) - len(later)} in the next run, {len(later)} later)" in html
    assert f"{len(skipped)} skipped" in html
    folded = html.split('<details class="skipped">', 1)[1]
    assert folded.count("<article") == len(skipped) - sum(
        1 for p in skipped if any(q["key"] == p["key"] and q["action"] != "skip" for q in posts)
    )
    quote = next(p for p in posts if p["action"] == "quote")
    did, key = quote["original"].removeprefix("at://").split("/app.bsky.feed.post/")
    assert f'href="https://bsky.app/profile/{did}/post/{key}"' in html  # where a person sees it


def test_open_without_html_is_a_usage_error(tmp_path: Path) -> None:
    result = relay("preview", "-c", str(OFFLINE), "--open", now=NOW)
    assert result.exit_code == 2 and "give --html FILE" in result.output


def test_open_hands_the_page_to_the_browser(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    page = tmp_path / "preview.html"
    process = relay_process(
        "preview", "-c", str(OFFLINE), "--html", str(page), "--open", env={"BROWSER": f"{browser} %s"}, now=NOW
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert opened.read_text() == page.resolve().as_uri()


def test_an_unwritable_page_is_one_line(tmp_path: Path) -> None:
    missing = relay("preview", "-c", str(OFFLINE), "--html", str(tmp_path / "missing" / "p.html"), now=NOW)
    assert missing.exit_code == 2  # said before anything is fetched
    assert f"the folder {tmp_path / 'missing'} does not exist" in missing.output
    result = relay("preview", "-c", str(OFFLINE), "--html", "/proc/relay-preview.html", now=NOW)  # even root cannot
    assert result.exit_code == 1
    assert "cannot write the page" in result.output and "Traceback" not in result.output


def slow(kind: str) -> Any:
    """A body of one byte a second for 30 s, of the content type kind."""

    def handler(request: object) -> Response:
        def body() -> Any:
            for _ in range(30):
                time.sleep(1)
                yield b" "

        return Response(200, body, {"Content-Type": kind})

    return handler


def test_thumbnails_stop_at_the_budget(feed_server: FeedServer) -> None:
    slow_image = feed_server.add("/slow.jpg", slow("image/jpeg"))
    started = time.monotonic()
    pictures = Pictures(allow_private=True, budget=1.0)
    pictures.fetch([slow_image, "javascript:alert(1)", "data:image/png;base64,AAAA"])
    assert pictures.thumbs[slow_image].uri is None and "s for pictures passed" in pictures.thumbs[slow_image].why
    assert time.monotonic() - started < 5
    assert pictures.thumbs["javascript:alert(1)"].why == "not an http(s) URL"
    assert pictures.thumbs["data:image/png;base64,AAAA"].uri is None


def test_a_huge_image_is_left_out_with_its_reason(feed_server: FeedServer) -> None:
    url = feed_server.add("/huge.jpg", lambda r: Response(200, b"\xff" * 11_000_000, {"Content-Type": "image/jpeg"}))
    pictures = Pictures(allow_private=True)
    pictures.fetch([url])
    assert pictures.thumbs[url].uri is None and pictures.thumbs[url].why


def test_mastodon_shortens_urls_as_its_web_app_does() -> None:
    html = mastodon_html(
        "Lire https://www.example.org/2026/11/un-tres-long-article-sur-le-hdh #HDH @nous", "https://m.example/"
    )
    assert '<span class="invisible">https://www.</span>' in html
    assert '<span class="ellipsis">example.org/2026/11/un-tres-lo</span>' in html
    assert 'href="https://www.example.org/2026/11/un-tres-long-article-sur-le-hdh"' in html
    assert 'href="https://m.example/tags/HDH"' in html and ">#HDH</a>" in html
    assert 'href="https://m.example/@nous"' in html


def test_bluesky_links_exactly_its_facets_on_byte_boundaries() -> None:
    text = "Été 🇫🇷 example.org/x… #Santé"
    start = len("Été 🇫🇷 ".encode())
    end = start + len("example.org/x…".encode())
    tag = len("Été 🇫🇷 example.org/x… ".encode())
    facets = [
        {
            "index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": "x#link", "uri": "https://example.org/x"}],
        },
        {
            "index": {"byteStart": tag, "byteEnd": tag + len("#Santé".encode())},
            "features": [{"$type": "x#tag", "tag": "Santé"}],
        },
        {"index": {"byteStart": 1, "byteEnd": 2}, "features": [{"$type": "x#link", "uri": "https://bad.example"}]},
        {"index": {"byteStart": 0, "byteEnd": 3}, "features": [{"$type": "x#link", "uri": "javascript:alert(1)"}]},
    ]
    html = bluesky_html(text, facets)
    assert '<a class="url" href="https://example.org/x"' in html and ">example.org/x…</a>" in html
    assert 'href="https://bsky.app/hashtag/Sant%C3%A9"' in html
    assert "bad.example" not in html and "javascript" not in html  # mid-character, not http(s)
    assert text_of(html) == text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
        | st.sampled_from(["<", ">", "&amp;", '"', " #Tag", " @user@host.example", " https://a.example/x?b=1&c=2 "]),
        max_size=12,
    ).map("".join)
)
def test_the_markup_text_is_the_post_text(text: str) -> None:
    assert text_of(mastodon_html(text)) == text
    facets = [{"index": {"byteStart": 0, "byteEnd": len(text.encode())}, "features": [{"$type": "x#tag", "tag": "t"}]}]
    assert text_of(bluesky_html(text, facets)) == text
    assert "<script" not in mastodon_html(text).replace("&lt;script", "")


def test_one_budget_for_the_pages_and_the_images(feed_server: FeedServer) -> None:
    page = feed_server.add("/slow-page", slow("text/html"))
    image = feed_server.add("/slow.jpg", slow("image/jpeg"))
    pictures = Pictures(allow_private=True, budget=1.5)
    started = time.monotonic()
    pictures.read_pages([page])
    pictures.fetch([image])
    assert time.monotonic() - started < 3  # not 1.5 s for each
    assert "s for pictures passed" in pictures.unread[page]
    assert "s for pictures passed" in pictures.thumbs[image].why


def test_secrets_never_reach_the_page(tmp_path: Path, feed_server: FeedServer) -> None:
    """A secret in a feed's address that the site echoes in its og: tags, or that names a
    host in an error, is shown as ${VARIABLE}, as everywhere else."""
    secret = "s3cr3t-t0ken-value"
    article = (
        f'<html><head><meta property="og:title" content="Echo {secret}">'
        f'<meta property="og:description" content="desc"></head></html>'
    ).encode()
    link = feed_server.add("/echo", fs.static(article, "text/html"))
    summary = escape(f'<p>Texte</p><img src="http://{secret}.invalid/x.jpg" alt="x">')
    item = f"<item><title>Titre</title><link>{link}</link><guid>e1</guid><description>{summary}</description></item>"
    body = f"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>{item}</channel></rss>".encode()
    feed_server.add("/feed.xml", fs.static(body, "application/rss+xml"))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "network:\n  allow_private: true\ndefaults:\n  backfill: 5\n"
        "accounts:\n  masto:\n    platform: mastodon\n    instance: https://mastodon.example\n    token: ${T}\n"
        f"feeds:\n  - name: echo\n    url: {feed_server.url('/feed.xml')}?key=${{FEEDTOKEN}}\n    images: true\n"
    )
    page = tmp_path / "page.html"
    result = relay("preview", "-c", str(config), "--html", str(page), env={"FEEDTOKEN": secret}, now=NOW)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert secret not in html and secret not in result.output
    assert "${FEEDTOKEN}" in html  # the echoed title and the error naming the host, masked


def test_a_template_cannot_put_control_characters_in_a_post(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "odd.j2").write_text("{{ item.title }} a\x00b\rc\r\nd {{ item.link }}")
    config = tmp_path / "feeds.yaml"
    config.write_text(OFFLINE.read_text().replace("feeds:\n", "templates: templates\nfeeds:\n", 1))
    for name in ("feeds",):
        (tmp_path / name).symlink_to(OFFLINE.parent / name)
    config.write_text(
        config.read_text().replace(
            "    url: ./feeds/framablog.xml", "    url: ./feeds/framablog.xml\n    template: odd", 1
        )
    )
    posts = preview_json(config)["posts"]
    texts = [p["text"] for p in posts if p["feed"] == "framablog" and p["text"]]
    assert texts and all(" ab\nc\nd " in text for text in texts), texts[:1]


def test_odd_shapes_never_break_the_page() -> None:
    post = {
        "feed": "f",
        "key": "k",
        "title": "t",
        "link": "http://[::1",
        "account": "a",
        "platform": "bluesky",
        "text": "a\ud800b",
        "length": 3,
        "limit": 300,
        "language": "fr",
        "action": "post",
        "reason": None,
        "facets": [{"index": [1, 2]}, {"index": {"byteStart": 0, "byteEnd": 1}, "features": [None]}, {"features": {}}],
        "embed": {"$type": "app.bsky.embed.external", "external": None},
        "original": "http://[::1",
        "images": ["x"],
        "thread": [{"text": "r"}, "y"],
    }
    html = render_page(
        [],
        [post, {**post, "platform": "mastodon", "embed": {"$type": IMAGES, "images": ["z"]}}],
        source="s",
        generated=NOW,
        pictures=None,
    )
    assert "<article" in html
