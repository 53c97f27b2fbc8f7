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
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup, escape

from relay.context import NO_PROGRESS, Progress, showing
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

IMAGES_EMBED = "app.bsky.embed.images"
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


def href(url: object) -> str | None:
    """A URL the page may link to: http(s) only."""
    if not isinstance(url, str) or not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # "http://[::1": no link
        return None
    return url if scheme in ("http", "https") else None


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
        position += len(char.encode("utf-8", "surrogatepass"))
        offsets[position] = at + 1
    spans: list[tuple[int, int, Markup]] = []
    for facet in facets:
        index = facet.get("index") if isinstance(facet, Mapping) else None
        features = facet.get("features") if isinstance(facet, Mapping) else None
        if not isinstance(index, Mapping) or not isinstance(features, list) or not features:
            continue
        start, end = offsets.get(index.get("byteStart", -1)), offsets.get(index.get("byteEnd", -1))
        feature = features[0]
        if start is None or end is None or end <= start or not isinstance(feature, Mapping):
            continue
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
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


class Pictures:
    """Every thumbnail of a page, within one budget of time: the article pages read first
    (for the cards that lack a description or an image), then the images. Fetched in
    parallel by daemon threads (what the budget cuts short never holds up the end of the
    preview), at most WORKERS bodies fetched and not yet decoded at a time; decoded one at a
    time, in the calling thread (a decode takes up to about 150 MB, and each thread would
    keep its own memory arena)."""

    def __init__(self, *, allow_private: bool, budget: float = IMAGES_BUDGET, progress: Progress = NO_PROGRESS) -> None:
        self.allow_private = allow_private
        self.budget = budget
        self.progress = progress
        self.thumbs: dict[str, Thumb] = {}
        self.pages: dict[str, dict[str, str]] = {}
        self.unread: dict[str, str] = {}  # the pages that could not be read, and why
        self.ends: float | None = None  # the budget's end, from the first fetch

    def read_pages(self, urls: Iterable[str]) -> None:
        from relay.fetch import open_graph

        wanted = list(dict.fromkeys(url for url in urls if href(url)))
        for url in wanted[MAX_PAGES:]:
            self.pages[url] = {}
            self.unread[url] = f"not read: a preview reads at most {MAX_PAGES} pages"

        def read(url: str) -> tuple[dict[str, str], str]:
            return open_graph(url, allow_private=self.allow_private, timeout=FETCH_TIMEOUT)

        for url, found in self._each(wanted[:MAX_PAGES], read, "reading the cards' pages").items():
            if isinstance(found, tuple):
                self.pages[url] = found[0]
                if found[1]:
                    self.unread[url] = found[1]
            else:
                self.pages[url] = {}
                self.unread[url] = str(found)

    def fetch(self, urls: Iterable[str]) -> None:
        wanted = [url for url in dict.fromkeys(urls) if url not in self.thumbs]
        for url in wanted:
            if not href(url):
                self.thumbs[url] = Thumb(why="not an http(s) URL")
        wanted = [url for url in wanted if url not in self.thumbs]
        for url in wanted[MAX_IMAGES:]:
            self.thumbs[url] = Thumb(why=f"not fetched: a page embeds at most {MAX_IMAGES} images")
        for url, result in self._each(wanted[:MAX_IMAGES], self._image, "fetching images", self._thumb).items():
            self.thumbs[url] = result if isinstance(result, Thumb) else Thumb(why=str(result))

    def _image(self, url: str) -> bytes:
        from relay.fetch import fetch_image

        return fetch_image(url, max_bytes=10_000_000, allow_private=self.allow_private, timeout=FETCH_TIMEOUT).data

    def _thumb(self, data: bytes) -> Thumb:
        from relay.images import make_thumbnail

        small = make_thumbnail(data, max_side=THUMB_SIDE, max_bytes=THUMB_BYTES)
        return Thumb(uri="data:image/jpeg;base64," + base64.b64encode(small).decode("ascii"))

    def _each(
        self,
        urls: list[str],
        work: Callable[[str], Any],
        label: str,
        then: Callable[[Any], Any] = lambda result: result,
    ) -> dict[str, Any]:
        """work(url) for each URL in worker threads, then(result) here, until the budget
        ends; an exception is the URL's result, as a reason; what the budget leaves undone
        is 'not fetched'."""
        results: dict[str, Any] = {}
        if not urls:
            return results
        if self.ends is None:
            self.ends = time.monotonic() + self.budget
        late = f"not fetched: the preview's {self.budget:.0f} s for pictures passed"
        todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for url in urls:
            todo.put(url)
        finished: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        slots = threading.Semaphore(WORKERS)  # results fetched and not yet taken here

        def worker() -> None:
            while self.ends is not None and slots.acquire(timeout=max(0.0, self.ends - time.monotonic())):
                if time.monotonic() >= self.ends:
                    return
                try:
                    url = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    result: Any = work(url)
                except Exception as exc:  # any failure is a picture left out, with its reason
                    result = _reason(exc)
                finished.put((url, result))

        for _ in range(min(WORKERS, len(urls))):
            threading.Thread(target=worker, name="relay-page", daemon=True).start()
        with showing(self.progress, label, len(urls)) as progress:
            while len(results) < len(urls) and (left := self.ends - time.monotonic()) > 0:
                try:
                    url, result = finished.get(timeout=left)
                except queue.Empty:
                    break
                if not isinstance(result, str):
                    try:
                        result = then(result)
                    except Exception as exc:  # an image that cannot be decoded is left out, with its reason
                        result = _reason(exc)
                slots.release()
                results[url] = result
                progress.step(failed=isinstance(result, str) or (isinstance(result, tuple) and bool(result[1])))
        return {url: results.get(url, late) for url in urls}

    def thumb(self, url: str | None) -> Thumb:
        if not url:
            return Thumb()
        return self.thumbs.get(url, Thumb(why="not fetched"))

    def redacted(self, redact: Callable[[Any], Any]) -> None:
        """Every address and reason through the secret redaction (an error names a host)."""
        self.thumbs = {redact(url): Thumb(thumb.uri, redact(thumb.why)) for url, thumb in self.thumbs.items()}
        self.pages = {redact(url): redact(page) for url, page in self.pages.items()}
        self.unread = {redact(url): redact(why) for url, why in self.unread.items()}


