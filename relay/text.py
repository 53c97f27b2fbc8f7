"""Counting and cleaning text (pure): graphemes, the Mastodon length rule, Bluesky byte
offsets, HTML to text, mention defusing. No I/O, no clock."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

import regex

ELLIPSIS = "…"
MASTODON_URL_LENGTH = 23

_GRAPHEME = regex.compile(r"\X")
# Control characters (keep \n and \t, folded later), bidi embeddings/overrides/isolates,
# zero-width characters and other invisible format characters that feeds use to hide text.
# The joiners (U+200C, U+200D) and tag characters are not here: they are removed only where
# they join nothing (see _JOINER and _TAG).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
# Scripts in which ZWJ/ZWNJ between two letters change how they are written: the joining
# scripts (Persian "می‌خواهم" needs its ZWNJ) and the Brahmic ones (conjuncts, half forms).
_JOINING_SCRIPTS = [
    "Arabic",
    "Syriac",
    "Nko",
    "Mongolian",
    "Mandaic",
    "Manichaean",
    "Psalter_Pahlavi",
    "Hanifi_Rohingya",
    "Adlam",
    "Sogdian",
    "Phags_Pa",
    "Devanagari",
    "Bengali",
    "Gurmukhi",
    "Gujarati",
    "Oriya",
    "Tamil",
    "Telugu",
    "Kannada",
    "Malayalam",
    "Sinhala",
    "Tibetan",
    "Myanmar",
    "Khmer",
    "Tai_Tham",
    "Balinese",
    "Javanese",
    "Sundanese",
    "Grantha",
    "Brahmi",
]
_LETTER_OF = "[[\\p{{L}}\\p{{M}}]&&\\p{{scx={}}}]"
# A joiner is kept inside an emoji ZWJ sequence (👩‍👩‍👧‍👦, 🏳️‍🌈, 👩🏽‍💻) and between two
# letters of one joining script; anywhere else ("ad\u200dmin", before an '@') it only hides
# something and is removed.
_JOINER = regex.compile(
    "(?P<keep>(?<=\\p{Extended_Pictographic}[\\p{Emoji_Modifier}\\uFE0F]?)\u200d(?=\\p{Extended_Pictographic})"
    + "".join(
        f"|(?<={_LETTER_OF.format(script)})[\u200c\u200d](?={_LETTER_OF.format(script)})" for script in _JOINING_SCRIPTS
    )
    + ")|[\u200c\u200d]",
    regex.V1,
)
# Tag characters spell invisible ASCII; they are kept only in a flag tag sequence (🏴󠁧󠁢󠁳󠁣󠁴󠁿).
_TAG = regex.compile("(?<!\U0001f3f4[\U000e0020-\U000e007e]*)[\U000e0000-\U000e007f]")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*(\n\s*)+")
# Mastodon starts a mention at an '@' not preceded by '=', '/' or a word character, where a
# word character is Ruby's [[:word:]]: letters, marks, decimal digits and connector
# punctuation. Python's \w is wider (superscripts, vulgar fractions, ZWJ), so only an '@'
# after one of those four classes, '=' or '/' is left alone (e-mail addresses, URLs); every
# other '@' followed by anything visible is defused, whatever comes after it.
_MENTION = regex.compile(r"(?<![=/\p{L}\p{M}\p{Nd}\p{Pc}])@(?=\S)")
_TAG_START = re.compile("[\U000e0000-\U000e007f]")
# A URL as Mastodon and Bluesky clients see it: scheme, then everything up to white space,
# minus trailing punctuation that usually closes the sentence.
URL_PATTERN = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}»…"

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "figure",
        "figcaption",
        "pre",
        "hr",
        "dd",
        "dt",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})


def graphemes(text: str) -> list[str]:
    return _GRAPHEME.findall(text)


def grapheme_length(text: str) -> int:
    return len(_GRAPHEME.findall(text))


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def find_urls(text: str) -> list[tuple[int, int]]:
    """Spans (code point offsets) of the http(s) URLs in text, trailing punctuation excluded."""
    spans = []
    for match in URL_PATTERN.finditer(text):
        start, end = match.span()
        while end > start and text[end - 1] in _URL_TRAILING:
            # keep a closing bracket that has its opening one inside the URL (Wikipedia links)
            if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
                break
            end -= 1
        if end - start > len("https://"):
            spans.append((start, end))
    return spans


def mastodon_length(text: str, spoiler_text: str = "") -> int:
    """Length as Mastodon counts it: grapheme clusters, every URL as 23, plus the warning."""
    parts = []
    cursor = 0
    for start, end in find_urls(text):
        parts.append(text[cursor:start])
        parts.append("x" * MASTODON_URL_LENGTH)
        cursor = end
    parts.append(text[cursor:])
    return grapheme_length("".join(parts)) + grapheme_length(spoiler_text)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self._skip:
                self.parts.append(f" {alt} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(value: str) -> str:
    """Strip tags and decode entities. Tolerates broken HTML and doubly escaped entities."""
    if "<" in value or "&" in value:
        extractor = _TextExtractor()
        extractor.feed(value)
        extractor.close()
        value = "".join(extractor.parts)
        if re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", value, re.IGNORECASE):
            value = html.unescape(value)  # a second level of escaping (&amp;eacute;)
    return value


def clean_text(value: str, *, keep_newlines: bool = False) -> str:
    """Untrusted feed text → plain, visible, single-spaced text with no mentions."""
    text = html_to_text(value)
    text = unicodedata.normalize("NFC", text)
    text = remove_invisible(text)
    text = _SPACES.sub(" ", text)
    if keep_newlines:
        text = _NEWLINES.sub("\n\n", text)
        text = "\n".join(line.strip() for line in text.split("\n"))
    else:
        text = re.sub(r"\s+", " ", text)
    return defuse_mentions(text.strip())


def remove_invisible(text: str) -> str:
    """Remove control and invisible format characters, except the joiners and tags that are
    part of what a reader sees (emoji sequences, Persian and Indic words, flags)."""
    text = _INVISIBLE.sub("", text)
    if "\u200c" in text or "\u200d" in text:
        text = _JOINER.sub(lambda match: match.group("keep") or "", text)
    if _TAG_START.search(text):
        text = _TAG.sub("", text)
    return text


def defuse_mentions(text: str) -> str:
    """'@handle' → '＠handle' (FULLWIDTH COMMERCIAL AT): readable, and no server or client
    turns it into a mention, so a relayed title never notifies a stranger."""
    return _MENTION.sub("＠", text)


def truncate(text: str, max_graphemes: int) -> str:
    """Cut at a grapheme boundary, preferring a word boundary, and mark the cut with '…'."""
    clusters = graphemes(text)
    if len(clusters) <= max_graphemes:
        return text
    if max_graphemes <= 0:
        return ""
    kept = "".join(clusters[: max_graphemes - 1]).rstrip()
    space = kept.rfind(" ")
    if space > len(kept) * 2 // 3:
        kept = kept[:space].rstrip(" ,;:-–—")
    return kept + ELLIPSIS


def shorten_url_for_display(url: str, max_graphemes: int = 32) -> str:
    """'https://www.example.org/2024/very/long/path' → 'example.org/2024/very/lo…'; the facet
    keeps the full URL."""
    display = re.sub(r"^https?://(www\.)?", "", url, flags=re.IGNORECASE)
    if grapheme_length(display) > max_graphemes:
        display = "".join(graphemes(display)[: max_graphemes - 1]) + ELLIPSIS
    return display


@dataclass(frozen=True)
class Span:
    start: int  # UTF-8 byte offset, inclusive
    end: int  # UTF-8 byte offset, exclusive


def byte_span(text: str, start: int, end: int) -> Span:
    """Code point offsets → UTF-8 byte offsets into text."""
    prefix = len(text[:start].encode("utf-8"))
    return Span(prefix, prefix + len(text[start:end].encode("utf-8")))
