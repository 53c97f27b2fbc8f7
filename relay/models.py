"""Values shared by the stages. Frozen: a stage returns new values, never mutates."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Item:
    """One entry of a feed, cleaned: safe to show, safe to template."""

    feed: str
    key: str  # identity within the feed: id, guid, link or content hash
    link: str | None  # http(s) only; None when the entry has no usable link
    canonical_url: str | None
    title: str
    summary: str
    author: str = ""
    published: datetime | None = None
    tags: tuple[str, ...] = ()
    image: str | None = None
    image_alt: str = ""
    skip_reason: str | None = None  # why this entry can never be relayed (bad link, ...)
    language: str = ""  # the language the entry declares itself (xml:lang, dc:language)
    channel_language: str = ""  # the language its feed declares (<language>, xml:lang)
    # the link as keys and dedupe know it (dedupe.key_link), never posted: kept as earlier
    # versions wrote it, so a better tracker list cannot post an old item again
    key_link: str | None = None
    # the post this item is, when its feed is a Mastodon or Bluesky account's (relay.social):
    # the status URL, or the post's at-uri
    original: str = ""
    images: tuple[tuple[str, str], ...] = ()  # (URL, alt text), at most 4; the first is image


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    entries: int
    items: tuple[Item, ...]
    warnings: tuple[str, ...] = field(default=())
    language: str = ""  # the channel's <language> or the Atom feed's xml:lang, when valid


class DeliveryState(StrEnum):
    """Where a delivery (one item for one account) is in its life:

    queued → sending → posted, or back to queued (a retry), or failed (for good);
    held (the flood guard) → queued (`relay queue release`) or dropped;
    queued, held or failed → dropped (`relay queue drop`, or a duplicate found at delivery);
    failed or dropped → queued (`relay queue retry`)."""

    QUEUED = "queued"
    SENDING = "sending"
    POSTED = "posted"
    FAILED = "failed"
    HELD = "held"
    DROPPED = "dropped"


# a post's actions that go out: pacing counts each as one post (hold and skip do not)
SENT_ACTIONS = ("post", "boost", "quote", "thread")

WAITING = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.FAILED, DeliveryState.HELD)


@dataclass(frozen=True)
class Move:
    """A change of state a user asks for with `relay queue`, and the states it may start from."""

    allowed_from: tuple[DeliveryState, ...]
    to: DeliveryState


RETRY = Move((DeliveryState.FAILED, DeliveryState.DROPPED), DeliveryState.QUEUED)
DROP = Move((DeliveryState.QUEUED, DeliveryState.HELD, DeliveryState.FAILED), DeliveryState.DROPPED)
RELEASE = Move((DeliveryState.HELD,), DeliveryState.QUEUED)
DROP_HELD = Move((DeliveryState.HELD,), DeliveryState.DROPPED)


_ITEM_FIELDS = dataclasses.fields(Item)


def item_payload(item: Item) -> dict[str, Any]:
    """An item as the state keeps it (JSON), to render it again at delivery."""
    # a shallow copy: every field is a str, a tuple of str, a datetime or None (asdict's deep
    # copy took 0.2 ms an item, 4 s of a first poll of 1000 feeds)
    data = {field.name: getattr(item, field.name) for field in _ITEM_FIELDS}
    data["published"] = item.published.isoformat() if item.published else None
    data["tags"] = list(item.tags)
    data["images"] = [list(image) for image in item.images]
    return data


def item_from_payload(payload: str) -> Item:
    data = json.loads(payload)
    data["published"] = datetime.fromisoformat(data["published"]) if data["published"] else None
    data["tags"] = tuple(data["tags"])
    data["images"] = tuple(tuple(image) for image in data.get("images", ()))
    data.pop("feed_title", None)
    data.pop("call", None)  # a call to action's own (relay.calls)
    return Item(**data)


@dataclass(frozen=True)
class Post:
    """A post exactly as it will be sent."""

    platform: str
    account: str
    text: str
    length: int
    limit: int
    language: str
    link: str
    facets: tuple[dict[str, Any], ...] = ()
    embed: dict[str, Any] | None = None
    spoiler_text: str = ""
    sensitive: bool = False
    image: str | None = None
    image_alt: str = ""
    attach_image: bool = False  # images: true: upload the item's images with the post
    images: tuple[tuple[str, str], ...] = ()  # (URL, alt text: the item's, else the title)
    bluesky_embed: str = "images"  # with images: on Bluesky, the images, or the link card
    visibility: str = ""  # Mastodon: the feed's visibility; empty means the account's
    # what the delivery does: post (this text), boost (the original, reposted), quote (this
    # text quoting the original); when the original is gone: fallback post, or none (fail)
    action: str = "post"
    original: str = ""  # a Mastodon status URL, a Bluesky at-uri or post URL (relay.social)
    fallback: str = "post"
    # action thread: the replies after this post, in order, each a Post without link or card
    thread: tuple[Post, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "account": self.account,
            "text": self.text,
            "length": self.length,
            "limit": self.limit,
            "language": self.language,
            "link": self.link,
            "facets": list(self.facets),
            "embed": self.embed,
            "spoiler_text": self.spoiler_text,
            "sensitive": self.sensitive,
            "image": self.image,
            "image_alt": self.image_alt,
            "attach_image": self.attach_image,
            "images": [list(image) for image in self.images],
            "bluesky_embed": self.bluesky_embed,
            "visibility": self.visibility,
            "action": self.action,
            "original": self.original,
            "fallback": self.fallback,
            "thread": [part.to_json() for part in self.thread],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Post:
        return cls(
            platform=data["platform"],
            account=data["account"],
            text=data["text"],
            length=data["length"],
            limit=data["limit"],
            language=data["language"],
            link=data["link"],
            facets=tuple(data.get("facets", ())),
            embed=data.get("embed"),
            spoiler_text=data.get("spoiler_text", ""),
            sensitive=data.get("sensitive", False),
            image=data.get("image"),
            image_alt=data.get("image_alt", ""),
            attach_image=data.get("attach_image", False),
            images=tuple(tuple(image) for image in data.get("images", ())),
            bluesky_embed=data.get("bluesky_embed", "images"),
            visibility=data.get("visibility", ""),
            action=data.get("action", "post"),
            original=data.get("original", ""),
            fallback=data.get("fallback", "post"),
            thread=tuple(Post.from_json(part) for part in data.get("thread", ())),
        )
