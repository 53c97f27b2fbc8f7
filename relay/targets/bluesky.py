"""Bluesky, through the atproto SDK: one login, then the saved session (refreshed tokens are
saved again); each post written with the record key (a TID) chosen when it was queued, and
read back after any error, so a retry can never post twice. Link cards carry a thumbnail
re-encoded under the lexicon's 1,000,000-byte limit (relay.images). Every request to the
PDS has a total deadline; the article page and images named by the item are fetched only
from public addresses unless the configuration allows private ones."""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from relay.config import Account
from relay.context import Context
from relay.errors import FetchError
from relay.fetch import fetch_image, open_graph
from relay.hashtags import find_hashtags
from relay.images import THUMB_MAX_BYTES, THUMB_MAX_SIDE, ImageError, ImageInfo, inspect, make_thumbnail
from relay.links import normalise_link
from relay.models import Post
from relay.render import Draft, Measure, card_title, post_images
from relay.store import Store
from relay.targets.base import Limits, PublishError, Receipt, Reply, original_missing
from relay.text import ELLIPSIS, byte_span, find_urls, grapheme_length, graphemes, truncate, utf8_length

__all__ = ["THUMB_MAX_BYTES", "BlueskyTarget", "make_thumbnail"]

FETCH_TIMEOUT = 15.0  # seconds for the article page or an image, in total
BLUESKY_MAX_GRAPHEMES = 300
BLUESKY_MAX_BYTES = 3000
CARD_DESCRIPTION_GRAPHEMES = 300
URL_DISPLAY_GRAPHEMES = 32  # a Bluesky URL is shown this long, unless its host is longer
STALL_PAUSE = timedelta(minutes=1)  # after a stalled request, the account waits this long


_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_last_tid = 0


def new_tid(now: datetime | None = None) -> str:
    """An atproto TID: 53 bits of microseconds, 10 bits of clock id; monotonic here."""
    global _last_tid
    micros = int((now or datetime.now(UTC)).timestamp() * 1_000_000)
    value = (micros << 10) | secrets.randbelow(1024)
    value = max(value, _last_tid + 1)
    _last_tid = value
    chars = []
    for _ in range(13):
        chars.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


_SESSION_ERRORS = ("ExpiredToken", "InvalidToken", "AuthenticationRequired", "AuthMissing")


@dataclass(frozen=True)
class BlueskyText:
    """Bluesky's rules for a post's text: 300 graphemes and 3000 bytes as shown, URLs shown
    shortened with their whole host and linked by facets at UTF-8 byte offsets, every
    hashtag as a tag facet, and a link card (app.bsky.embed.external) whose title is never
    empty. The card is the item's whatever the text says, so feed text keeps its URLs."""

    platform: str = "bluesky"
    keeps_feed_urls: bool = True

    def measure(self, text: str, draft: Draft) -> Measure:
        display, _ = _bluesky_display(text, draft.link)
        return grapheme_length(display), utf8_length(display)

    def capacity(self, draft: Draft) -> Measure:
        return BLUESKY_MAX_GRAPHEMES, BLUESKY_MAX_BYTES

    def fits(self, text: str, draft: Draft) -> bool:
        length, size = self.measure(text, draft)
        return length <= BLUESKY_MAX_GRAPHEMES and size <= BLUESKY_MAX_BYTES

    def finish(self, text: str, draft: Draft) -> Post:
        item, link = draft.item, draft.link
        display, facets = _bluesky_display(text, link)
        facets += _hashtag_facets(display, facets)
        facets += _mention_facets(display, draft.credit, facets)
        facets.sort(key=lambda f: f["index"]["byteStart"])
        text_only = Post(
            platform=self.platform,
            account=draft.account,
            text=display,
            length=grapheme_length(display),
            limit=BLUESKY_MAX_GRAPHEMES,
            language=draft.language,
            link=link,
            facets=tuple(facets),
        )
        if not link:  # a thread's reply: its text alone
            return text_only
        title = card_title(item.title, item.summary, draft.feed)
        return dataclasses.replace(
            text_only,
            embed={
                "$type": "app.bsky.embed.external",
                "external": {
                    "uri": link,
                    "title": title,
                    "description": truncate(item.summary, CARD_DESCRIPTION_GRAPHEMES),
                },
            },
            image=item.image,
            image_alt=item.image_alt or title,
            attach_image=draft.images and item.image is not None,
            images=post_images(draft, title),
            bluesky_embed=draft.bluesky_embed,
        )


