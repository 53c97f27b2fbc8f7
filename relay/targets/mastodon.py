"""Mastodon, through Mastodon.py: posts ("statuses") with an Idempotency-Key on every
attempt, the instance's limits cached in state, errors mapped to PublishError. Never sleeps
inside a cron run: rate limits are reported with their reset time instead. Every API call
ends within RELAY_REQUEST_TIMEOUT in total, however slowly the server answers. An item's
image is fetched from a public address only (unless allowed otherwise) and its header
checked before upload; any image problem means the post goes without it."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.config import Account
from relay.context import Context
from relay.errors import FetchError
from relay.fetch import USER_AGENT, fetch_image
from relay.images import ImageError, inspect
from relay.models import Post
from relay.netguard import Abandoned, call_abandonable
from relay.render import Draft, Measure, post_images
from relay.social import status_id_on
from relay.store import AccountState, Store
from relay.targets.base import Limits, PublishError, Receipt, Reply, original_missing
from relay.text import MASTODON_URL_LENGTH, defuse_mentions, find_urls, grapheme_length, mastodon_length, utf8_length

LIMITS_MAX_AGE = 86400  # re-read the instance's limits once a day
DEFAULT_IMAGE_LIMIT = 8_000_000
DEFAULT_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
IMAGE_TIMEOUT = 15.0  # seconds for an item's image, in total
DEFAULT_MAX_MEDIA = 4  # images per status, when the instance does not say
STALL_PAUSE = timedelta(minutes=1)  # after a stalled call, the account waits this long


@dataclass(frozen=True)
class MastodonText:
    """Mastodon's rules for a post's text: grapheme clusters counted, every URL as the
    instance says (23), the content warning included; the card is the first URL in the text,
    so feed text brings none; and, whatever a template's filters did to feed text, no '@'
    in the post starts a mention (one character for one: the length does not change)."""

    limits: Limits = field(default_factory=Limits)
    platform: str = "mastodon"
    keeps_feed_urls: bool = False

    def count(self, text: str, spoiler_text: str) -> int:
        base = mastodon_length(text, spoiler_text)
        if self.limits.url_length == MASTODON_URL_LENGTH:
            return base
        return base + sum(self.limits.url_length - MASTODON_URL_LENGTH for _ in find_urls(text))

    def measure(self, text: str, draft: Draft) -> Measure:
        return self.count(text, ""), utf8_length(text)

    def capacity(self, draft: Draft) -> Measure:
        # the content warning counts in the limit; a status's bytes are not limited
        return self.limits.max_characters - grapheme_length(draft.spoiler_text), sys.maxsize

    def fits(self, text: str, draft: Draft) -> bool:
        return self.count(text, draft.spoiler_text) <= self.limits.max_characters

    def finish(self, text: str, draft: Draft) -> Post:
        # the '@'s a normalised link keeps follow '/', '=' or a word character and stay; the
        # feed's credit, written in feeds.yaml, is the one mention left live (feed text had
        # its own defused when it was read, so it cannot spell the credit)
        if draft.credit:
            text = draft.credit.join(defuse_mentions(piece) for piece in text.split(draft.credit))
        else:
            text = defuse_mentions(text)
        item = draft.item
        return Post(
            platform=self.platform,
            account=draft.account,
            text=text,
            length=self.count(text, draft.spoiler_text),
            limit=self.limits.max_characters,
            language=draft.language,
            link=draft.link,
            spoiler_text=draft.spoiler_text,
            sensitive=draft.sensitive,
            image=item.image if draft.link else None,  # a thread's reply has no image
            image_alt=item.image_alt or item.title,
            attach_image=draft.images and item.image is not None,
            images=post_images(draft, item.title),
            visibility=draft.visibility,
        )


class MastodonTarget:
    def __init__(self, account: Account, store: Store | None, context: Context) -> None:
        from mastodon import Mastodon

        self.account = account
        self.store = store
        self.context = context
        self.allow_private = context.allow_private
        self._stalled: str | None = None  # set when a call outlived its deadline
        self.warnings: list[str] = []
        self.api = Mastodon(
            access_token=account.token,
            api_base_url=account.instance,
            ratelimit_method="throw",
            request_timeout=self.context.request_timeout,
            version_check_mode="none",
            user_agent=USER_AGENT,
        )
        self._instance: dict[str, Any] | None = None

    def instance_limits(self, *, refresh: bool = False) -> dict[str, Any]:
        """configuration.statuses / media_attachments from /api/v2/instance, cached in state."""
        known = self.store.account_state(self.account.name) if self.store else AccountState()
        fresh = known.limits_at and time.time() - known.limits_at < LIMITS_MAX_AGE
        if known.limits and fresh and not refresh:
            return dict(known.limits)
        try:
            instance = self._call(self.api.instance_v2)
        except PublishError as exc:
            if exc.auth or self._stalled:
                # a stall stops the account for this run: no call of it is worth a deadline
                raise _not_sent(exc) from None
            self.warnings.append(
                f"account {self.account.name}: cannot read the instance's limits ({exc}); using 500 characters, 23 per URL"
            )
            return dict(known.limits or {"max_characters": Limits().max_characters, "url_length": Limits().url_length})
        configuration = _get(instance, "configuration") or {}
        statuses = _get(configuration, "statuses") or {}
        media = _get(configuration, "media_attachments") or {}
        limits = {
            "max_characters": int(_get(statuses, "max_characters") or Limits().max_characters),
            "url_length": int(_get(statuses, "characters_reserved_per_url") or Limits().url_length),
            "version": str(_get(instance, "version") or ""),
            "image_size_limit": int(_get(media, "image_size_limit") or DEFAULT_IMAGE_LIMIT),
            "max_media_attachments": int(_get(statuses, "max_media_attachments") or DEFAULT_MAX_MEDIA),
            "description_limit": int(_get(media, "description_limit") or 1500),
            "image_types": [
                t for t in (_get(media, "supported_mime_types") or DEFAULT_IMAGE_TYPES) if str(t).startswith("image/")
            ],
        }
        if self.store:
            self.store.update_account(self.account.name, limits=limits, limits_at=time.time())
        return limits

    def limits(self) -> Limits:
        found = self.instance_limits()
        return Limits(
            max_characters=self.account.max_characters or int(found["max_characters"]),
            url_length=int(found["url_length"]),
        )

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None, reply_to: Reply | None = None) -> Receipt:
        quoted = None
        if post.action in ("boost", "quote"):
            status_id = self._original(post)
            if status_id is not None and post.action == "boost":
                # a reblog is idempotent: reblogging again returns the same reblog
                reblog = self._call(self.api.status_reblog, status_id)
                return Receipt(remote_id=str(_get(reblog, "id")), url=post.original)
            if status_id is not None and self._quotes():
                quoted = status_id
        media_ids = []
        if post.attach_image:
            limits = self.instance_limits()
            # a post stored by an earlier relay has its one image only
            images = post.images or (((post.image, post.image_alt),) if post.image else ())
            for url, alt in images[: int(limits.get("max_media_attachments") or DEFAULT_MAX_MEDIA)]:
                media_id = self._upload_image(post, url, alt[: int(limits.get("description_limit") or 1500)])
                if media_id is not None:
                    media_ids.append(media_id)
        status = self._call(
            self.api.status_post,
            post.text,
            visibility=post.visibility or self.account.visibility,
            language=post.language,
            spoiler_text=post.spoiler_text or None,
            sensitive=post.sensitive or bool(post.spoiler_text),
            media_ids=media_ids or None,
            idempotency_key=idempotency_key,
            in_reply_to_id=reply_to.parent.remote_id if reply_to else None,
            **({"quoted_status_id": quoted} if quoted is not None else {}),
        )
        return Receipt(remote_id=str(_get(status, "id")), url=str(_get(status, "url") or _get(status, "uri") or ""))

    def direct_message(self, text: str, *, idempotency_key: str) -> Receipt:
        """A direct-visibility status (relay.alerts: the owner, mentioned in text, hears of a
        problem); the text is relay's own, its mentions already chosen."""
        status = self._call(self.api.status_post, text, visibility="direct", idempotency_key=idempotency_key)
        return Receipt(remote_id=str(_get(status, "id")), url=str(_get(status, "url") or _get(status, "uri") or ""))

    def _original(self, post: Post) -> str | None:
        """The original's id on this account's instance: its own id when the status is
        there, else found with GET /api/v2/search?resolve=true (the read:search scope). None
        when it is deleted or cannot be found and the feed falls back to posting, with a
        warning; PublishError when it falls back to nothing.

        What is boosted is the status the link names, and no other: a local status found by
        the id in its URL must be by the user the URL names (a feed cannot give one user's
        address with a stranger's id), and a search result must be that very URL."""
        local = status_id_on(post.original, self.account.instance)
        found: str | None = None
        try:
            if local is not None:
                status = self._call(self.api.status, local)
                user = post.original.rsplit("/", 2)[-2]  # "@user"
                shown = str(_get(status, "url") or "")
                found = str(_get(status, "id")) if shown.endswith(f"/{user}/{local}") else None
            else:
                results = self._call(self.api.search_v2, post.original, resolve=True, result_type="statuses")
                statuses = _get(results, "statuses") or []
                same = [s for s in statuses if post.original in (_get(s, "url"), _get(s, "uri"))]
                found = str(_get(same[0], "id")) if same else None
        except PublishError as exc:
            if exc.transient or exc.auth:
                raise
            found = None
        if found is not None:
            return found
        why = f"the original {post.original} is deleted or cannot be found from {self.account.instance}"
        original_missing(self.account.name, post, why, self.warnings)
        return None

    def _quotes(self) -> bool:
        """Whether the instance takes quotes (quoted_status_id): Mastodon 4.5 and later."""
        version = str(self.instance_limits().get("version") or "")
        numbers = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:2]]
        return len(numbers) == 2 and tuple(numbers) >= (4, 5)

    def _upload_image(self, post: Post, url: str, alt: str) -> Any:
        limits = self.instance_limits()
        try:
            image = fetch_image(
                url,
                max_bytes=int(limits.get("image_size_limit") or DEFAULT_IMAGE_LIMIT),
                allow_private=self.allow_private,
                timeout=min(IMAGE_TIMEOUT, self.context.request_timeout),
            )
            info = inspect(image.data)  # the bytes say what they are, not the Content-Type
            if info.mime_type not in limits.get("image_types", DEFAULT_IMAGE_TYPES):
                raise FetchError(f"image type {info.mime_type} is not accepted by the instance")
        except Exception as exc:  # no image problem, of any kind, may stop the post
            reason = str(exc) if isinstance(exc, FetchError | ImageError) else f"{type(exc).__name__}: {exc}"
            self.warnings.append(f"account {self.account.name}: {post.link}: posted without its image ({reason})")
            return None
        try:
            media = self._call(
                self.api.media_post,
                image.data,
                mime_type=info.mime_type,
                description=alt or None,
                file_name="image." + info.mime_type.split("/")[-1],
            )
            return _get(media, "id")
        except PublishError as exc:
            if exc.auth:
                raise
            if self._stalled:
                # The instance did not answer the upload in time. The post could go without
                # its image, but a server that just held one call for the whole deadline is
                # likely to hold the next, and the abandoned upload may still be running:
                # the account stops for this run and this delivery is retried, image and
                # all, once the pause is over. No status was sent, so nothing is in doubt.
                raise _not_sent(exc) from None
            self.warnings.append(f"account {self.account.name}: {post.link}: posted without its image ({exc})")
            return None

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        # Mastodon has no lookup by idempotency key: resending with the same key within the
        # hour returns the status that landed, which is how an interrupted attempt resolves.
        return None

    def check(self) -> str:
        me = self._call(self.api.account_verify_credentials)
        limits = self.instance_limits(refresh=True)
        return (
            f"@{_get(me, 'acct')} ({_get(me, 'display_name') or 'no display name'}) on {self.account.instance};"
            f" {limits['max_characters']} characters, {limits['url_length']} per URL"
        )

    def missing_scopes(self, wanted: tuple[str, ...]) -> list[str]:
        """Those of the wanted scopes the token lacks ("read" covers every read:…), as
        GET /api/v1/apps/verify_credentials says (Mastodon 4.3 and later); [] when it does
        not say."""
        try:
            app = self._call(self.api.app_verify_credentials)
        except PublishError:
            return []
        scopes = _get(app, "scopes")
        if not scopes:
            return []
        granted = set(scopes.split() if isinstance(scopes, str) else scopes)
        return [scope for scope in wanted if scope not in granted and scope.split(":")[0] not in granted]

    def close(self) -> None:
        session = getattr(self.api, "session", None)
        if session is not None:
            session.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from mastodon import (
            MastodonAPIError,
            MastodonError,
            MastodonNetworkError,
            MastodonRatelimitError,
            MastodonServerError,
            MastodonUnauthorizedError,
        )

        where = f"{self.account.instance}"
        try:
            return self._within_deadline(method, *args, **kwargs)
        except MastodonRatelimitError:
            reset = getattr(self.api, "ratelimit_reset", None)
            retry_at = (
                datetime.fromtimestamp(reset, tz=UTC)
                if reset and reset > time.time()
                else datetime.now(UTC) + timedelta(minutes=5)
            )
            raise PublishError(f"rate limited by {where}", transient=True, retry_at=retry_at) from None
        except MastodonNetworkError as exc:
            raise PublishError(
                f"network error talking to {where}: {_first_line(exc)}",
                transient=True,
                maybe_sent=not _never_connected(exc),
            ) from None
        except MastodonServerError as exc:
            raise PublishError(
                f"{where} answered {_status(exc)} {_message(exc)}".rstrip(), transient=True, maybe_sent=True
            ) from None
        except MastodonUnauthorizedError as exc:
            raise PublishError(
                f"{where} refused the token ({_message(exc) or '401'}): check RELAY_* token in the environment and"
                " that the application has the write:statuses scope",
                transient=False,
                auth=True,
            ) from None
        except MastodonAPIError as exc:
            status = _status(exc)
            if status == 403:
                raise PublishError(
                    f"{where} forbids this ({_message(exc) or '403'}): the account may be suspended or the token lacks write:statuses",
                    transient=False,
                    auth=True,
                ) from None
            if status == 429:
                raise PublishError(
                    f"rate limited by {where}", transient=True, retry_at=datetime.now(UTC) + timedelta(minutes=5)
                ) from None
            if status == 408 or (isinstance(status, int) and status >= 500):
                raise PublishError(
                    f"{where} answered {status} {_message(exc)}".rstrip(), transient=True, maybe_sent=True
                ) from None
            raise PublishError(
                f"{where} refused the post: {status} {_message(exc)}".rstrip(), transient=False
            ) from None
        except MastodonError as exc:
            raise PublishError(f"{where}: {_first_line(exc)}", transient=False) from None

    def _within_deadline(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one API call in a daemon thread and wait at most RELAY_REQUEST_TIMEOUT: the
        SDK's own timeout is per read, so a server answering one byte at a time would hold
        it forever. A call left running is abandoned (it dies with the process) and this
        account makes no further calls in this run: the error carries a retry time a minute
        ahead, on which the pipeline stops the account (and blocks it until then) without
        touching the deliveries behind this one. The call may have reached the server, so
        the error says maybe_sent; callers that know nothing was posted clear it.
        Mastodon.py never touches the store, so the thread is safe."""
        if self._stalled:
            raise self._stall_error()
        total = self.context.request_timeout
        try:
            return call_abandonable(lambda: method(*args, **kwargs), total, "relay-mastodon")
        except Abandoned:
            self._stalled = f"{self.account.instance} timed out: no complete answer within {total:g}s"
            raise self._stall_error() from None

    def _stall_error(self) -> PublishError:
        return PublishError(
            self._stalled or f"{self.account.instance} timed out",
            transient=True,
            retry_at=self.context.clock() + STALL_PAUSE,
            maybe_sent=True,
        )


def _not_sent(exc: PublishError) -> PublishError:
    """The same error, for a call that cannot have posted a status (an upload, a read)."""
    return PublishError(str(exc), transient=exc.transient, auth=exc.auth, retry_at=exc.retry_at, maybe_sent=False)


def _get(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


def _status(exc: Exception) -> Any:
    return exc.args[1] if len(exc.args) > 1 else None


def _message(exc: Exception) -> str:
    return str(exc.args[3]) if len(exc.args) > 3 and exc.args[3] else ""


def _never_connected(exc: Exception) -> bool:
    """A network error that happened before any byte was sent: nothing can have landed."""
    text = str(exc)
    return any(
        sign in text
        for sign in ("NewConnectionError", "NameResolutionError", "Connection refused", "Failed to resolve")
    )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
