"""`relay add`: the feed behind an address a campaigner has (a home page, a Mastodon or
Bluesky profile, a feed), and feeds.yaml with it appended, comments and order kept
(ruamel.yaml's round trip). Every fetch goes through the guarded fetcher; a feed named by a
page is fetched as a redirect from that page would be (a public address, unless the page's
own host is private or the network policy allows private ones)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from relay.config import Config
from relay.context import NO_PROGRESS, Progress, showing
from relay.errors import ConfigError, ParseError
from relay.fetch import FetchRequest, fetch_one, make_client
from relay.models import ParsedFeed
from relay.parse import parse_feed
from relay.social import feed_url_of

PAGE_MAX_BYTES = 2_000_000  # a home page read for its <link rel="alternate">
FEED_MAX_BYTES = 10_000_000
TIMEOUT = 20.0
COMMON_PATHS = ("/feed/", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml")
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json")


class DiscoveryError(Exception):
    """No feed found at the address: one line saying what was tried."""


@dataclass(frozen=True)
class Found:
    url: str  # the feed's address, as it goes into feeds.yaml
    parsed: ParsedFeed
    how: str  # "the page's <link rel=alternate>", "a common path", "a Mastodon profile"…
    choices: tuple[tuple[str, str], ...] = ()  # every (url, title) the page listed


class _Alternates(HTMLParser):
    """The <link rel="alternate" type="…rss/atom…"> of a page, in order, and its <base>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.base = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): (value or "") for name, value in attrs}
        if tag == "base" and not self.base:
            self.base = values.get("href", "")
        if tag != "link" or "alternate" not in values.get("rel", "").lower().split():
            return
        kind = values.get("type", "").lower().split(";")[0].strip()
        if kind in FEED_TYPES[:2] and values.get("href"):
            self.links.append((values["href"].strip(), values.get("title", "").strip()))


def alternates(page: bytes, page_url: str) -> list[tuple[str, str]]:
    """The feeds a page names, absolute (its <base> honoured), http(s) only, in order."""
    parser = _Alternates()
    parser.feed(page[:PAGE_MAX_BYTES].decode("utf-8", errors="replace"))
    base = urljoin(page_url, parser.base) if parser.base else page_url
    found: list[tuple[str, str]] = []
    for href, title in parser.links:
        url = urljoin(base, href)
        if urlsplit(url).scheme in ("http", "https") and url not in [u for u, _ in found]:
            found.append((url, title))
    return found


