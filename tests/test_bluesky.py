"""The Bluesky target against the real reference PDS (@atproto/pds from npm, with an
in-memory PLC directory) on loopback, started by the suite."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import Account, Pacing
from relay.context import Context
from relay.models import Post
from relay.store import Store
from relay.targets.bluesky import BlueskyTarget, make_thumbnail
from relay.text import grapheme_length
from tests.support.feeds import numbered, rss
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay
from tests.support.servers import Pds, start_pds

pytestmark = pytest.mark.bluesky
NOW = datetime.now(UTC).replace(microsecond=0)
ROOT = Path(__file__).resolve().parent.parent


def write(
    tmp_path: Path, pds: Pds, handle: str, feed_url: str, *, extra: str = "", allow_private: bool = False
) -> Path:
    """allow_private: the test serves the card's page or image from loopback, which the
    default network policy refuses."""
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n  hashtags: [SantéNumérique]\n"
        f"accounts:\n  sky:\n    platform: bluesky\n    handle: {handle}\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        + ("network:\n  allow_private: true\n" if allow_private else "")
        + f"feeds:\n  - name: f\n    url: {feed_url}\n{extra}"
    )
    return path


def records(pds: Pds, did: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{pds.url}/xrpc/com.atproto.repo.listRecords",
        params={"repo": did, "collection": "app.bsky.feed.post", "limit": 100},
    )
    response.raise_for_status()
    return list(response.json()["records"])


def jpeg(width: int = 1600, height: int = 1200, noise: bool = True) -> bytes:
    from PIL import Image

    image = (
        Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        if noise
        else Image.new("RGB", (width, height), (20, 90, 200))
    )
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_post_with_facets_and_card_read_back(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    alice = pds.account("alice.test")
    picture = jpeg()
    assert len(picture) > 1_000_000  # must be re-encoded to fit the card's limit
    image = feed_server.add("/photo.jpg", lambda r: Response(200, picture, {"Content-Type": "image/jpeg"}))
    link = "https://www.example.org/2026/11/donnees-de-sante-un-tres-long-chemin-d-article-qui-depasse"
    body = rss(
        [
            {
                "title": "Données de santé 🇫🇷 : le Conseil d'État saisi",
                "link": link,
                "guid": "1",
                "description": f'<p>Le collectif dépose un recours.</p><img src="{image}">',
                "published": NOW,
            }
        ]
    )
    config = write(
        tmp_path,
        pds,
        "alice.test",
        feed_server.feed("/f", body),
        extra="    hashtags: [SantéNumérique, HealthDataHub]\n",
        allow_private=True,
    )
    result = relay("run", "-c", str(config), env={"PASSWORD": "alice-pass"})
    assert result.exit_code == 0, result.output
    [record] = records(pds, alice["did"])
    value = record["value"]
    raw = value["text"].encode()
    assert value["langs"] == ["fr"]
    assert value["createdAt"].endswith("Z") and "T" in value["createdAt"]
    features = {f["features"][0]["$type"]: f for f in value["facets"]}
    link_facet = features["app.bsky.richtext.facet#link"]
    assert link_facet["features"][0]["uri"] == link
    shown = raw[link_facet["index"]["byteStart"] : link_facet["index"]["byteEnd"]].decode()
    assert shown.startswith("example.org/2026/11/") and shown.endswith("…")
    tags = [f for f in value["facets"] if f["features"][0]["$type"].endswith("#tag")]
    assert sorted(raw[t["index"]["byteStart"] : t["index"]["byteEnd"]].decode() for t in tags) == [
        "#HealthDataHub",
        "#SantéNumérique",
    ]
    external = value["embed"]["external"]
    assert value["embed"]["$type"] == "app.bsky.embed.external"
    assert external["uri"] == link
    assert external["title"] == "Données de santé 🇫🇷 : le Conseil d'État saisi"
    assert external["description"] == "Le collectif dépose un recours."
    thumb = external["thumb"]
    blob = httpx.get(
        f"{pds.url}/xrpc/com.atproto.sync.getBlob", params={"did": alice["did"], "cid": thumb["ref"]["$link"]}
    )
    assert blob.content == make_thumbnail(picture)
    assert len(blob.content) < 1_000_000 and thumb["mimeType"] == "image/jpeg"


def test_card_from_open_graph_when_the_item_has_no_summary_or_image(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    bob = pds.account("bob.test")
    image = feed_server.add(
        "/og.jpg", lambda r: Response(200, jpeg(200, 100, noise=False), {"Content-Type": "image/jpeg"})
    )
    page = feed_server.add(
        "/article",
        lambda r: Response(
            200,
            (
                '<html><head><meta property="og:title" content="Titre OG"><meta property="og:description" content="Description OG">'
                f'<meta property="og:image" content="{image}"></head><body>x</body></html>'
            ).encode(),
            {"Content-Type": "text/html"},
        ),
    )
    body = rss([{"title": "Sans résumé", "link": page, "guid": "og", "published": NOW}])
    config = write(tmp_path, pds, "bob.test", feed_server.feed("/f", body), allow_private=True)
    assert relay("run", "-c", str(config), env={"PASSWORD": "bob-pass"}).exit_code == 0
    [record] = records(pds, bob["did"])
    external = record["value"]["embed"]["external"]
    assert external["description"] == "Description OG" and external["title"] == "Sans résumé"
    assert "thumb" in external


def test_missing_image_posts_without_thumbnail(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    carol = pds.account("carol.test")
    body = rss(
        [
            {
                "title": "Image cassée",
                "link": "https://example.org/x",
                "guid": "x",
                "published": NOW,
                "description": f'Résumé <img src="{feed_server.url("/missing.jpg")}">',
            }
        ]
    )
    config = write(tmp_path, pds, "carol.test", feed_server.feed("/f", body))
    result = relay("run", "-c", str(config), env={"PASSWORD": "carol-pass"})
    assert result.exit_code == 0, result.output
    [record] = records(pds, carol["did"])
    assert "thumb" not in record["value"]["embed"]["external"]


def test_one_login_over_fifty_runs_and_refreshes_are_saved(
    tmp_path: Path, feed_server: FeedServer, pds: Pds, monkeypatch: pytest.MonkeyPatch
) -> None:
    dave = pds.account("dave.test")
    state: dict[str, int] = {"count": 1}
    feed_server.add(
        "/f", lambda r: Response(200, numbered(state["count"], now=NOW), {"Content-Type": "application/rss+xml"})
    )
    # 52 items in a few simulated hours: above the 24-hour flood guard's default, on purpose
    config = write(tmp_path, pds, "dave.test", feed_server.url("/f"), extra="    flood_threshold_day: 1000\n")
    for run in range(50):
        state["count"] = run + 1
        result = relay("run", "-c", str(config), env={"PASSWORD": "dave-pass"}, now=NOW + timedelta(minutes=2 * run))
        assert result.exit_code == 0, (run, result.output)
    assert len(records(pds, dave["did"])) == 50, relay(
        "queue", "list", "--state", "queued", "--state", "failed", "--state", "sending"
    ).output
    status = json.loads(relay("status", "--format", "json").output)
    assert status["accounts"][0]["logins"] == 1

    store = Store.open(Path(os.environ["RELAY_STATE_DIR"]))
    before = store.session("sky")
    from atproto_client.client.client import Client

    with monkeypatch.context() as patch:
        patch.setattr(Client, "_should_refresh_session", lambda self: True)  # the access token is near expiry
        state["count"] = 51
        assert (
            relay("run", "-c", str(config), env={"PASSWORD": "dave-pass"}, now=NOW + timedelta(hours=3)).exit_code == 0
        )
    after = store.session("sky")
    assert after and after != before  # the refreshed tokens were saved
    state["count"] = 52
    last = relay("run", "-v", "-c", str(config), env={"PASSWORD": "dave-pass"}, now=NOW + timedelta(hours=4))
    assert last.exit_code == 0, last.output
    assert json.loads(relay("status", "--format", "json").output)["accounts"][0]["logins"] == 1
    texts = sorted(
        r["value"]["text"].split("\n")[0] + " " + r["uri"].rsplit("/", 1)[1] for r in records(pds, dave["did"])
    )
    assert len(texts) == 52, texts


@pytest.mark.parametrize(("when", "part"), [("before", "createRecord"), ("after", "createRecord")])
def test_sigkill_around_the_write_then_exactly_one_record(
    tmp_path: Path, feed_server: FeedServer, pds: Pds, when: str, part: str
) -> None:
    erin = pds.account("erin.test")
    before = len(records(pds, erin["did"]))
    config = write(tmp_path, pds, "erin.test", feed_server.feed("/f", numbered(2, now=NOW, prefix=when)))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.killpoint", when, part, "--", "run", "-c", str(config)],
        env={**os.environ, "PASSWORD": "erin-pass"},
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    result = relay("run", "-c", str(config), env={"PASSWORD": "erin-pass"})  # the real clock, like the killed run
    assert result.exit_code == 0, result.output
    texts = [r["value"]["text"].split("\n")[0] for r in records(pds, erin["did"])]
    assert len(texts) - before == 2 and len(set(texts)) == len(texts), texts


def _target(pds: Pds, tmp_path: Path, handle: str) -> BlueskyTarget:
    account = Account(
        name="sky",
        platform="bluesky",
        pacing=Pacing(),
        handle=handle,
        app_password=handle.split(".")[0] + "-pass",
        service=pds.url,
    )
    return BlueskyTarget(account, Store.open(tmp_path / "direct"), Context())


@pytest.mark.parametrize(
    "text",
    [
        "é" * 300,
        "👩‍👩‍👧‍👦" * 120,  # 120 graphemes, 3000 bytes
        "e\u0301" * 300,
        "ש" * 150 + "🇫🇷" * 150,
    ],
)
def test_text_at_the_limits_is_accepted_by_the_pds(pds: Pds, tmp_path: Path, text: str) -> None:
    assert grapheme_length(text) <= 300 and len(text.encode()) <= 3000
    from relay.targets.bluesky import new_tid

    target = _target(pds, tmp_path, "frank.test")
    post = Post(
        platform="bluesky", account="sky", text=text, length=grapheme_length(text), limit=300, language="fr", link=""
    )
    receipt = target.publish(post, idempotency_key="k", rkey=new_tid())
    assert receipt.remote_id.startswith("at://")


def test_one_grapheme_over_is_refused_and_failed(pds: Pds, tmp_path: Path) -> None:
    from relay.targets.base import PublishError
    from relay.targets.bluesky import new_tid

    target = _target(pds, tmp_path, "frank.test")
    post = Post(platform="bluesky", account="sky", text="é" * 301, length=301, limit=300, language="fr", link="")
    with pytest.raises(PublishError) as info:
        target.publish(post, idempotency_key="k", rkey=new_tid())
    assert not info.value.transient and "400" in str(info.value)


def test_check_online_shows_handle_and_did(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    frank = pds.account("frank.test")
    config = write(tmp_path, pds, "frank.test", feed_server.feed("/f", numbered(1, now=NOW)))
    result = relay("check", "--online", "-c", str(config), env={"PASSWORD": "frank-pass"})
    assert result.exit_code == 0, result.output
    assert f"@frank.test ({frank['did']})" in result.output
    bad = relay("check", "--online", "-c", str(config), env={"PASSWORD": "wrong"})
    assert "refused the login" in bad.output or "saved session reused" in bad.output


def test_create_session_rate_limit_stops_logging_in(tmp_path: Path, feed_server: FeedServer) -> None:
    limited = start_pds("gina.test:gina-pass", rate_limits=True)
    try:
        for _ in range(30):  # use up the 30 logins per 5 minutes
            httpx.post(
                f"{limited.url}/xrpc/com.atproto.server.createSession",
                json={"identifier": "gina.test", "password": "gina-pass"},
            )
        config = write(tmp_path, limited, "gina.test", feed_server.feed("/f", numbered(1, now=NOW)))
        first = relay("run", "-c", str(config), env={"PASSWORD": "gina-pass"})
        assert first.exit_code == 1 and "rate limited" in first.output and "waiting until" in first.output
        second = relay("run", "-c", str(config), env={"PASSWORD": "gina-pass"})
        assert second.exit_code == 0 and second.output == ""  # nothing is due before the reset time
        status = json.loads(relay("status", "--format", "json").output)["accounts"][0]
        assert status["logins"] == 1 and status["blocked_until"] is not None
        assert "waiting until" in relay("status").output
    finally:
        limited.stop()


def test_a_retry_of_a_post_that_landed_is_success_not_a_second_post(pds: Pds, tmp_path: Path) -> None:
    from relay.targets.bluesky import new_tid

    frank = pds.account("frank.test")
    target = _target(pds, tmp_path, "frank.test")
    post = Post(platform="bluesky", account="sky", text="une seule fois", length=14, limit=300, language="fr", link="")
    rkey = new_tid()
    first = target.publish(post, idempotency_key="k", rkey=rkey)
    second = target.publish(post, idempotency_key="k", rkey=rkey)  # the PDS answers 500 "already a value at key"
    assert first == second
    assert sum(1 for r in records(pds, frank["did"]) if r["uri"].endswith(rkey)) == 1


def test_loopback_page_and_image_stay_out_of_the_card_under_the_default_policy(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    """A link to a loopback page: its og:description must not reach a published card."""
    bob = pds.account("bob.test")
    image = feed_server.add("/og-secret.jpg", lambda r: Response(200, jpeg(20, 10), {"Content-Type": "image/jpeg"}))
    page = feed_server.add(
        "/internal",
        lambda r: Response(
            200,
            (
                '<html><head><meta property="og:description" content="INTERNAL SECRET">'
                f'<meta property="og:image" content="{image}"></head></html>'
            ).encode(),
            {"Content-Type": "text/html"},
        ),
    )
    body = rss([{"title": "Lien interne", "link": page, "guid": "internal", "published": NOW}])
    config = write(tmp_path, pds, "bob.test", feed_server.feed("/f-internal", body))
    result = relay("run", "-c", str(config), env={"PASSWORD": "bob-pass"})
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "link card from the item only" in line]
    assert page in warning and "private or local address" in warning
    assert feed_server.hits.get("/internal", 0) == 0 and feed_server.hits.get("/og-secret.jpg", 0) == 0
    [record] = [r for r in records(pds, bob["did"]) if r["value"]["embed"]["external"]["uri"] == page]
    external = record["value"]["embed"]["external"]
    assert "INTERNAL SECRET" not in json.dumps(record)
    assert external["title"] == "Lien interne" and "thumb" not in external


def test_an_image_bomb_does_not_wedge_the_account(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    """A tiny PNG declaring 10001 × 10001 pixels: a card without thumbnail, a warning naming
    the item, and the next delivery posted too."""
    from bench.images import png_declared

    carol = pds.account("carol.test")
    bomb = feed_server.add(
        "/bomb.png", lambda r: Response(200, png_declared(10001, 10001), {"Content-Type": "image/png"})
    )
    body = rss(
        [
            {
                "title": f"Bombe {n}",
                "link": f"https://example.org/bomb-{n}",
                "guid": f"bomb-{n}",
                "published": NOW - timedelta(minutes=n),
                "description": f'Résumé {n} <img src="{bomb}">',
            }
            for n in range(2)
        ]
    )
    config = write(tmp_path, pds, "carol.test", feed_server.feed("/f-bomb", body), allow_private=True)
    result = relay("run", "-c", str(config), env={"PASSWORD": "carol-pass"})
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "link card without image" in line]
    assert len(warnings) == 2 and all("pixels" in line for line in warnings)
    assert "https://example.org/bomb-0" in "".join(warnings)
    posted = [r for r in records(pds, carol["did"]) if "bomb-" in r["value"]["embed"]["external"]["uri"]]
    assert len(posted) == 2 and all("thumb" not in r["value"]["embed"]["external"] for r in posted)


def test_article_html_that_breaks_the_parser_posts_with_a_card_from_the_item(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    """'<![foo[' in the page's head makes html.parser raise AssertionError: the post still
    goes out in this run, once, its card built from the item, with one warning line."""
    dave = pds.account("dave.test")
    page = feed_server.add(
        "/marked",
        lambda r: Response(
            200,
            b'<html><head><meta property="og:title" content="OG"><![foo[ x ]]></head></html>',
            {"Content-Type": "text/html"},
        ),
    )
    body = rss([{"title": "Section piégée", "link": page, "guid": "marked", "published": NOW}])
    config = write(tmp_path, pds, "dave.test", feed_server.feed("/f-marked", body), allow_private=True)
    result = relay("run", "-c", str(config), env={"PASSWORD": "dave-pass"})
    assert result.exit_code == 0, result.output
    assert "retried" not in result.output
    [warning] = [line for line in result.output.splitlines() if "link card from the item only" in line]
    assert page in warning and "AssertionError" in warning
    [record] = [
        r for r in records(pds, dave["did"]) if r["value"].get("embed", {}).get("external", {}).get("uri") == page
    ]
    external = record["value"]["embed"]["external"]
    assert external["title"] == "Section piégée" and external["description"] == ""
    queue = json.loads(relay("queue", "list", "--state", "posted", "--format", "json").output)
    assert [d["attempts"] for d in queue] == [1]


def test_a_stalled_service_stops_the_account_and_leaves_the_other_deliveries_untouched(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """The PDS answers the login one byte at a time: the first delivery's attempt times out,
    the account waits a minute, and the second delivery keeps its attempts."""
    from tests.test_netguard import DripServer

    server = DripServer("headers", b'{"accessJwt": "x"}', "application/json")
    try:
        config = tmp_path / "feeds.yaml"
        config.write_text(
            "defaults:\n  every: 1m\n  backfill: 2\n"
            "accounts:\n  sky:\n    platform: bluesky\n    handle: slow.test\n    app_password: ${PASSWORD}\n"
            f"    service: {server.url('')}\n"
            "pacing:\n  max_per_run: 10\n  min_interval: 0s\n"
            f"feeds:\n  - name: f\n    url: {feed_server.feed('/f', numbered(2, now=NOW))}\n"
        )
        result = relay("run", "-c", str(config), env={"PASSWORD": "x", "RELAY_REQUEST_TIMEOUT": "2"}, now=NOW)
    finally:
        server.stop()
    assert "timed out: no complete answer within 2s" in result.output and "waiting until" in result.output
    queue = json.loads(relay("queue", "list", "--format", "json").output)
    assert sorted(d["attempts"] for d in queue) == [0, 1]
    assert server.connections == 1
