"""Hashtags: an item's categories made into hashtags (category_hashtags), and the hashtags a
text holds as the Bluesky app finds them (each becomes a #tag facet).

A category becomes a hashtag that both platforms read whole: letters, digits and _ only,
starting with a letter. Accents stay (NFC), apostrophes go ("l'hôpital" → lhôpital), any
other character that is not a letter or a digit separates words, and several words become
CamelCase, each word's first letter raised and the rest kept as written ("données de santé"
→ DonnéesDeSanté, "Health Data Hub" → HealthDataHub). A category that gives no such
hashtag, or one longer than Bluesky's 64 graphemes, gives none."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import regex

MAX_GRAPHEMES = 64  # a Bluesky #tag facet's tag (app.bsky.richtext.facet#tag): 64 graphemes
MAX_BYTES = 640  # and 640 bytes (UTF-8), or the PDS refuses the post

_APOSTROPHES = regex.compile(r"['’ʼ]")
_WORD = regex.compile(r"[\p{L}\p{M}\p{Nd}]+")
_HASHTAG = regex.compile(r"\p{L}[\p{L}\p{M}\p{Nd}_]*")
# the Bluesky app's rule (atproto packages/api/src/rich-text: HASHTAG_REGEX and detection.ts):
# after the start or white space, '#', a letter or emoji, then letters, emoji, digits, _ and -;
# trailing punctuation is not part of the tag, and a tag over 64 characters is none
_EMOJI = r"\p{Emoji_Presentation}\p{Emoji_Modifier_Base}\p{Extended_Pictographic}"
# One difference: a tag goes on through combining marks, ZWJ, variation selectors and emoji
# modifiers (the app's pattern stops at them, mid-character: "#हिन्दी" would be "#ह").
_IN_TEXT = regex.compile(
    rf"(?:^|(?<=\s))#[\p{{L}}{_EMOJI}][\p{{L}}\p{{M}}{_EMOJI}\p{{Emoji_Modifier}}\u200d\ufe0f\d_-]*",
    regex.IGNORECASE,
)
_TRAILING_PUNCTUATION = regex.compile(r"\p{P}+$")


def is_hashtag(tag: str) -> bool:
    """Whether a tag (without '#') is one category_hashtags could make: what tag_map's
    values must be."""
    return _HASHTAG.fullmatch(tag) is not None and _fits(tag)


def _fits(tag: str) -> bool:
    return len(tag.encode()) <= MAX_BYTES and _graphemes(tag) <= MAX_GRAPHEMES


def _graphemes(text: str) -> int:
    return len(regex.findall(r"\X", text))


def category_hashtag(category: str) -> str | None:
    """The hashtag a category becomes (without '#'), or None."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFC", category))
    words = _WORD.findall(text)
    if len(words) > 1:
        words = [word[0].upper() + word[1:] for word in words]
    tag = "".join(words)
    return tag if is_hashtag(tag) else None


def _key(category: str) -> str:
    return " ".join(unicodedata.normalize("NFC", category).casefold().split())


def map_key(category: str) -> str:
    """How tag_map matches a category: case, accents' encoding and spacing aside."""
    return _key(category)


def item_hashtags(
    written: Sequence[str],
    categories: Iterable[str],
    *,
    tag_map: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> tuple[tuple[str, ...], int]:
    """The hashtags of a post: those written in feeds.yaml first, then those of the item's
    categories (renamed, or dropped when mapped to "", by tag_map, whose keys are map_key's),
    each once whatever its case, at most `limit` in all. Returns them, and how many of them
    came from categories (the last ones: they are what may be left out to fit)."""
    tags: list[str] = []
    seen: set[str] = set()
    for tag in written:
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    from_categories = 0
    for category in categories:
        mapped = (tag_map or {}).get(_key(category))
        made = category_hashtag(category) if mapped is None else mapped
        if made and made.casefold() not in seen:
            seen.add(made.casefold())
            tags.append(made)
            from_categories += 1
    if limit is not None and len(tags) > limit:
        from_categories = max(0, from_categories - (len(tags) - limit))
        tags = tags[:limit]
    return tuple(tags), from_categories


def find_hashtags(text: str) -> list[tuple[int, int, str]]:
    """The hashtags in a text as the Bluesky app finds them: (start, end, tag without '#'),
    in str indices, the span including the '#'."""
    found = []
    for match in _IN_TEXT.finditer(text):
        tag = _TRAILING_PUNCTUATION.sub("", match.group())
        if len(tag) < 2 or not _fits(tag[1:]):
            continue
        found.append((match.start(), match.start() + len(tag), tag[1:]))
    return found