def discover(url: str, config: Config | None, *, pick: int | None = None, progress: Progress = NO_PROGRESS) -> Found:
    """The feed behind url: url itself when it is a feed; a Mastodon or Bluesky profile's
    feed; the page's <link rel="alternate"> (the first, or the pick-th); else a common path
    (progress counts the paths tried)."""
    allow_private = bool(config and config.network.allow_private)
    with make_client(max_connections=4) as client:

        def fetch(address: str, max_bytes: int, *, trusted: str | None = None) -> tuple[bytes, str, str]:
            result = fetch_one(
                FetchRequest("add", address, max_bytes=max_bytes, timeout=TIMEOUT),
                client,
                allow_private=allow_private,
                trusted=trusted,
            )
            if result.status != "ok":
                error = str(result.error or "")
                if error.startswith("body over"):  # not a feeds.yaml key here: say what to do
                    error = error.split(" (")[0] + ": give the feed's own address"
                raise DiscoveryError(f"{address}: {error}")
            return result.body, result.content_type, result.final_url or address

        def as_feed(address: str, body: bytes, kind: str) -> ParsedFeed | None:
            try:
                return parse_feed(body, feed_name="add", url=address, content_type=kind)
            except ParseError:
                return None

        profile = feed_url_of(url)
        if profile:
            body, kind, _ = fetch(profile, FEED_MAX_BYTES)
            parsed = as_feed(profile, body, kind)
            if parsed is None:
                raise DiscoveryError(f"{profile}: not a feed (the profile's feed was expected there)")
            return Found(profile, parsed, "a Mastodon or Bluesky profile's feed")
        body, kind, final = fetch(url, PAGE_MAX_BYTES)
        parsed = as_feed(url, body, kind)
        if parsed is not None:
            return Found(url, parsed, "the address itself is a feed")
        listed = alternates(body, final)
        if listed:
            if pick is not None and not 1 <= pick <= len(listed):
                raise DiscoveryError(f"{url}: --pick {pick}, but the page names {len(listed)} feeds")
            chosen = listed[(pick or 1) - 1][0]
            feed_body, feed_kind, _ = fetch(chosen, FEED_MAX_BYTES, trusted=url)
            feed = as_feed(chosen, feed_body, feed_kind)
            if feed is None:
                raise DiscoveryError(f"{chosen}: named by the page as its feed, but not a feed")
            return Found(chosen, feed, 'the page\'s <link rel="alternate">', tuple(listed))
        root = urlunsplit((*urlsplit(final)[:2], "", "", ""))
        # beside the page first (a blog under /blog/), then at the site's root
        candidates = list(
            dict.fromkeys(
                [urljoin(final, path.lstrip("/")) for path in COMMON_PATHS] + [root + path for path in COMMON_PATHS]
            )
        )
        tried = []
        with showing(progress, "trying the common paths", len(candidates)):
            for candidate in candidates:
                path = urlsplit(candidate).path
                try:
                    feed_body, feed_kind, _ = fetch(candidate, FEED_MAX_BYTES, trusted=url)
                except DiscoveryError:
                    tried.append(path)
                    progress.step(failed=True)
                    continue
                feed = as_feed(candidate, feed_body, feed_kind)
                if feed is not None:
                    return Found(candidate, feed, f"the common path {path}")
                tried.append(path)
                progress.step(failed=True)
        raise DiscoveryError(
            f'{url}: an HTML page that names no feed (no <link rel="alternate">), and none at {", ".join(tried)}'
        )


def check_feeds(urls: list[str], config: Config | None, progress: Progress = NO_PROGRESS) -> dict[str, str]:
    """The feeds among urls that do not answer as a feed now, each with its reason (one
    line): fetched in parallel through the guarded fetcher, with the bounds of `relay add`,
    and parsed; progress counts them."""
    from relay.fetch import fetch_each

    allow_private = bool(config and config.network.allow_private)
    failing: dict[str, str] = {}
    with showing(progress, "checking feeds", len(urls)), make_client(max_connections=4) as client:
        requests = [FetchRequest("import", url, max_bytes=FEED_MAX_BYTES, timeout=TIMEOUT) for url in urls]
        for index, result in fetch_each(requests, client, allow_private=allow_private):
            url = urls[index]
            if result.status != "ok":
                failing[url] = str(result.error or result.status)
            else:
                try:
                    parse_feed(result.body, feed_name="import", url=url, content_type=result.content_type)
                except ParseError as exc:
                    failing[url] = str(exc)
            progress.step(failed=url in failing)
    return failing


