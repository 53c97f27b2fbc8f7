"""Bytes → Items (pure): feedparser on a BytesIO (or feedparser-rs, through relay.fastparse,
when it reads the body as feedparser would), identity keys, link hygiene, text hygiene.
Never fetches, never reads files, never trusts feed text."""

from __future__ import annotations

import calendar
import hashlib
import io
import re
from collections.abc import Container
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser

from relay import fastparse
from relay.dedupe import canonical_url, fingerprint, key_link
from relay.errors import ParseError
from relay.links import normalise_link
from relay.models import Item, ParsedFeed
from relay.social import original_of, says_nothing
from relay.text import clean_text
from relay.trackers import clean_link

MAX_ENTRIES = 500
MAX_FIELD_CHARS = 20_000  # feed text beyond this is never looked at
MAX_SHORT_FIELD_CHARS = 2_000  # titles, authors, tags, alt texts: a post shows far less
_ENTITY_KEYWORD = b"<!entity"
_SPACE = re.compile(rb"\s*")
_HTML_ROOT = re.compile(rb"<(!doctype\s+html|html)[\s>]", re.IGNORECASE)
# Every run of a pattern below that can meet attacker text stops at a '<' or a quote, so no
# search goes back over the same characters: a feed cannot make parsing super-linear.
_IMG_TAG = re.compile(r"<img\b[^<>]*>", re.IGNORECASE)
_IMG_SRC = re.compile(r"\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)
_IMG_ALT = re.compile(r"\balt\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.IGNORECASE)
SHOWN_LINK_CHARS = 40
# A link element or href whose value breaks a line (or holds a character reference) inside
# it. feedparser resolves links against the feed's URL with urllib, which silently deletes
# tabs and newlines: "https://host/\n@someone@instance spam" would arrive as one URL and the
# item would go out. When a body looks like this, it is parsed a second time without a base
# URL, so the links are seen as written and such a link is refused.
_BREAK = rb"(?:[\t\r\n]|&#(?:0*(?:9|1[03])|[xX]0*[9aAdD]);)"
_BROKEN_LINK = re.compile(
    rb"<(?:link|feedburner:origlink|guid)\b[^<>]*>(?:<!\[CDATA\[)?\s*[^<\s]+" + _BREAK + rb"\s*[^<\s\]]"
    rb"|\bhref\s*=\s*(?:\"[^\"]*" + _BREAK + rb"|'[^']*" + _BREAK + rb")",
    re.IGNORECASE,
)


def defuse_entities(body: bytes) -> bytes:
    """Remove every <!ENTITY …> declaration. feedparser's loose parser expands "safe"
    entities itself, so a 100 KB document can declare one large entity and reference it
    thousands of times.

    feedparser finds a declaration with <!ENTITY([^>]*?)>, whatever quotes it holds, so
    each one is removed up to the first '>' after the keyword (with no '>', the rest of the
    body goes). One scan with str.find, never going back: linear in the body's length. Each
    declaration becomes a space, so the pieces left around it cannot join into a keyword."""
    lowered = body.lower()
    start = lowered.find(_ENTITY_KEYWORD)
    if start == -1:
        return body
    pieces = []
    cursor = 0
    while start != -1:
        pieces.append(body[cursor:start])
        pieces.append(b" ")
        end = lowered.find(b">", start + len(_ENTITY_KEYWORD))
        if end == -1:
            cursor = len(body)
            break
        cursor = end + 1
        start = lowered.find(_ENTITY_KEYWORD, cursor)
    pieces.append(body[cursor:])
    defused = b"".join(pieces)
    if _ENTITY_KEYWORD in defused.lower():
        raise ParseError("an entity declaration that cannot be removed")
    return defused


def _looks_like_html(start: bytes) -> bool:
    """Whether a body starts (after white space and comments) like an HTML page."""
    cursor = _after_space(start, 0)
    while start.startswith(b"<!--", cursor):
        close = start.find(b"-->", cursor + 4)
        if close == -1:
            return False
        cursor = _after_space(start, close + 3)
    return _HTML_ROOT.match(start, cursor) is not None


def _after_space(data: bytes, position: int) -> int:
    space = _SPACE.match(data, position)
    return space.end() if space else position


_FEEDPARSER_REPLACE_DOCTYPE = feedparser.sanitizer.replace_doctype


def _doctype_without_entities(data: bytes) -> tuple[str | None, bytes, dict[str, str]]:
    """feedparser's DOCTYPE step, which runs after it decoded the body to UTF-8: entity
    declarations are removed there too (a UTF-16 or UTF-32 body hides them from the byte
    scan before decoding), and no entity is left for its loose parser to expand."""
    version, data, _ = _FEEDPARSER_REPLACE_DOCTYPE(defuse_entities(data))
    return version, data, {}


def parse_feed(
    body: bytes,
    *,
    feed_name: str,
    url: str,
    content_type: str = "",
    fast: bool = True,
    known: Container[bytes] = frozenset(),
) -> ParsedFeed:
    """Parse one feed body. Raises ParseError when the body is not a usable feed.

    fast: whether feedparser-rs may read it, when installed (relay.fastparse).
    known: the fingerprints of the feed's item keys the state already holds. Such an entry
    is left out of the items (it would only be skipped as seen): only its identity is worked
    out, its text is never cleaned."""
    body = defuse_entities(body)
    feedparser.api.replace_doctype = _doctype_without_entities  # see above; idempotent
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    try:
        document = _read(body, headers, fast=fast)
    except MemoryError:
        raise ParseError("feed too large to parse") from None
    version = document.get("version", "")
    feed_info = document.get("feed", {})
    site = _site_link(url, feed_info)
    if site:
        # a feed read from disk has no web address: its relative links resolve against the
        # site it declares, so they are the same links as when it is read over HTTP
        try:
            document = _read(body, {**headers, "content-location": site}, fast=fast)
        except MemoryError:
            raise ParseError("feed too large to parse") from None
    entries = document.get("entries", [])
    if not version and not entries:
        if _looks_like_html(body[:4096]):
            raise ParseError("an HTML page, not a feed (point url at the site's RSS or Atom feed)")
        reason = document.get("bozo_exception")
        raise ParseError(f"not a feed{f': {reason}' if reason else ''}")
    feed_info = document.get("feed", {})
    warnings = []
    invalid_languages: list[str] = []
    channel_language = _language(feed_info.get("language"), invalid_languages)
    # the language every entry inherits (Atom xml:lang), which is not an item's own
    inherited = {
        str(feed_info.get("language") or "").strip(),
        str((feed_info.get("title_detail") or {}).get("language") or "").strip(),
    }
    if len(entries) > MAX_ENTRIES:
        warnings.append(f"{len(entries)} entries: only the first {MAX_ENTRIES} are read")
    items = []
    seen_keys: dict[str, int] = {}
    written = _links_as_written(body, len(entries)) if _BROKEN_LINK.search(body) else {}
    for index, entry in enumerate(entries[:MAX_ENTRIES]):
        if known:
            key = entry_key(entry, written.get(index))
            if key and key not in seen_keys and fingerprint(key) in known:
                seen_keys[key] = 1
                _entry_language(entry, inherited, invalid_languages)  # its warnings all the same
                continue
        item = entry_to_item(entry, feed_name, written.get(index))
        item = replace(
            item,
            language=_entry_language(entry, inherited, invalid_languages),
            channel_language=channel_language,
        )
        count = seen_keys.get(item.key, 0)
        seen_keys[item.key] = count + 1
        if count:
            # a duplicated guid must not hide the second item: qualify it by link/content
            item = _rekey(item, f"{item.key}\n{item.key_link or _content_hash(item)}\n{count}")
        items.append(item)
    for tag in dict.fromkeys(invalid_languages):
        warnings.append(f"language {_show(tag)} is not a language tag (like fr or fr-FR): ignored")
    return ParsedFeed(
        title=clean_text(_text(feed_info.get("title", ""), MAX_SHORT_FIELD_CHARS)),
        entries=len(entries),
        items=tuple(items),
        warnings=tuple(warnings),
        language=channel_language,
    )


def _read(body: bytes, headers: dict[str, str], *, fast: bool) -> Any:
    """The document of body: feedparser-rs's, turned into feedparser's shape, when fast and
    it reads this body as feedparser would (relay.fastparse); else feedparser's."""
    if fast and fastparse.available():
        document = fastparse.read(body, headers)
        if document is not None:
            return document
    return feedparser.parse(io.BytesIO(body), response_headers=headers)


def _site_link(url: str, feed_info: Any) -> str:
    """The channel's absolute http(s) site link, when the feed has no HTTP address of its own
    (a file:// URL or none) to resolve relative links against; else ""."""
    if urlsplit(url).scheme.lower() not in ("", "file"):
        return ""
    link = str(feed_info.get("link", "") or "").strip()
    parts = urlsplit(link)
    if parts.scheme.lower() in ("http", "https") and parts.hostname and "@" not in parts.netloc:
        return link
    return ""


# BCP-47 well-formed, simplified: a 2-3 letter language, then subtags (script, region,
# variant) of 1-8 letters or digits. "en_US" is read as "en-US".
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
MAX_LANGUAGE_CHARS = 35


def _language(value: object, invalid: list[str]) -> str:
    """A declared language tag, normalised (fr, fr-FR, zh-Hant); "" when none is declared,
    and "" with the tag added to invalid when it is not a language tag."""
    tag = str(value or "").strip()
    if not tag:
        return ""
    tag = tag.replace("_", "-")
    if len(tag) > MAX_LANGUAGE_CHARS or not _LANGUAGE_TAG.fullmatch(tag):
        invalid.append(str(value).strip()[:MAX_LANGUAGE_CHARS])
        return ""
    primary, *rest = tag.split("-")
    subtags = [primary.lower()]
    for subtag in rest:
        if len(subtag) == 2 and subtag.isalpha():
            subtags.append(subtag.upper())  # region
        elif len(subtag) == 4 and subtag.isalpha():
            subtags.append(subtag.title())  # script
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


def _entry_language(entry: Any, inherited: set[str], invalid: list[str]) -> str:
    """The language an entry declares itself: dc:language, else an xml:lang on the entry or
    its text (feedparser hands down the feed's xml:lang, which is the channel's, not the
    item's)."""
    declared = str(entry.get("language") or "").strip()
    if declared:
        return _language(declared, invalid)
    details = [entry.get("title_detail"), entry.get("summary_detail"), *(entry.get("content") or [])[:1]]
    for detail in details:
        language = str((detail or {}).get("language") or "").strip()
        if language and language not in inherited:
            return _language(language, invalid)
    return ""


def _show(text: str) -> str:
    return repr(text)  # one line, control characters escaped


def _links_as_written(body: bytes, count: int) -> dict[int, str]:
    """The links, unresolved, of the entries whose link holds a tab or a line break."""
    try:
        document = feedparser.parse(io.BytesIO(body))
    except MemoryError:
        return {}
    entries = document.get("entries", [])
    if len(entries) != count:
        return {}  # not the same reading of the body: nothing to compare
    found = {}
    for index, entry in enumerate(entries[:MAX_ENTRIES]):
        link = _entry_link(entry)
        if any(character in link for character in "\t\r\n"):
            found[index] = link
    return found


def _entry_link(entry: Any) -> str:
    link = str(entry.get("feedburner_origlink") or entry.get("link") or "").strip()
    if not link:
        for candidate in entry.get("links", []):
            if candidate.get("rel", "alternate") == "alternate" and candidate.get("href"):
                return str(candidate["href"]).strip()
    return link


def _rekey(item: Item, key: str) -> Item:
    return replace(item, key=key)


def _text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    return str(value or "")[:limit]


def _content_hash(item: Item) -> str:
    digest = hashlib.sha256(f"{item.title}\n{item.summary}".encode()).hexdigest()[:32]
    return f"sha256:{digest}"


def _clean_field(entry: Any, name: str, limit: int = MAX_FIELD_CHARS) -> str:
    value = _text(entry.get(name, ""), limit)
    detail = entry.get(f"{name}_detail") or {}
    if detail.get("type") == "text/plain":
        # plain text is not HTML: keep '<' literally, only decode and clean
        return clean_text(value.replace("&", "&amp;").replace("<", "&lt;"))
    return clean_text(value)


def entry_key(entry: Any, link_as_written: str | None = None) -> str:
    """The identity entry_to_item gives an entry (its id, else its link as keys know it),
    without cleaning its text; "" when only its content can name it."""
    item_id = str(entry.get("id") or "").strip()
    if item_id:
        return f"id:{item_id[:2000]}"
    raw_link = link_as_written or _entry_link(entry)
    try:
        return f"link:{normalise_link(key_link(normalise_link(raw_link)))}" if raw_link else ""
    except ValueError:
        return ""


def entry_to_item(entry: Any, feed_name: str, link_as_written: str | None = None) -> Item:
    title = _clean_field(entry, "title", MAX_SHORT_FIELD_CHARS)
    summary_source = _text(entry.get("summary", ""))
    if not summary_source and entry.get("content"):
        summary_source = _text(entry["content"][0].get("value", ""))
    summary = _clean_field({"summary": summary_source, "summary_detail": entry.get("summary_detail")}, "summary")

    raw_link = link_as_written or _entry_link(entry)
    link: str | None = None
    link_key = ""  # the link as earlier versions keyed it
    skip_reason = None
    if not raw_link:
        skip_reason = "no link"
    else:
        try:
            written = normalise_link(raw_link)
            # normalised again after the trackers go: dropping a parameter can leave a
            # character at the end that a post would cut off the link
            link_key = normalise_link(key_link(written))
            try:
                link = normalise_link(clean_link(written))
            except ValueError:
                link = written  # a redirect's target relay refuses: the link as written still works
        except ValueError as exc:
            shown = raw_link[:SHOWN_LINK_CHARS] + ("…" if len(raw_link) > SHOWN_LINK_CHARS else "")
            skip_reason = f"{exc}: {shown!r}"  # repr: one line, control characters escaped

    # the identity entry_key gives (tests check they agree), from the link worked out above
    item_id = str(entry.get("id") or "").strip()
    if item_id:
        key = f"id:{item_id[:2000]}"
    elif link:
        key = f"link:{link_key}"
    else:
        key = ""

    published = None
    for name in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = dict.get(entry, name)  # plain lookup: no deprecated updated→published fallback
        if parsed:
            try:
                published = datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError):
                published = None
            break

    tags = tuple(
        tag
        for tag in (
            clean_text(_text(t.get("term") or t.get("label") or "", MAX_SHORT_FIELD_CHARS))
            for t in entry.get("tags", [])[:20]
        )
        if tag
    )
    images = _images(entry, summary_source)
    image, image_alt = images[0] if images else (None, "")
    original = original_of(item_id, link)
    if says_nothing(title, original):
        title = ""  # Bluesky titles every post "@HANDLE post": the post is its text
    item = Item(
        feed=feed_name,
        key=key,
        link=link,
        canonical_url=canonical_url(link_key) if link else None,
        title=title,
        summary=summary,
        author=clean_text(_text(entry.get("author", ""), MAX_SHORT_FIELD_CHARS)),
        published=published,
        tags=tags,
        image=image,
        image_alt=image_alt,
        images=images,
        skip_reason=skip_reason,
        key_link=link_key or None,
        original=original,
    )
    if not key:
        item = _rekey(item, _content_hash(item))
    return item


MAX_IMAGES = 4  # an item's images kept: what Bluesky embeds and Mastodon's default attaches


def _images(entry: Any, html: str) -> tuple[tuple[str, str], ...]:
    """The item's images, at most MAX_IMAGES, each (normalised URL, alt text): media:content
    and image enclosures first (alt: the media:description), then the <img> of the summary
    (alt: its alt, else the media:description); media:thumbnail only when there is nothing
    else. A URL that cannot be a safe link is left out; the item still goes out."""
    candidates: list[tuple[str, str]] = []
    for media in entry.get("media_content", []) or []:
        kind = str(media.get("type", "") or media.get("medium", ""))
        if kind.startswith("image") or kind == "":
            candidates.append((str(media.get("url", "")), ""))
    description = _text(entry.get("media_description", ""), MAX_SHORT_FIELD_CHARS)
    for enclosure in entry.get("enclosures", []) or []:
        if str(enclosure.get("type", "")).startswith("image/"):
            candidates.append((str(enclosure.get("href", "")), ""))
    thumbnails = [(str(thumb.get("url", "")), "") for thumb in entry.get("media_thumbnail", []) or []]
    for count, tag in enumerate(_IMG_TAG.finditer(html)):
        if count >= 4 * MAX_IMAGES:  # a summary of a thousand images is read no further (fastparse.IMAGE_TAGS_READ)
            break
        source = _IMG_SRC.search(tag.group(0))
        if source:
            alt_match = _IMG_ALT.search(tag.group(0))
            candidates.append((source.group(1), (alt_match.group(1) or alt_match.group(2)) if alt_match else ""))
    found: dict[str, str] = {}
    for batch in (candidates, thumbnails):
        for url, alt in batch:
            try:
                image = normalise_link(url)
            except ValueError:
                continue  # an image that cannot be a safe URL is ignored, the item still goes out
            if image not in found:
                found[image] = clean_text(_text(alt or description, MAX_SHORT_FIELD_CHARS))
            if len(found) == MAX_IMAGES or batch is thumbnails:
                break
        if found:
            break
    return tuple(found.items())