def _bluesky_display(text: str, link: str) -> tuple[str, list[dict[str, Any]]]:
    """Show URLs shortened; link facets carry the full URLs, at UTF-8 byte offsets. A URL is
    linked only when relay.links accepts it, and to its normalised form (punycode host,
    encoded path); one it refuses (a user name before the host, a control character…) is
    left as the feed wrote it, in full and unlinked, so what it really points to is shown.
    The item's link was normalised when the feed was read and is linked as it is."""
    parts: list[str] = []
    facets: list[dict[str, Any]] = []
    cursor = 0
    display_so_far = ""
    for start, end in find_urls(text):
        url = text[start:end]
        try:
            target = url if url == link else normalise_link(url)
        except ValueError:
            continue
        parts.append(text[cursor:start])
        display_so_far = "".join(parts)
        shown = display_url(url, target)
        span = byte_span(display_so_far + shown, len(display_so_far), len(display_so_far) + len(shown))
        facets.append(
            {
                "index": {"byteStart": span.start, "byteEnd": span.end},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": target}],
            }
        )
        parts.append(shown)
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), facets


def display_url(written: str, normalised: str, max_graphemes: int = URL_DISPLAY_GRAPHEMES) -> str:
    """'https://www.example.org/2024/very/long/path' → 'example.org/2024/very/lo…'. The host
    is never cut and is shown as the link goes (punycode, so a look-alike host in another
    script is visible); only the rest, as the feed wrote it, is shortened."""
    host = urlsplit(normalised).netloc
    if host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    written_host = urlsplit(written).netloc
    rest = written[written.index("//") + 2 + len(written_host) :]
    room = max_graphemes - grapheme_length(host)
    if grapheme_length(rest) <= room:
        return host + rest
    return host + "".join(graphemes(rest)[: max(room - 1, 0)]) + ELLIPSIS