def canonical(url: str) -> str:
    """An address as two spellings of the same feed compare: scheme and host lowercased,
    default port, trailing slash and fragment dropped."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    return urlunsplit(
        (
            "https" if parts.scheme.lower() in ("http", "https") else parts.scheme.lower(),
            netloc,
            parts.path.rstrip("/"),
            parts.query,
            "",
        )
    )


def name_for(found: Found | str, url: str, taken: set[str]) -> str:
    """A feed name from the feed's title (else the host): lowercase words joined by -, unique."""
    title = found if isinstance(found, str) else found.parsed.title
    base = re.sub(r"[^a-z0-9]+", "-", _ascii(title or urlsplit(url).hostname or "feed").lower()).strip("-")
    base = base[:40].strip("-") or "feed"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def _ascii(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def append_feed(path: Path, entry: dict[str, Any]) -> None:
    """Append one feed to feeds.yaml's `feeds:` list, everything else kept as written
    (comments, order, quotes): a round trip through ruamel.yaml, not a rewrite."""
    _append(path, [entry])


def _append(path: Path, entries: list[dict[str, Any]]) -> None:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(path.read_text(encoding="utf-8"))
    if data is None or not isinstance(data, dict):
        raise ConfigError([f"{path.name}: not a mapping with a 'feeds:' list"])
    feeds = data.get("feeds")
    if feeds is None or (isinstance(feeds, list) and not feeds):
        feeds = CommentedSeq()
        data["feeds"] = feeds
    if not isinstance(feeds, list):
        raise ConfigError([f"{path.name}: feeds: must be a list"])
    for entry in entries:
        mapping = CommentedMap()
        for key, value in entry.items():
            mapping[key] = value
        feeds.append(mapping)
    temporary = path.with_name(path.name + ".relay-add")
    with temporary.open("w", encoding="utf-8") as stream:
        yaml.dump(data, stream)
    temporary.replace(path)


# OPML: a feed reader's list of subscriptions (relay import), and feeds.yaml as one (relay export)

OPML_MAX_BYTES = 5_000_000  # a reader's export of thousands of feeds is far smaller


@dataclass(frozen=True)
class Subscription:
    url: str
    title: str
    categories: tuple[str, ...]  # the outlines it is nested in, outermost first


def read_opml(data: bytes, source: str) -> list[Subscription]:
    """Every outline with an http(s) xmlUrl, in order. An OPML over OPML_MAX_BYTES, or one
    that declares entities (the billion laughs), is refused with one line."""
    import xml.etree.ElementTree as ElementTree

    if len(data) > OPML_MAX_BYTES:
        raise DiscoveryError(f"{source}: {len(data):,} bytes: an OPML file is refused over {OPML_MAX_BYTES:,}")
    if b"<!ENTITY" in data.upper() or b"<!DOCTYPE" in data.upper():
        raise DiscoveryError(f"{source}: declares a DOCTYPE or entities, which an OPML file never needs: refused")
    try:
        root = ElementTree.fromstring(data)  # noqa: S314 - no DOCTYPE, so no entity can expand
    except ElementTree.ParseError as exc:
        raise DiscoveryError(f"{source}: not an OPML file ({exc})") from None
    body = root.find("body")
    if root.tag.lower() != "opml" or body is None:
        raise DiscoveryError(f"{source}: not an OPML file (no <opml><body>)")
    found: list[Subscription] = []

    def walk(node: Any, categories: tuple[str, ...]) -> None:
        for outline in node.findall("outline"):
            url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
            title = (outline.get("title") or outline.get("text") or "").strip()
            if url:
                if urlsplit(url).scheme.lower() in ("http", "https"):
                    found.append(Subscription(url, title, categories))
            else:
                walk(outline, (*categories, title) if title else categories)
            if url:
                walk(outline, categories)

    walk(body, ())
    return found


def write_opml(config: Config) -> str:
    """feeds.yaml as an OPML 2.0 list: each http(s) feed as written (a ${VAR} stays one)."""
    from datetime import UTC, datetime
    from email.utils import format_datetime
    from xml.sax.saxutils import quoteattr

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        "  <head>",
        f"    <title>relay: {config.path.name}</title>",
        f"    <dateCreated>{format_datetime(datetime.now(UTC))}</dateCreated>",
        "  </head>",
        "  <body>",
    ]
    for feed in config.feeds:
        # the address fetched (a profile's feed), unless it holds a secret: then as written
        url = feed.url if "${" in feed.url else feed.fetch_url
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            continue
        name = quoteattr(feed.name)
        lines.append(f'    <outline type="rss" text={name} title={name} xmlUrl={quoteattr(url)}/>')
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)


def append_feeds(path: Path, entries: list[dict[str, Any]]) -> None:
    """append_feed for many, in one write."""
    if entries:
        _append(path, entries)
