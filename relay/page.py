"""`relay preview --html`: what the next run would post, as one self-contained page.

Each item is a row, each account a column: the post as Mastodon or Bluesky shows it (links,
hashtags and the credit as links; Mastodon's shortened URLs; Bluesky's facets), its count
against the limit, its action and reason, the link card or the images, the thread's replies.

The page is built from the same posts as `relay preview --format json`, and every text node
holds a post's text exactly as the JSON has it. Feed text is untrusted: it is only ever a
value in relay's own template, escaped there (markupsafe); a link is a link only when it is
http(s). The page loads nothing: its Content-Security-Policy forbids scripts and every
resource but data: images, and its style is allowed by its hash. Thumbnails are fetched
through the guarded fetcher, shrunk and embedded as data URIs; a preview spends at most
IMAGES_BUDGET seconds and MAX_IMAGES images on them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup, escape

from relay.context import NO_PROGRESS, Progress
from relay.text import find_urls

IMAGES_BUDGET = 30.0  # seconds a preview spends fetching thumbnails, in all
MAX_IMAGES = 200  # distinct thumbnails embedded in one page
MAX_PAGES = 100  # article pages read for a card's missing description or image
THUMB_SIDE = 360  # pixels: thumbnails are shrunk to this
THUMB_BYTES = 40_000  # and re-encoded as JPEG under this
FETCH_TIMEOUT = 10.0  # seconds for one image or page
WORKERS = 8

MASTODON_URL_SHOWN = 30  # Mastodon shows a URL's first 30 characters after https://www.
_URL_PREFIX = re.compile(r"\Ahttps?://(www\.)?", re.IGNORECASE)
# a live Mastodon mention (only the credit, from feeds.yaml, is one: feed text is defused)
_MENTION = re.compile(r"(?<![\w@/])@([A-Za-z0-9_]+)(?:@([A-Za-z0-9.\-]+\.[A-Za-z]{2,}))?")
_HASHTAG = re.compile(r"(?<![\w/&])#(\w*[^\W\d_]\w*)")

ACTIONS = {
    "post": "post",
    "thread": "thread",
    "boost": "boost",
    "quote": "quote",
    "hold": "held",
    "skip": "skipped",
}


@dataclass
class Thumb:
    """A picture embedded in the page: its data URI, or why there is none."""

    uri: str | None = None
    why: str = ""


@dataclass
class Card:
    uri: str
    domain: str
    title: str
    description: str
    thumb: Thumb = field(default_factory=Thumb)
    note: str = ""


def href(url: str | None) -> str | None:
    """A URL the page may link to: http(s) only."""
    if url and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return None


def _link(url: str, shown: Markup | str, css: str) -> Markup:
    target = href(url)
    if target is None:
        return Markup("{}").format(shown)
    return Markup('<a class="{}" href="{}" rel="noopener noreferrer nofollow" target="_blank">{}</a>').format(
        css, target, shown
    )


def mastodon_html(text: str, instance: str = "https://mastodon.social") -> Markup:
    """A Mastodon status as the web app of instance shows it: URLs linked and shortened (the
    rest of the URL is in the text, hidden), hashtags and mentions linked. Its text content
    is the text."""
    instance = instance.rstrip("/")
    spans: list[tuple[int, int, Markup]] = []
    for start, end in find_urls(text):
        url = text[start:end]
        prefix = _URL_PREFIX.match(url)
        cut = prefix.end() if prefix else 0
        rest = url[cut:]
        shown = Markup('<span class="invisible">{}</span><span class="{}">{}</span><span class="invisible">{}</span>')
        spans.append(
            (
                start,
                end,
                _link(
                    url,
                    shown.format(
                        url[:cut],
                        "ellipsis" if len(rest) > MASTODON_URL_SHOWN else "",
                        rest[:MASTODON_URL_SHOWN],
                        rest[MASTODON_URL_SHOWN:],
                    ),
                    "url",
                ),
            )
        )
    for match in _HASHTAG.finditer(text):
        spans.append(
            (match.start(), match.end(), _link(f"{instance}/tags/{quote(match.group(1))}", match.group(), "tag"))
        )
    for match in _MENTION.finditer(text):
        user, host = match.group(1), match.group(2)
        profile = f"https://{host}/@{user}" if host else f"{instance}/@{user}"
        spans.append((match.start(), match.end(), _link(profile, match.group(), "mention")))
    return _stitch(text, spans)


def bluesky_html(text: str, facets: Iterable[Mapping[str, Any]]) -> Markup:
    """A Bluesky post as the app shows it: exactly its facets are links (by their UTF-8 byte
    ranges); a facet that does not fall on character boundaries is shown as plain text."""
    # byte offset → code point offset, for the boundaries that exist
    offsets = {0: 0}
    position = 0
    for at, char in enumerate(text):
        position += len(char.encode("utf-8"))
        offsets[position] = at + 1
    spans: list[tuple[int, int, Markup]] = []
    for facet in facets:
        index = facet.get("index") or {}
        start, end = offsets.get(index.get("byteStart", -1)), offsets.get(index.get("byteEnd", -1))
        if start is None or end is None or end <= start or end > len(text) or not facet.get("features"):
            continue
        feature = facet["features"][0]
        kind = str(feature.get("$type", "")).rsplit("#", 1)[-1]
        if kind == "link":
            target, css = str(feature.get("uri", "")), "url"
        elif kind == "tag":
            target, css = f"https://bsky.app/hashtag/{quote(str(feature.get('tag', '')))}", "tag"
        elif kind == "mention":
            did = str(feature.get("did", ""))
            target, css = (f"https://bsky.app/profile/{did}" if did else ""), "mention"
        else:
            continue
        spans.append((start, end, _link(target, text[start:end], css)))
    return _stitch(text, spans)


def _stitch(text: str, spans: list[tuple[int, int, Markup]]) -> Markup:
    """The text with the non-overlapping spans, first come first kept, replaced."""
    out: list[Markup] = []
    at = 0
    for start, end, html in sorted(spans, key=lambda span: (span[0], -span[1])):
        if start < at:
            continue
        out.append(escape(text[at:start]))
        out.append(html)
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def _domain(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.")


class Pictures:
    """Every thumbnail of a page, fetched at once, in parallel, within the budgets; the
    article pages read first for the cards that lack a description or an image."""

    def __init__(self, *, allow_private: bool, budget: float = IMAGES_BUDGET, progress: Progress = NO_PROGRESS) -> None:
        self.allow_private = allow_private
        self.budget = budget
        self.progress = progress
        self.thumbs: dict[str, Thumb] = {}
        self.pages: dict[str, dict[str, str]] = {}

    def read_pages(self, urls: Iterable[str]) -> None:
        from relay.fetch import open_graph

        wanted = list(dict.fromkeys(url for url in urls if href(url)))
        for url in wanted[MAX_PAGES:]:
            self.pages[url] = {}

        def read(url: str) -> dict[str, str]:
            return open_graph(url, allow_private=self.allow_private, timeout=FETCH_TIMEOUT)[0]

        for url, found in self._each(wanted[:MAX_PAGES], read, "reading the cards' pages").items():
            self.pages[url] = found if isinstance(found, dict) else {}

    def fetch(self, urls: Iterable[str]) -> None:
        wanted = [url for url in dict.fromkeys(urls) if url not in self.thumbs]
        for url in wanted:
            if not href(url):
                self.thumbs[url] = Thumb(why="not an http(s) URL")
        wanted = [url for url in wanted if url not in self.thumbs]
        for url in wanted[MAX_IMAGES:]:
            self.thumbs[url] = Thumb(why=f"not fetched: a page embeds at most {MAX_IMAGES} images")
        for url, result in self._each(wanted[:MAX_IMAGES], self._thumb, "fetching images").items():
            self.thumbs[url] = result if isinstance(result, Thumb) else Thumb(why=str(result))

    def _thumb(self, url: str) -> Thumb:
        from relay.fetch import fetch_image
        from relay.images import make_thumbnail

        data = fetch_image(url, max_bytes=10_000_000, allow_private=self.allow_private, timeout=FETCH_TIMEOUT).data
        small = make_thumbnail(data, max_side=THUMB_SIDE, max_bytes=THUMB_BYTES)
        return Thumb(uri="data:image/jpeg;base64," + base64.b64encode(small).decode("ascii"))

    def _each(self, urls: list[str], work: Callable[[str], Any], label: str) -> dict[str, Any]:
        """work(url) for each URL, WORKERS at a time; an exception is the URL's result, as a
        reason; what the budget leaves undone is 'not fetched'."""
        results: dict[str, Any] = {}
        if not urls:
            return results
        self.progress.start(label, len(urls))
        ends = time.monotonic() + self.budget
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="relay-page")
        futures: dict[Future[Any], str] = {pool.submit(work, url): url for url in urls}
        pending = set(futures)
        while pending and (left := ends - time.monotonic()) > 0:
            done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    results[futures[future]] = future.result()
                except Exception as exc:  # any failure is a picture left out, with its reason
                    results[futures[future]] = _reason(exc)
                self.progress.step(failed=not isinstance(results[futures[future]], Thumb | dict))
        for future in pending:
            results[futures[future]] = f"not fetched: the preview's {self.budget:.0f} s for images passed"
        pool.shutdown(wait=False, cancel_futures=True)
        self.progress.done()
        return results

    def thumb(self, url: str | None) -> Thumb:
        if not url:
            return Thumb()
        return self.thumbs.get(url, Thumb(why="not fetched"))


def _reason(exc: Exception) -> str:
    from relay.errors import FetchError
    from relay.images import ImageError

    if isinstance(exc, FetchError | ImageError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _card(post: Mapping[str, Any], pictures: Pictures) -> Card | None:
    """The link card the post will show, or None: on Bluesky relay's own (the embed, its
    image from the item, else the page); on Mastodon the instance's, from the first link."""
    if post["action"] not in ("post", "thread", "quote") or post.get("text") is None:
        return None
    if post["platform"] == "bluesky":
        embed = post.get("embed") or {}
        if "external" not in embed:
            return None
        external = embed["external"]
        uri = str(external.get("uri", ""))
        page = pictures.pages.get(uri, {})
        image = post.get("card_image") or page.get("og:image")
        return Card(
            uri,
            _domain(uri),
            str(external.get("title") or page.get("og:title") or ""),
            str(external.get("description") or page.get("og:description") or ""),
            pictures.thumb(image),
        )
    if post.get("images") or post["action"] == "quote":
        return None
    urls = find_urls(post["text"])
    if not urls:
        return None
    uri = post["text"][urls[0][0] : urls[0][1]]
    page = pictures.pages.get(uri, {})
    image = page.get("og:image") or (post.get("card_image") if uri == post.get("link") else None)
    return Card(
        uri,
        _domain(uri),
        page.get("og:title") or (post["title"] if uri == post.get("link") else ""),
        page.get("og:description", ""),
        pictures.thumb(image),
        note="made by the instance from the page",
    )


