"""images: true with several images (issue 10, part 5), end to end: an item's images served
over a loopback HTTP server, attached by `relay run` on mastodon-mock (up to the instance's
max_media_attachments, with their alt text) and embedded on the reference PDS as an
app.bsky.embed.images (up to 4, each re-encoded under 1,000,000 bytes, with its aspect
ratio), or the link card with bluesky_embed: card; and what preview shows."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import pytest

from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock, Pds

NOW = datetime.now(UTC).replace(microsecond=0)
SIZES = [(1600, 1200), (800, 1000), (640, 640), (300, 200), (200, 300)]


def jpeg(width: int, height: int, seed: int) -> bytes:
    import random

    from PIL import Image

    noise = random.Random(seed).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(out, format="JPEG", quality=95)
    return out.getvalue()


def alt(n: int) -> str:
    return "" if n == 0 else f' alt="photo {n}"'


def serve_item(feed_server: FeedServer, path: str, count: int) -> tuple[str, list[str]]:
    """A feed whose one item shows `count` images in its summary, the first without alt."""
    urls = []
    for n, (width, height) in enumerate(SIZES[:count]):
        data = jpeg(width, height, n)
        urls.append(
            feed_server.add(
                f"{path}/img{n}.jpg", lambda r, data=data: Response(200, data, {"Content-Type": "image/jpeg"})
            )
        )
    html = "".join(f'<p><img src="{url}"{alt(n)}></p>' for n, url in enumerate(urls))
    body = (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Collectif</title>"
        "<link>https://example.org/</link><item><title>Manifestation devant la CNIL</title>"
        f"<link>https://example.org/{path.strip('/')}</link><guid>{path}</guid>"
        f"<description>{escape('<p>Nous étions nombreux.</p>' + html)}</description>"
        f"<pubDate>{format_datetime(NOW)}</pubDate></item></channel></rss>"
    ).encode()
    return feed_server.feed(f"{path}.rss", body), urls


def write(tmp_path: Path, account: str, url: str, extra: str = "") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n"
        f"accounts:\n{account}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        "network:\n  allow_private: true\n"
        f"feeds:\n  - name: f\n    url: {url}\n    images: true\n{extra}"
    )
    return path


def test_mastodon_attaches_the_items_images_with_their_alt_text(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"images{uuid.uuid4().hex[:8]}")
    url, images = serve_item(feed_server, "/masto", 5)
    config = write(
        tmp_path, f"  masto:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN}}\n", url
    )
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"TOKEN": token}).stdout)
    [post] = preview["posts"]
    # at most 4 images per item; the first has no alt and takes the title
    assert post["images"] == [
        {"url": images[0], "alt": "Manifestation devant la CNIL"},
        {"url": images[1], "alt": "photo 1"},
        {"url": images[2], "alt": "photo 2"},
        {"url": images[3], "alt": "photo 3"},
    ]
    result = relay("run", "-c", str(config), env={"TOKEN": token})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(token)
    media = status["media_attachments"]
    assert [m["description"] for m in media] == ["Manifestation devant la CNIL", "photo 1", "photo 2", "photo 3"]
    assert all(m["type"] == "image" for m in media)


def bluesky(pds: Pds) -> str:
    return f"  sky:\n    platform: bluesky\n    handle: judy.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"


@pytest.mark.bluesky
def test_bluesky_embeds_the_images_with_aspect_ratio_and_alt(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    judy = pds.account("judy.test")
    url, _ = serve_item(feed_server, "/sky-images", 3)
    config = write(tmp_path, bluesky(pds), url)
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"PASSWORD": "x"}).stdout)
    assert preview["posts"][0]["embed"]["$type"] == "app.bsky.embed.images"
    result = relay("run", "-c", str(config), env={"PASSWORD": "judy-pass"})
    assert result.exit_code == 0, result.output
    [record] = [
        r for r in pds.records(judy["did"]) if r["value"].get("embed", {}).get("$type") == "app.bsky.embed.images"
    ]
    embed = record["value"]["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    assert [image["alt"] for image in embed["images"]] == ["Manifestation devant la CNIL", "photo 1", "photo 2"]
    ratios = [(image["aspectRatio"]["width"], image["aspectRatio"]["height"]) for image in embed["images"]]
    # re-encoded within 2000 pixels a side, the shape kept
    assert [round(w / h, 2) for w, h in ratios] == [round(w / h, 2) for w, h in SIZES[:3]]
    for image in embed["images"]:
        blob = httpx.get(
            f"{pds.url}/xrpc/com.atproto.sync.getBlob",
            params={"did": judy["did"], "cid": image["image"]["ref"]["$link"]},
        )
        assert len(blob.content) < 1_000_000 and image["image"]["mimeType"] == "image/jpeg"


@pytest.mark.bluesky
def test_bluesky_embed_card_keeps_the_link_card(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    judy = pds.account("judy.test")
    url, _ = serve_item(feed_server, "/sky-card", 2)
    config = write(tmp_path, bluesky(pds), url, "    bluesky_embed: card\n")
    result = relay("run", "-c", str(config), env={"PASSWORD": "judy-pass"})
    assert result.exit_code == 0, result.output
    [record] = [
        r for r in pds.records(judy["did"]) if r["value"].get("embed", {}).get("$type") == "app.bsky.embed.external"
    ]
    assert record["value"]["embed"]["external"]["uri"] == "https://example.org/sky-card"
