"""The target protocol: publish a Post with a stable idempotency key (and record key), get a
Receipt, or raise PublishError saying whether a retry can help."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from relay.models import Post

MASTODON_DEFAULT_LIMIT = 500


@dataclass(frozen=True)
class Limits:
    """What a Mastodon account allows: from the instance (or the account's max_characters).
    Bluesky's limits are its lexicon's (relay.targets.bluesky)."""

    max_characters: int = MASTODON_DEFAULT_LIMIT
    url_length: int = 23  # every URL counts this long


@dataclass(frozen=True)
class Receipt:
    remote_id: str  # a Mastodon status id, a Bluesky at-uri
    url: str
    cid: str = ""  # Bluesky: the record's cid, when known (a reply refers to it)


@dataclass(frozen=True)
class Reply:
    """Where a thread's reply goes: under parent, in the thread that root starts."""

    root: Receipt
    parent: Receipt


class PublishError(Exception):
    """transient: a later attempt may succeed (network, 5xx, 429).
    auth: the credentials are refused; stop this account, keep the delivery queued.
    retry_at: the server said when to come back (rate limits).
    maybe_sent: the request may have reached the server and the post may exist (a timeout,
    a connection lost after sending, a gateway error), so a resend is safe only while the
    server still honours the idempotency key."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        auth: bool = False,
        retry_at: datetime | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.auth = auth
        self.retry_at = retry_at
        self.maybe_sent = maybe_sent


def original_missing(account: str, post: Post, why: str, warnings: list[str]) -> None:
    """A boost's or quote's original is gone (why says how): PublishError under
    fallback: none; else a warning, and the caller posts the text instead."""
    if post.fallback == "none":
        raise PublishError(f"{why} (fallback: none)", transient=False)
    warnings.append(f"account {account}: {why}; posted instead of a {post.action}")


class Target(Protocol):
    warnings: list[str]  # one line each, shown after the run (an image left out, a fallback)

    def limits(self) -> Limits:
        """The text limits the renderer must respect for this account."""

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None, reply_to: Reply | None = None) -> Receipt:
        """Send once. Every attempt of one delivery (or thread part) passes the same keys."""

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        """After an interrupted attempt: the post if it landed, else None (when knowable)."""

    def check(self) -> str:
        """Verify credentials (relay check --online); a one-line description of the account."""

    def close(self) -> None: ...