def _card_pages(posts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The article pages to read: a Bluesky card lacking its description or image (as the
    post will read it), and the first link of each Mastodon post (the instance's card)."""
    pages = []
    for post in posts:
        if post.get("text") is None or post["action"] not in ("post", "thread", "quote"):
            continue
        if post["platform"] == "bluesky":
            external = (post.get("embed") or {}).get("external")
            if external and not (external.get("description") and post.get("card_image")):
                pages.append(str(external.get("uri", "")))
        elif not post.get("images") and (urls := find_urls(post["text"])):
            pages.append(post["text"][urls[0][0] : urls[0][1]])
    return pages


def _attached(post: Mapping[str, Any]) -> list[dict[str, str]]:
    """The images a post shows: on Bluesky its images embed (bluesky_embed: card shows the
    card instead), on Mastodon every image attached."""
    if post["platform"] == "bluesky":
        embed = post.get("embed") or {}
        return list(embed.get("images") or []) if embed.get("$type") == "app.bsky.embed.images" else []
    return list(post.get("images") or [])


def _view(post: Mapping[str, Any], index: int, pictures: Pictures, instance: str) -> dict[str, Any]:
    """What the template shows of one post."""
    text = post.get("text")
    platform = post["platform"]

    def shown(text: str, facets: Iterable[Mapping[str, Any]]) -> Markup:
        return bluesky_html(text, facets) if platform == "bluesky" else mastodon_html(text, instance)

    replies = [
        {
            "html": shown(part["text"], part.get("facets") or []),
            "length": part["length"],
            "limit": part["limit"],
            "over": part["length"] > part["limit"],
        }
        for part in post.get("thread") or []
    ]
    images = [
        {"alt": image.get("alt", ""), "thumb": pictures.thumb(image.get("url")), "url": image.get("url", "")}
        for image in _attached(post)
    ]
    return {
        "index": index,
        "account": post["account"],
        "platform": platform,
        "action": post["action"],
        "action_label": ACTIONS.get(post["action"], post["action"]),
        "reason": post.get("reason"),
        "html": shown(text, post.get("facets") or []) if text is not None else None,
        "length": post.get("length"),
        "limit": post.get("limit"),
        "over": text is not None and (post.get("length") or 0) > (post.get("limit") or 0),
        "spoiler": post.get("spoiler_text"),
        "original": post.get("original"),
        "original_href": href(post.get("original")),
        "credit": post.get("credit"),
        "language": post.get("language"),
        "card": _card(post, pictures),
        "images": images,
        "replies": replies,
    }


def render_page(
    feeds: list[dict[str, Any]],
    posts: list[dict[str, Any]],
    *,
    source: str,
    generated: datetime,
    pictures: Pictures | None,
    accounts: Mapping[str, str] | None = None,
    redact: Callable[[Any], Any] = lambda value: value,
) -> str:
    """The page; accounts: each account's instance URL (Mastodon; "" on Bluesky), in the
    order of the columns; pictures None: no thumbnail is fetched. The pictures
    are fetched from the posts' URLs as they are; everything shown goes through redact
    (secrets back to ${VAR}) first."""
    from jinja2 import Environment

    if pictures is not None:
        pictures.read_pages(_card_pages(posts))
        wanted: list[str] = []
        for post in posts:
            card = _card(post, pictures)
            if card is not None and not card.thumb.uri:
                image = post.get("card_image") or pictures.pages.get(card.uri, {}).get("og:image")
                if image:
                    wanted.append(image)
            wanted.extend(str(image.get("url", "")) for image in _attached(post))
        pictures.fetch(wanted)
        pictures.thumbs = {redact(url): thumb for url, thumb in pictures.thumbs.items()}
        pictures.pages = {redact(url): page for url, page in pictures.pages.items()}
    else:
        pictures = Pictures(allow_private=False)
    feeds, posts = redact(feeds), redact(posts)

    items: dict[tuple[str, str], dict[str, Any]] = {}
    for index, post in enumerate(posts):
        item = items.setdefault(
            (post["feed"], post["key"]),
            {
                "feed": post["feed"],
                "title": post["title"],
                "link": post.get("link"),
                "href": href(post.get("link")),
                "posts": [],
            },
        )
        instance = (accounts or {}).get(post["account"]) or "https://mastodon.social"
        item["posts"].append(_view(post, index, pictures, instance))
    columns = list(accounts or {})
    for item in items.values():
        item["posts"].sort(
            key=lambda view: columns.index(view["account"]) if view["account"] in columns else len(columns)
        )
    counts: dict[str, int] = {}
    for post in posts:
        label = ACTIONS.get(post["action"], post["action"])
        if post["action"] in ("post", "thread", "boost", "quote") and post.get("reason"):
            label = "waiting"
        counts[label] = counts.get(label, 0) + 1

    folder = resources.files("relay") / "pages"
    style = (folder / "preview.css").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii")
    policy = (
        "default-src 'none'; script-src 'none'; object-src 'none'; img-src data:; "
        f"style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    environment = Environment(autoescape=True, keep_trailing_newline=True)
    template = environment.from_string((folder / "preview.html.j2").read_text(encoding="utf-8"))
    return template.render(
        policy=policy,
        style=Markup(style),  # noqa: S704 (relay's own stylesheet, hashed into the policy)
        source=source,
        generated=generated.strftime("%Y-%m-%d %H:%M %Z").strip(),
        feeds=feeds,
        items=list(items.values()),
        counts=counts,
        total=len(posts),
    )