def _reason(exc: Exception) -> str:
    from relay.errors import FetchError
    from relay.images import ImageError

    if isinstance(exc, FetchError | ImageError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


SENT = ("post", "thread", "boost", "quote")


def summary(posts: Iterable[Mapping[str, Any]]) -> str:
    """As the text listing counts: "14 to post (6 in the next run, 8 later), 0 held, 24 skipped"."""
    sent = later = held = skipped = 0
    for post in posts:
        if post["action"] in SENT:
            sent += 1
            later += bool(post.get("reason"))
        elif post["action"] == "hold":
            held += 1
        else:
            skipped += 1
    return f"{sent} to post ({sent - later} in the next run, {later} later), {held} held, {skipped} skipped"


def original_href(original: object) -> str | None:
    """Where a person sees the original: a Mastodon status URL as it is, a Bluesky at-uri
    as its bsky.app page."""
    if isinstance(original, str):
        match = re.fullmatch(r"at://([^/]+)/app\.bsky\.feed\.post/([A-Za-z0-9._:~-]+)", original)
        if match:
            return f"https://bsky.app/profile/{match.group(1)}/post/{match.group(2)}"
    return href(original)


def _card(post: Mapping[str, Any], pictures: Pictures) -> Card | None:
    """The link card the post will show, or None: on Bluesky relay's own (the embed, its
    image from the item, else the page); on Mastodon the instance's, from the first link."""
    if post["action"] not in ("post", "thread", "quote") or post.get("text") is None:
        return None
    if post["platform"] == "bluesky":
        external = _external(post)
        if external is None:
            return None
        uri = str(external.get("uri", ""))
        page = pictures.pages.get(uri, {})
        image = post.get("card_image") or page.get("og:image")
        unread = pictures.unread.get(uri)
        return Card(
            uri,
            _domain(uri),
            str(external.get("title") or page.get("og:title") or ""),
            str(external.get("description") or page.get("og:description") or ""),
            pictures.thumb(image),
            note=f"the page could not be read here: {unread}" if unread else "",
        )
    if post.get("images") or post["action"] == "quote":
        return None
    urls = find_urls(post["text"])
    if not urls:
        return None
    uri = post["text"][urls[0][0] : urls[0][1]]
    page = pictures.pages.get(uri, {})
    image = page.get("og:image") or (post.get("card_image") if uri == post.get("link") else None)
    unread = pictures.unread.get(uri)
    return Card(
        uri,
        _domain(uri),
        page.get("og:title") or (post["title"] if uri == post.get("link") else ""),
        page.get("og:description", ""),
        pictures.thumb(image),
        note="made by the instance from the page" + (f" (not read here: {unread})" if unread else ""),
    )


def _external(post: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A Bluesky post's link card, as the JSON has it."""
    embed = post.get("embed")
    external = embed.get("external") if isinstance(embed, Mapping) else None
    return external if isinstance(external, Mapping) else None


def _card_pages(posts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The article pages to read: a Bluesky card lacking its description or image (as the
    post will read it), and the first link of each Mastodon post (the instance's card)."""
    pages = []
    for post in posts:
        if post.get("text") is None or post["action"] not in ("post", "thread", "quote"):
            continue
        if post["platform"] == "bluesky":
            external = _external(post)
            if external and not (external.get("description") and post.get("card_image")):
                pages.append(str(external.get("uri", "")))
        elif not post.get("images") and (urls := find_urls(post["text"])):
            pages.append(post["text"][urls[0][0] : urls[0][1]])
    return pages


def _attached(post: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The images a post shows: on Bluesky its images embed (bluesky_embed: card shows the
    card instead), on Mastodon every image attached."""
    if post["platform"] == "bluesky":
        embed = post.get("embed")
        images = embed.get("images") if isinstance(embed, Mapping) and embed.get("$type") == IMAGES_EMBED else []
    else:
        images = post.get("images")
    return [image for image in images or [] if isinstance(image, Mapping)]


def _view(post: Mapping[str, Any], index: int, pictures: Pictures, instance: str) -> dict[str, Any]:
    """What the template shows of one post."""
    text = post.get("text")
    platform = post["platform"]

    def shown(text: str, facets: Iterable[Mapping[str, Any]]) -> Markup:
        return bluesky_html(text, facets) if platform == "bluesky" else mastodon_html(text, instance)

    replies = [
        {
            "html": shown(str(part.get("text", "")), part.get("facets") or []),
            "length": part.get("length", 0),
            "limit": part.get("limit", 0),
            "over": (part.get("length") or 0) > (part.get("limit") or 0),
        }
        for part in post.get("thread") or []
        if isinstance(part, Mapping)
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
        "original_href": original_href(post.get("original")),
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
        pictures.redacted(redact)
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
    shown = [item for item in items.values() if any(view["action"] != "skip" for view in item["posts"])]
    skipped = [item for item in items.values() if all(view["action"] == "skip" for view in item["posts"])]

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
        items=shown,
        skipped=skipped,
        summary=summary(posts),
    )
