"""Mastodon and Bluesky accounts as feeds: a profile's address turned into its feed's, and an
item recognised as a post (its original: a Mastodon status URL, or a Bluesky post's at-uri).

    https://instance.org/@collectif              → https://instance.org/@collectif.rss
    https://bsky.app/profile/collectif.bsky.social → https://bsky.app/profile/collectif.bsky.social/rss

A Mastodon account's feed (`/@user.rss`) links each item to its status
(`https://instance.org/@user/113…`); Bluesky's (`/profile/HANDLE/rss`) links each to
`https://bsky.app/profile/HANDLE/post/RKEY` and gives the post's at-uri as its guid, and
titles every item "@HANDLE post", which says nothing: such an item is taken as untitled."""

from __future__ import annotations

import re

# a profile, not a page under it: https://host/@user, a trailing slash allowed
_MASTODON_PROFILE = re.compile(r"^(https://[A-Za-z0-9.-]+(?::\d+)?/@[A-Za-z0-9_]+)/?$")
# (http too: an instance on a local network, or a test's; the status is looked up through
# the relaying account's own instance, never fetched from this address)
_MASTODON_STATUS = re.compile(r"^https?://([A-Za-z0-9.-]+(?::\d+)?)/@[A-Za-z0-9_]+/(\d{1,20})$")
_BLUESKY_PROFILE = re.compile(r"^(https://bsky\.app/profile/[A-Za-z0-9.:_-]+)/?$", re.IGNORECASE)
_BLUESKY_POST = re.compile(r"^https://bsky\.app/profile/([A-Za-z0-9.:_-]+)/post/([A-Za-z0-9._~:-]{1,512})$")
_AT_URI = re.compile(r"^at://did:[a-z]+:[A-Za-z0-9._:%-]{1,2000}/app\.bsky\.feed\.post/[A-Za-z0-9._~:-]{1,512}$")
_BLUESKY_PLACEHOLDER_TITLE = re.compile(r"^[@＠][A-Za-z0-9.:_-]+ post$")
# sites whose /@user pages are not Mastodon's (their feeds live elsewhere)
_NOT_MASTODON = frozenset({"medium.com", "www.medium.com", "www.youtube.com", "youtube.com", "www.tiktok.com"})


def feed_url_of(url: str) -> str | None:
    """The feed of a Mastodon or Bluesky profile's address; None for any other address."""
    match = _BLUESKY_PROFILE.match(url)
    if match:
        return f"{match.group(1)}/rss"
    match = _MASTODON_PROFILE.match(url)
    if match and url.split("/")[2].lower().split(":")[0] not in _NOT_MASTODON:
        return f"{match.group(1)}.rss"
    return None


def original_of(item_id: str, link: str | None) -> str:
    """The post an item is, when it is one: a Bluesky post's at-uri (its guid, or its link
    when that names the account by its DID), a Bluesky post's URL (its link, naming the
    account by handle: the handle is resolved when the post is needed), or a Mastodon
    status's URL (its link); "" otherwise."""
    if _AT_URI.match(item_id):
        return item_id
    if not link:
        return ""
    match = _BLUESKY_POST.match(link)
    if match:
        account, rkey = match.groups()
        return f"at://{account}/app.bsky.feed.post/{rkey}" if account.startswith("did:") else link
    if _MASTODON_STATUS.match(link):
        return link
    return ""


def platform_of(original: str) -> str:
    """The platform an original lives on: bluesky, mastodon, or "" for no original."""
    if original.startswith(("at://", "https://bsky.app/")):
        return "bluesky"
    return "mastodon" if original else ""


def status_id_on(original: str, instance: str) -> str | None:
    """The status's id when the status URL is on that instance (its own id there), else None."""
    match = _MASTODON_STATUS.match(original)
    if match is None:
        return None
    host = instance.split("//", 1)[-1].split("/", 1)[0].lower()
    return match.group(2) if match.group(1).lower() == host else None


def says_nothing(title: str, original: str) -> bool:
    """Whether an item's title is Bluesky's "@HANDLE post" placeholder."""
    return original.startswith("at://") and _BLUESKY_PLACEHOLDER_TITLE.match(title) is not None
