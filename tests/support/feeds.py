"""Build feed documents for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape


def rss(items: list[dict[str, str | datetime]], title: str = "Test feed") -> bytes:
    parts = [
        f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>{escape(title)}</title><link>https://example.org/</link>"
    ]
    for item in items:
        parts.append("<item>")
        for key in ("title", "link", "guid", "description"):
            if key in item:
                parts.append(f"<{key}>{escape(str(item[key]))}</{key}>")
        if "published" in item:
            published = item["published"]
            assert isinstance(published, datetime)
            parts.append(f"<pubDate>{format_datetime(published)}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


def numbered(
    count: int, *, start: int = 0, now: datetime | None = None, prefix: str = "item", host: str = "example.org"
) -> bytes:
    """count items, newest first, one hour apart, each with a guid and a link."""
    now = now or datetime.now(UTC)
    return rss(
        [
            {
                "title": f"{prefix} {n}",
                "link": f"https://{host}/{prefix}/{n}",
                "guid": f"{prefix}-{n}",
                "description": f"Résumé de l'article {n}.",
                "published": now - timedelta(hours=count + start - n),
            }
            for n in range(start + count - 1, start - 1, -1)
        ]
    )


# A Mastodon and a Bluesky account, secrets from ${TOKEN} and ${APP_PASSWORD} (preview only
# warns when they are not set).
TWO_ACCOUNTS = """\
accounts:
  masto:
    platform: mastodon
    instance: https://mastodon.example
    token: ${TOKEN}
  sky:
    platform: bluesky
    handle: collectif.bsky.social
    app_password: ${APP_PASSWORD}
"""


def one_feed_yaml(
    tmp_path: Path, instance: str, feed_url: str, pacing: str, *, name: str = "news", every: str = "10m"
) -> Path:
    """tmp_path/feeds.yaml: one Mastodon account (token ${TOKEN}) at instance, one feed
    (backfill: 5), and pacing: with these lines."""
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"pacing:\n{pacing}"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {instance}\n    token: ${{TOKEN}}\n"
        f"feeds:\n  - name: {name}\n    url: {feed_url}\n    every: {every}\n    backfill: 5\n"
    )
    return path