def _hashtag_facets(text: str, links: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A #tag facet for every hashtag in the text as shown, wherever it came from
    (feeds.yaml, the template, a category, the item's own text), found as the Bluesky app
    finds them; none that would overlap a link."""
    taken = [(facet["index"]["byteStart"], facet["index"]["byteEnd"]) for facet in links]
    facets = []
    for start, end, tag in find_hashtags(text):
        span = byte_span(text, start, end)
        if any(span.start < link_end and link_start < span.end for link_start, link_end in taken):
            continue
        facets.append(
            {
                "index": {"byteStart": span.start, "byteEnd": span.end},
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
            }
        )
    return facets


MENTION = "app.bsky.richtext.facet#mention"
BLUESKY_MAX_IMAGES = 4  # app.bsky.embed.images
BLUESKY_IMAGE_SIDE = 2000  # pixels: what the Bluesky app uploads at most
POST, REPOST = "app.bsky.feed.post", "app.bsky.feed.repost"
# an original: at://REPO/app.bsky.feed.post/RKEY, or https://bsky.app/profile/REPO/post/RKEY
_POST_REF = re.compile(
    r"^(?:at://(?P<repo>[^/]+)/app\.bsky\.feed\.post/|https://bsky\.app/profile/(?P<handle>[^/]+)/post/)"
    r"(?P<rkey>[A-Za-z0-9._~:-]+)$"
)
HANDLE_TTL = 7 * 24 * 3600  # seconds a credit's DID is kept before it is resolved again


def _mention_facets(text: str, credit: str, taken: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A mention facet for each place the template showed the feed's credit ("@handle",
    from feeds.yaml): its DID is left empty here and resolved when the post is sent
    (BlueskyTarget._mentions). Feed text had its own mentions defused when it was read."""
    if not credit:
        return []
    spans = [(facet["index"]["byteStart"], facet["index"]["byteEnd"]) for facet in taken]
    facets = []
    start = text.find(credit)
    while start != -1:
        end = start + len(credit)
        after = text[end : end + 2]
        longer = after[:1].isalnum() or after[:1] == "_" or (after[:1] in (".", "-") and after[1:].isalnum())
        # a mention starts the text or follows white space or "(" (as the Bluesky app reads
        # them); feed text had every such "@" defused when it was read, and keeps only those
        # after a letter, "=" or "/" (an address, a URL): "contact@handle" mentions no one
        alone = start == 0 or text[start - 1].isspace() or text[start - 1] == "("
        if alone and not longer:  # the whole handle, not the start of a longer one
            span = byte_span(text, start, end)
            if not any(span.start < other_end and other_start < span.end for other_start, other_end in spans):
                facets.append(
                    {
                        "index": {"byteStart": span.start, "byteEnd": span.end},
                        "features": [{"$type": MENTION, "did": ""}],
                    }
                )
        start = text.find(credit, end)
    return facets


class BlueskyTarget:
    def __init__(self, account: Account, store: Store | None, context: Context) -> None:
        self.account = account
        self.store = store
        self.context = context
        self.allow_private = context.allow_private
        self.warnings: list[str] = []
        self._client: Any = None
        self._did: str | None = None
        self.logged_in_with_password = False
        self._stalled: str | None = None  # set when a request outlived its deadline

    def _new_client(self) -> Any:
        from atproto import Client

        client = Client(base_url=self.account.service, request=_request(self.context.request_timeout))

        def saved(event: Any, session: Any) -> None:
            if self.store is not None:
                self.store.save_session(self.account.name, session.export(), time.time())

        client.on_session_change(saved)
        return client

    def _session(self) -> Any:
        if self._stalled:  # one slow server must not cost a deadline per delivery
            raise self._stall_error()
        if self._client is not None:
            return self._client
        saved = self.store.session(self.account.name) if self.store else None
        if saved:
            client = self._new_client()
            try:
                client.login(session_string=saved, fetch_bsky_profile=False)
            except Exception as exc:  # an unusable saved session means: log in again
                self.warnings.append(
                    f"account {self.account.name}: saved session unusable ({type(exc).__name__}); logging in"
                )
            else:
                self._client, self._did = client, client._session.did
                return client
        return self._login()

    def _login(self) -> Any:
        from atproto_client.exceptions import AtProtocolError

        client = self._new_client()
        try:
            client.login(self.account.handle, self.account.app_password, fetch_bsky_profile=False)
        except AtProtocolError as exc:
            raise self._error(exc, "login") from None
        finally:
            if self.store is not None:
                self.store.count_login(self.account.name)
        self.logged_in_with_password = True
        self._client, self._did = client, client._session.did
        return client

    def _call(self, action: str, function: Any) -> Any:
        """Run function(client); on a dead session, log in once and try again."""
        from atproto_client.exceptions import AtProtocolError

        client = self._session()
        try:
            return function(client)
        except AtProtocolError as exc:
            if _is_session_error(exc) and not self.logged_in_with_password:
                self._client = None
                if self.store is not None:
                    self.store.save_session(self.account.name, None, time.time())
                client = self._login()
                try:
                    return function(client)
                except AtProtocolError as again:
                    raise self._error(again, action) from None
            raise self._error(exc, action) from None

    def limits(self) -> Limits:
        return Limits()

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None, reply_to: Reply | None = None) -> Receipt:
        from atproto import models

        if rkey is None:
            raise PublishError("delivery has no record key", transient=False)
        client = self._session()
        quoted = None
        if post.action in ("boost", "quote"):
            subject = self._original(post)
            if subject is not None and post.action == "boost":
                return self._repost(subject, rkey)
            quoted = subject
        if quoted is not None:
            embed = models.AppBskyEmbedRecord.Main(record=quoted)
        else:
            embed = self._images_embed(post) or self._embed(client, post)
        record = models.AppBskyFeedPost.Record(
            text=post.text,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            langs=[post.language],
            facets=[_facet(f) for f in self._mentions(post)] or None,
            embed=embed,
            reply=self._reply_ref(reply_to) if reply_to else None,
        )
        try:
            created = self._call("post", lambda c: c.app.bsky.feed.post.create(self._did, record, rkey=rkey))
        except PublishError as exc:
            # A retry of a post that landed fails (500 "already a value at key"); the
            # record itself says whether it is there.
            if exc.auth:
                raise
            try:
                found = self.find(idempotency_key=idempotency_key, rkey=rkey)
            except PublishError:
                found = None
            if found is not None:
                return found
            raise
        return self._receipt(rkey, cid=str(created.cid))

    def _reply_ref(self, reply_to: Reply) -> Any:
        """A reply's root and parent, as strong refs: their cids as their receipts hold
        them, else read back from this account's own repository (a thread resumed by a
        later run)."""
        from atproto import models

        def ref(receipt: Receipt) -> Any:
            cid = receipt.cid
            if not cid:
                repo, collection, rkey = receipt.remote_id.removeprefix("at://").split("/")
                params = models.ComAtprotoRepoGetRecord.Params(repo=repo, collection=collection, rkey=rkey)
                cid = str(self._call("read the thread", lambda c: c.com.atproto.repo.get_record(params)).cid)
            return models.ComAtprotoRepoStrongRef.Main(uri=receipt.remote_id, cid=cid)

        return models.AppBskyFeedPost.ReplyRef(root=ref(reply_to.root), parent=ref(reply_to.parent))

    def _original(self, post: Post) -> Any:
        """The original of a boost or a quote, as a strong ref (its uri and cid, read with
        com.atproto.repo.getRecord); None when it is deleted or cannot be found and the feed
        falls back to posting, with a warning; PublishError when it falls back to nothing."""
        found = self._strong_ref(post.original, post.link)
        if found is not None:
            return found
        why = f"the original {post.original} is deleted or cannot be found"
        original_missing(self.account.name, post, why, self.warnings)
        return None

    def _strong_ref(self, original: str, link: str) -> Any:
        from atproto import models

        match = _POST_REF.match(original)
        if match is None:
            return None
        repo, rkey = match.group("repo") or match.group("handle"), match.group("rkey")
        if not repo.startswith("did:"):
            found = self._did_of(repo)
            if found is None:
                return None
            repo = found
        params = models.ComAtprotoRepoGetRecord.Params(repo=repo, collection="app.bsky.feed.post", rkey=rkey)
        try:
            record = self._call("read the original", lambda client: client.com.atproto.repo.get_record(params))
        except PublishError as exc:
            if exc.transient or exc.auth:
                raise
            return None
        if not record.cid or not self._shown_by_link(original, repo, rkey, link):
            return None
        return models.ComAtprotoRepoStrongRef.Main(uri=record.uri, cid=record.cid)

    def _shown_by_link(self, original: str, did: str, rkey: str, link: str) -> bool:
        """Whether the item's link, when it names a Bluesky post, names this one: the same
        record key, by the same account (its handle resolved to this DID). A feed cannot
        give one account's link with a stranger's at-uri, and have relay repost or quote the
        stranger (which notifies them) while preview shows the ally."""
        match = _POST_REF.match(link)
        if match is None or original == link:
            return True
        shown = match.group("repo") or match.group("handle")
        if match.group("rkey") != rkey:
            return False
        return (shown if shown.startswith("did:") else self._did_of(shown)) == did

    def _repost(self, subject: Any, rkey: str) -> Receipt:
        """A repost of subject, at the delivery's record key: a retry after it landed is
        refused by the PDS, and find() sees the record."""
        from atproto import models

        record = models.AppBskyFeedRepost.Record(
            subject=subject, created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        )
        try:
            self._call("repost", lambda c: c.app.bsky.feed.repost.create(self._did, record, rkey=rkey))
        except PublishError as exc:
            if exc.auth:
                raise
            found = self.find(idempotency_key="", rkey=rkey)
            if found is not None:
                return found
            raise
        return self._receipt(rkey, collection=REPOST)

    def _mentions(self, post: Post) -> list[dict[str, Any]]:
        """The post's facets, each credit's mention given the DID of its handle; a handle
        that cannot be resolved stays plain text, with a warning."""
        facets = []
        raw = post.text.encode()
        for facet in post.facets:
            feature = facet["features"][0]
            if feature["$type"] == MENTION and not feature.get("did"):
                handle = raw[facet["index"]["byteStart"] + 1 : facet["index"]["byteEnd"]].decode()
                did = self._did_of(handle, credit=True)
                if did is None:
                    continue
                facet = {**facet, "features": [{"$type": MENTION, "did": did}]}
            facets.append(facet)
        return facets

    def _did_of(self, handle: str, *, credit: bool = False) -> str | None:
        """A handle's DID: from the state when resolved within HANDLE_TTL, else asked of the
        service (com.atproto.identity.resolveHandle) and kept. None when the service says
        it cannot be resolved (with a warning for a credit, which is then plain text; an
        original's fallback says its own); a network error, a rate limit or a refused login
        is raised, and the delivery is tried again later."""
        now = time.time()
        if self.store is not None:
            cached = self.store.handle_did(handle, resolved_after=now - HANDLE_TTL)
            if cached:
                return cached
        try:
            did = str(self._call(f"resolve @{handle}", lambda client: client.resolve_handle(handle)).did)
        except PublishError as exc:
            if exc.transient or exc.auth:
                raise
            if credit:
                self.warnings.append(
                    f"account {self.account.name}: credit @{handle} could not be resolved ({exc}); posted as plain text"
                )
            return None
        if self.store is not None:
            self.store.save_handle_did(handle, did, now)
        return did

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        from atproto_client.exceptions import AtProtocolError

        if rkey is None:
            return None
        client = self._session()
        # the delivery's record is a post, or a repost (mode: boost)
        for collection, read in ((POST, client.app.bsky.feed.post.get), (REPOST, client.app.bsky.feed.repost.get)):
            try:
                record = read(self._did, rkey)
            except AtProtocolError as exc:
                response = getattr(exc, "response", None)
                content = getattr(response, "content", None)
                if getattr(content, "error", None) == "RecordNotFound" or getattr(response, "status_code", None) == 404:
                    continue
                raise self._error(exc, "read back") from None
            return self._receipt(rkey, collection=collection, cid=str(record.cid or ""))
        return None

    def check(self) -> str:
        self._session()
        how = "logged in with the app password" if self.logged_in_with_password else "saved session reused"
        return f"@{self._client._session.handle} ({self._did}) on {self.account.service}; {how}"

    def close(self) -> None:
        pass

    def _receipt(self, rkey: str, collection: str = POST, cid: str = "") -> Receipt:
        uri = f"at://{self._did}/{collection}/{rkey}"
        handle = self._client._session.handle if self._client else self.account.handle
        if collection == REPOST:  # a repost has no page of its own: it shows on the profile
            return Receipt(remote_id=uri, url=f"https://bsky.app/profile/{handle}", cid=cid)
        return Receipt(remote_id=uri, url=f"https://bsky.app/profile/{handle}/post/{rkey}", cid=cid)

    def _images_embed(self, post: Post) -> Any:
        """With images: true and bluesky_embed: images, an app.bsky.embed.images of the item's
        images (at most 4), each fetched through the guarded fetcher, re-encoded under
        1,000,000 bytes, with its aspect ratio and alt text; an image that fails is left out
        with a warning; None (the link card then) when none is left or the feed wants the card."""
        from atproto import models

        if not (post.attach_image and post.images and post.bluesky_embed == "images"):
            return None
        images = []
        for url, alt in post.images[:BLUESKY_MAX_IMAGES]:
            uploaded = self._upload_picture(url, BLUESKY_IMAGE_SIDE, f"{post.link}: posted without the image {url}")
            if uploaded is not None:
                blob, info = uploaded
                aspect = models.AppBskyEmbedDefs.AspectRatio(width=info.width, height=info.height)
                images.append(models.AppBskyEmbedImages.Image(image=blob, alt=alt, aspect_ratio=aspect))
        return models.AppBskyEmbedImages.Main(images=images) if images else None

    def _upload_picture(self, url: str, max_side: int, failed: str) -> tuple[Any, ImageInfo] | None:
        """An image fetched through the guarded fetcher, re-encoded as a JPEG under
        1,000,000 bytes within max_side pixels, and uploaded as a blob: (the blob, what it
        is); None, with a warning ("account NAME: {failed} (why)"), when any of it fails. No
        image problem may stop the post, but a refused login or a stalled server stops the
        account."""
        try:
            data = make_thumbnail(
                fetch_image(
                    url,
                    max_bytes=10_000_000,
                    allow_private=self.allow_private,
                    timeout=min(FETCH_TIMEOUT, self.context.request_timeout),
                ).data,
                max_side=max_side,
            )
            info = inspect(data)
        except Exception as exc:  # no image problem, of any kind, may stop the post
            reason = str(exc) if isinstance(exc, FetchError | ImageError) else f"{type(exc).__name__}: {exc}"
            self.warnings.append(f"account {self.account.name}: {failed} ({reason})")
            return None
        try:
            return self._call("upload an image", lambda c: c.upload_blob(data)).blob, info
        except PublishError as exc:
            if exc.auth or self._stalled:  # a stall stops the account for this run
                raise
            self.warnings.append(f"account {self.account.name}: {failed} ({exc})")
            return None

    def _embed(self, client: Any, post: Post) -> Any:
        from atproto import models

        if not post.embed:
            return None
        external = dict(post.embed["external"])
        image_url = post.image
        if not external.get("description") or not image_url:
            page, why = open_graph(
                external["uri"], allow_private=self.allow_private, timeout=self.context.request_timeout
            )
            if why:
                self.warnings.append(
                    f"account {self.account.name}: {external['uri']}: link card from the item only ({why})"
                )
            external["title"] = external.get("title") or page.get("og:title", "")
            external["description"] = external.get("description") or page.get("og:description", "")
            image_url = image_url or page.get("og:image")
        thumb = None
        if image_url:
            uploaded = self._upload_picture(image_url, THUMB_MAX_SIDE, f"{external['uri']}: link card without image")
            thumb = uploaded[0] if uploaded is not None else None
        return models.AppBskyEmbedExternal.Main(
            external=models.AppBskyEmbedExternal.External(
                uri=external["uri"],
                title=external.get("title") or "",
                description=external.get("description") or "",
                thumb=thumb,
            )
        )

    def _stall_error(self) -> PublishError:
        """A request outlived its deadline: the retry time makes the pipeline stop this
        account for the run, and block it a minute, without touching the deliveries behind
        this one (each would otherwise fail at once and count an attempt)."""
        return PublishError(
            self._stalled or f"{self.account.service} timed out",
            transient=True,
            retry_at=self.context.clock() + STALL_PAUSE,
        )

    def _error(self, exc: Exception, action: str) -> PublishError:
        from atproto_client.exceptions import InvokeTimeoutError, NetworkError, RateLimitExceededError

        where = f"{self.account.service} ({action})"
        if isinstance(exc, InvokeTimeoutError):
            self._stalled = f"{where} timed out: no complete answer within {self.context.request_timeout:g}s"
            return self._stall_error()
        if isinstance(exc, RateLimitExceededError):
            reset = exc.reset_at
            if reset is None and exc.retry_after is not None:
                reset = datetime.now(UTC) + timedelta(seconds=exc.retry_after)
            retry_at = reset or datetime.now(UTC) + timedelta(minutes=5)
            return PublishError(f"rate limited by {where}", transient=True, retry_at=retry_at)
        if isinstance(exc, NetworkError):
            return PublishError(f"network error talking to {where}: {type(exc).__name__}", transient=True)
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        content = getattr(response, "content", None)
        detail = " ".join(str(x) for x in (getattr(content, "error", ""), getattr(content, "message", "")) if x) or str(
            exc
        )
        if status == 401 or _is_session_error(exc):
            return PublishError(
                f"{where} refused the login ({detail}): check the handle and RELAY_* app password in the environment",
                transient=False,
                auth=True,
            )
        if status is not None and (status >= 500 or status == 408):
            return PublishError(f"{where} answered {status} {detail}", transient=True)
        return PublishError(f"{where} refused the post: {status} {detail}", transient=False)


def _is_session_error(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    content = getattr(response, "content", None)
    return getattr(content, "error", None) in _SESSION_ERRORS


def _request(timeout: float) -> Any:
    """The SDK's request layer on relay's guarded transport: each request to the PDS ends
    within `timeout` in total, however slowly the server answers. (The calls stay on this
    thread: the session-change callback writes to the store.)"""
    import httpx
    from atproto_client.request import Request

    from relay.netguard import deadline, make_transport

    class DeadlineRequest(Request):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._client: httpx.Client
            self._client.close()
            self._client = httpx.Client(
                follow_redirects=True, transport=make_transport(public_only=False, max_connections=4), **kwargs
            )

        def _send_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
            with deadline(timeout):
                response: httpx.Response = super()._send_request(method, url, **kwargs)
                return response

    return DeadlineRequest(timeout=timeout)


def _facet(data: dict[str, Any]) -> Any:
    from atproto import models

    features = []
    for feature in data["features"]:
        if feature["$type"].endswith("#link"):
            features.append(models.AppBskyRichtextFacet.Link(uri=feature["uri"]))
        elif feature["$type"].endswith("#tag"):
            features.append(models.AppBskyRichtextFacet.Tag(tag=feature["tag"]))
        elif feature["$type"] == MENTION:
            features.append(models.AppBskyRichtextFacet.Mention(did=feature["did"]))
    index = data["index"]
    return models.AppBskyRichtextFacet.Main(
        index=models.AppBskyRichtextFacet.ByteSlice(byte_start=index["byteStart"], byte_end=index["byteEnd"]),
        features=features,
    )
