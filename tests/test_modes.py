"""mode: boost | quote (issue 10, part 2), end to end: an ally's post, written on the reference
PDS by the ally's own account (kim) or on mastodon-mock by the ally's, is served as the
ally's account feed over a loopback HTTP server, and `relay run` reposts or quotes it from
the relaying account (ivan; a fresh mastodon-mock user), once however many runs; an original
that is gone falls back to a post, with a warning, or fails with its reason (fallback: none);
and across platforms the result is a post with the link."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest

from tests.support.feedserver import FeedServer
from tests.support.relayrun import killed_then_run, relay
from tests.support.servers import MastodonMock, Pds

NOW = datetime.now(UTC).replace(microsecond=0)
ROOT = Path(__file__).resolve().parent.parent


def account_feed(guid: str, link: str, text: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>@ally</title>"
        "<link>https://bsky.app/profile/kim.test</link><item>"
        f"<title>@kim.test post</title><link>{escape(link)}</link><description>{escape(text)}</description>"
        f"<pubDate>{format_datetime(NOW)}</pubDate><guid>{escape(guid)}</guid></item></channel></rss>"
    ).encode()


def write(tmp_path: Path, accounts: str, feed_url: str, extra: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n"
        f"accounts:\n{accounts}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: ally\n    url: {feed_url}\n{extra}"
    )
    return path


# Bluesky, on the reference PDS


def xrpc_session(pds: Pds, handle: str) -> dict[str, Any]:
    response = httpx.post(
        f"{pds.url}/xrpc/com.atproto.server.createSession",
        json={"identifier": handle, "password": handle.split(".")[0] + "-pass"},
    )
    response.raise_for_status()
    return dict(response.json())


def ally_post(pds: Pds, text: str, handle: str = "kim.test") -> dict[str, str]:
    """kim posts, as the ally would (or another account, a stranger): the post's uri and cid."""
    session = xrpc_session(pds, handle)
    response = httpx.post(
        f"{pds.url}/xrpc/com.atproto.repo.createRecord",
        headers={"Authorization": f"Bearer {session['accessJwt']}"},
        json={
            "repo": session["did"],
            "collection": "app.bsky.feed.post",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": text,
                "createdAt": NOW.isoformat().replace("+00:00", "Z"),
            },
        },
    )
    response.raise_for_status()
    return dict(response.json())


def ivan(pds: Pds) -> str:
    return f"  sky:\n    platform: bluesky\n    handle: ivan.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"


def served(feed_server: FeedServer, path: str, original: dict[str, str], text: str) -> str:
    rkey = original["uri"].rsplit("/", 1)[1]
    return feed_server.feed(path, account_feed(original["uri"], f"https://bsky.app/profile/kim.test/post/{rkey}", text))


@pytest.mark.bluesky
def test_boost_reposts_the_original_once(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    me = pds.account("ivan.test")
    original = ally_post(pds, "Signez la pétition contre l'hébergement du Health Data Hub chez Microsoft")
    url = served(feed_server, "/boost.rss", original, "Signez la pétition")
    config = write(tmp_path, ivan(pds), url, "    mode: boost\n")
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"PASSWORD": "x"}).stdout)
    assert [(p["action"], p["original"]) for p in preview["posts"]] == [("boost", original["uri"])]
    before = pds.records(me["did"], "app.bsky.feed.repost")
    for minutes in (0, 5):
        result = relay("run", "-c", str(config), env={"PASSWORD": "ivan-pass"}, now=NOW + timedelta(minutes=minutes))
        assert result.exit_code == 0, result.output
    reposts = pds.records(me["did"], "app.bsky.feed.repost")
    new = [r for r in reposts if r not in before]
    assert len(new) == 1
    subject = new[0]["value"]["subject"]
    assert (subject["uri"], subject["cid"]) == (original["uri"], original["cid"])
    assert not [p for p in pds.records(me["did"], "app.bsky.feed.post") if "Signez" in p["value"]["text"]]
    history = json.loads(relay("history", "--format", "json").output)
    assert history[0]["remote_id"] == new[0]["uri"]


@pytest.mark.bluesky
def test_quote_embeds_the_original_under_the_templates_text(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    me = pds.account("ivan.test")
    original = ally_post(pds, "Écrivez à votre CPAM et à la CNIL")
    url = served(feed_server, "/quote.rss", original, "Écrivez à votre CPAM et à la CNIL")
    config = write(tmp_path, ivan(pds), url, "    mode: quote\n    hashtags: [SantéNumérique]\n")
    result = relay("run", "-c", str(config), env={"PASSWORD": "ivan-pass"})
    assert result.exit_code == 0, result.output
    [post] = [p for p in pds.records(me["did"], "app.bsky.feed.post") if "CPAM" in p["value"]["text"]]
    embed = post["value"]["embed"]
    assert embed["$type"] == "app.bsky.embed.record"
    assert (embed["record"]["uri"], embed["record"]["cid"]) == (original["uri"], original["cid"])
    assert "#SantéNumérique" in post["value"]["text"]


@pytest.mark.bluesky
def test_a_deleted_original_is_posted_instead_with_a_warning_or_fails_with_fallback_none(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    me = pds.account("ivan.test")
    kim = pds.account("kim.test")
    gone = {"uri": f"at://{kim['did']}/app.bsky.feed.post/3zzzzzzzzzzzz", "cid": ""}
    url = served(feed_server, "/gone.rss", gone, "Un message supprimé depuis")
    config = write(tmp_path, ivan(pds), url, "    mode: boost\n")
    result = relay("run", "-c", str(config), env={"PASSWORD": "ivan-pass"})
    assert result.exit_code == 0, result.output
    assert "is deleted or cannot be found; posted instead of a boost" in result.output
    assert [p for p in pds.records(me["did"], "app.bsky.feed.post") if "supprimé" in p["value"]["text"]]

    gone = {"uri": f"at://{kim['did']}/app.bsky.feed.post/3yyyyyyyyyyyy", "cid": ""}
    url = served(feed_server, "/gone2.rss", gone, "Un autre message supprimé")
    config = write(tmp_path, ivan(pds), url, "    mode: quote\n    fallback: none\n")
    result = relay("run", "-c", str(config), env={"PASSWORD": "ivan-pass"}, now=NOW + timedelta(minutes=10))
    assert result.exit_code == 1, result.output
    assert "(fallback: none)" in result.output
    assert not [p for p in pds.records(me["did"], "app.bsky.feed.post") if "Un autre" in p["value"]["text"]]


# Mastodon, on mastodon-mock


def mock_status(mock: MastodonMock, token: str, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{mock.url}/api/v1/statuses", headers={"Authorization": f"Bearer {token}"}, data={"status": text}
    )
    response.raise_for_status()
    return dict(response.json())


def masto(mock: MastodonMock) -> str:
    return f"  masto:\n    platform: mastodon\n    instance: {mock.url}\n    token: ${{TOKEN}}\n"


def test_mastodon_boost_reblogs_the_original_once(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ally, me = mastodon_mock.new_user(f"ally{suffix}"), mastodon_mock.new_user(f"relais{suffix}")
    original = mock_status(mastodon_mock, ally, "Signez la pétition #HealthDataHub")
    link = f"{mastodon_mock.url}/@ally{suffix}/{original['id']}"  # the status on the account's own instance
    url = feed_server.feed("/m.rss", account_feed(link, link, "Signez la pétition"))
    config = write(tmp_path, masto(mastodon_mock), url, "    mode: boost\n")
    for minutes in (0, 5):
        result = relay("run", "-c", str(config), env={"TOKEN": me}, now=NOW + timedelta(minutes=minutes))
        assert result.exit_code == 0, result.output
    statuses = mastodon_mock.statuses(me)
    assert [s["reblog"]["id"] for s in statuses if s.get("reblog")] == [original["id"]]
    assert not [s for s in statuses if not s.get("reblog")]


def test_mastodon_quote_quotes_the_original_on_an_instance_that_takes_quotes(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ally, me = mastodon_mock.new_user(f"ally{suffix}"), mastodon_mock.new_user(f"relais{suffix}")
    original = mock_status(mastodon_mock, ally, "Écrivez à la CNIL")
    link = f"{mastodon_mock.url}/@ally{suffix}/{original['id']}"
    url = feed_server.feed("/q.rss", account_feed(link, link, "Écrivez à la CNIL"))
    config = write(tmp_path, masto(mastodon_mock), url, "    mode: quote\n")
    result = relay("run", "-c", str(config), env={"TOKEN": me})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(me)
    assert status["quote"]["quoted_status"]["id"] == original["id"]  # mastodon-mock reports 4.6.0


def test_a_post_from_the_other_platform_is_posted_with_its_link(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    me = mastodon_mock.new_user(f"relais{uuid.uuid4().hex[:8]}")
    at = "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3lbv3urcj3s2t"
    link = "https://bsky.app/profile/alice.test/post/3lbv3urcj3s2t"
    url = feed_server.feed("/x.rss", account_feed(at, link, "Un post Bluesky"))
    config = write(tmp_path, masto(mastodon_mock), url, "    mode: boost\n")
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"TOKEN": me}).stdout)
    assert [p["action"] for p in preview["posts"]] == ["post"]
    result = relay("run", "-c", str(config), env={"TOKEN": me})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(me)
    assert link in status["content"] and not status.get("reblog")


# configuration, and the scopes `relay check --online` looks for (a stub API: mastodon-mock's
# test users have no OAuth app, so it cannot say a token's scopes)


class StubApi:
    def __init__(self, scopes: Any) -> None:
        self.scopes = scopes

    def app_verify_credentials(self) -> dict[str, Any]:
        return {"name": "relay", "scopes": self.scopes}


@pytest.mark.parametrize(
    ("scopes", "missing"),
    [
        (["write:statuses", "write:media"], ["read:search", "read:statuses"]),
        (["read", "write"], []),
        ("read:search write", ["read:statuses"]),  # some servers give one string
        (None, []),  # older Mastodon does not say: nothing to warn of
    ],
)
def test_missing_scopes(scopes: Any, missing: list[str]) -> None:
    from relay.config import Account, Pacing
    from relay.context import Context
    from relay.targets.mastodon import MastodonTarget

    target = MastodonTarget(
        Account(name="m", platform="mastodon", pacing=Pacing(), instance="https://m.example", token="t"),
        None,
        Context(),
    )
    target.api = StubApi(scopes)
    assert target.missing_scopes(("read:search", "read:statuses")) == missing


def test_mode_and_fallback_are_read_and_checked(tmp_path: Path) -> None:
    from relay.config import load_config
    from relay.errors import ConfigError

    path = tmp_path / "feeds.yaml"
    accounts = (
        "accounts:\n  masto: {platform: mastodon, instance: 'https://m.example', token: '${T}'}\n"
        "  sky: {platform: bluesky, handle: a.example, app_password: '${T}'}\n"
    )
    path.write_text(
        accounts
        + "feeds:\n  - {name: a, url: a.xml, mode: boost}\n  - {name: b, url: b.xml, mode: {sky: quote}, fallback: none}\n"
    )
    a, b = load_config(path, environ={"T": "x"}).feeds
    assert (a.mode_for("masto"), a.mode_for("sky"), a.fallback) == ("boost", "boost", "post")
    assert (b.mode_for("masto"), b.mode_for("sky"), b.fallback) == ("post", "quote", "none")
    path.write_text(
        accounts
        + "feeds:\n  - {name: a, url: a.xml, mode: repost, fallback: maybe}\n  - {name: b, url: b.xml, mode: {nobody: boost}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"T": "x"})
    assert info.value.problems == [
        "feeds.yaml:5: feeds[0].mode: 'repost' is not one of post, boost, quote",
        "feeds.yaml:5: feeds[0].fallback: must be post or none",
        "feeds.yaml:6: feeds[1].mode: 'nobody' is not an account (accounts: masto, sky)",
    ]


# exactly once across a SIGKILL, as for posts (tests/support/killpoint)


@pytest.mark.bluesky
@pytest.mark.parametrize("mode", ["boost", "quote"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_the_write_then_exactly_one_repost_or_quote(
    tmp_path: Path, feed_server: FeedServer, pds: Pds, mode: str, when: str
) -> None:
    me = pds.account("ivan.test")
    collection = "app.bsky.feed.repost" if mode == "boost" else "app.bsky.feed.post"
    original = ally_post(pds, f"Original {mode} {when} {uuid.uuid4().hex[:6]}")
    before = pds.records(me["did"], collection)
    url = served(feed_server, f"/kill-{mode}-{when}.rss", original, "Un original")
    config = write(tmp_path, ivan(pds), url, f"    mode: {mode}\n")
    killed_then_run(config, {"PASSWORD": "ivan-pass"}, when, "createRecord")
    new = [r for r in pds.records(me["did"], collection) if r not in before]
    assert len(new) == 1, new
    ref = new[0]["value"]["subject"] if mode == "boost" else new[0]["value"]["embed"]["record"]
    assert ref["uri"] == original["uri"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_around_the_reblog_then_exactly_one_reblog(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, when: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ally, me = mastodon_mock.new_user(f"ally{suffix}"), mastodon_mock.new_user(f"relais{suffix}")
    original = mock_status(mastodon_mock, ally, "Signez la pétition")
    link = f"{mastodon_mock.url}/@ally{suffix}/{original['id']}"
    url = feed_server.feed(f"/kill-{when}.rss", account_feed(link, link, "Signez la pétition"))
    config = write(tmp_path, masto(mastodon_mock), url, "    mode: boost\n")
    killed_then_run(config, {"TOKEN": me}, when, "/reblog")
    statuses = mastodon_mock.statuses(me)
    assert [s["reblog"]["id"] for s in statuses if s.get("reblog")] == [original["id"]]


# a status on another instance: found with GET /api/v2/search?resolve=true. mastodon-mock
# searches only its own statuses' text, so this uses relay's own fake Mastodon
# (tests/support/fake_mastodon.py), which resolves the URLs it is given in `remote`


def fake_config(tmp_path: Path, fake: Any, url: str, extra: str) -> Path:
    return write(
        tmp_path, f"  masto:\n    platform: mastodon\n    instance: {fake.url}\n    token: ${{TOKEN}}\n", url, extra
    )


def test_a_status_of_another_instance_is_found_by_search_and_reblogged(
    tmp_path: Path, feed_server: FeedServer, mastodon: Any
) -> None:
    link = "https://framapiaf.example/@santenathon/113456789012345678"
    mastodon.remote[link] = "777"
    url = feed_server.feed("/remote.rss", account_feed(link, link, "Signez la pétition"))
    result = relay(
        "run", "-c", str(fake_config(tmp_path, mastodon, url, "    mode: boost\n")), env={"TOKEN": "good-token"}
    )
    assert result.exit_code == 0, result.output
    assert [r["reblog"]["id"] for r in mastodon.reblogs.values()] == ["777"]
    assert mastodon.statuses == []  # nothing posted of its own
    [search] = mastodon.searches
    assert search["q"] == [link] and search["resolve"] in (["true"], ["1"]) and search["type"] == ["statuses"]


def test_a_status_the_instance_cannot_find_is_posted_instead(
    tmp_path: Path, feed_server: FeedServer, mastodon: Any
) -> None:
    link = "https://gone.example/@ally/1"
    url = feed_server.feed("/gone.rss", account_feed(link, link, "Un statut supprimé"))
    result = relay(
        "run", "-c", str(fake_config(tmp_path, mastodon, url, "    mode: boost\n")), env={"TOKEN": "good-token"}
    )
    assert result.exit_code == 0, result.output
    assert f"the original {link} is deleted or cannot be found" in result.output
    assert mastodon.reblogs == {} and len(mastodon.statuses) == 1
    assert link in mastodon.statuses[0]["content"]


def test_quote_on_an_instance_before_4_5_is_a_post_with_the_link(
    tmp_path: Path, feed_server: FeedServer, mastodon: Any
) -> None:
    """relay's fake Mastodon says it is 4.3.0: no quotes there."""
    link = "https://framapiaf.example/@santenathon/113456789012345679"
    mastodon.remote[link] = "778"
    url = feed_server.feed("/old.rss", account_feed(link, link, "Écrivez à la CNIL"))
    result = relay(
        "run", "-c", str(fake_config(tmp_path, mastodon, url, "    mode: quote\n")), env={"TOKEN": "good-token"}
    )
    assert result.exit_code == 0, result.output
    [status] = mastodon.statuses
    assert status["quoted_status_id"] is None and link in status["content"]


# a feed cannot have relay boost or quote a stranger (which notifies them) under the ally's
# link: what is reposted is what the item's link shows, or nothing


@pytest.mark.bluesky
def test_a_strangers_post_under_the_allys_link_is_not_reposted(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    me = pds.account("ivan.test")
    stranger = ally_post(pds, "Un inconnu", handle="leo.test")
    rkey = stranger["uri"].rsplit("/", 1)[1]
    # the link says kim's post; the guid is leo's post, with the same record key
    body = account_feed(stranger["uri"], f"https://bsky.app/profile/kim.test/post/{rkey}", "Faux original")
    config = write(tmp_path, ivan(pds), feed_server.feed("/forged.rss", body), "    mode: boost\n")
    before = pds.records(me["did"], "app.bsky.feed.repost")
    result = relay("run", "-c", str(config), env={"PASSWORD": "ivan-pass"})
    assert result.exit_code == 0, result.output
    assert "is deleted or cannot be found; posted instead of a boost" in result.output
    assert pds.records(me["did"], "app.bsky.feed.repost") == before
    assert [p for p in pds.records(me["did"]) if "Faux original" in p["value"]["text"]]


def test_a_strangers_status_under_the_allys_address_is_not_reblogged(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    suffix = uuid.uuid4().hex[:8]
    me = mastodon_mock.new_user(f"relais{suffix}")
    mastodon_mock.new_user(f"ally{suffix}")
    stranger = mock_status(mastodon_mock, mastodon_mock.new_user(f"leo{suffix}"), "Un inconnu")
    link = f"{mastodon_mock.url}/@ally{suffix}/{stranger['id']}"  # the ally's address, the stranger's id
    url = feed_server.feed("/forged-m.rss", account_feed(link, link, "Faux original"))
    result = relay("run", "-c", str(write(tmp_path, masto(mastodon_mock), url, "    mode: boost\n")), env={"TOKEN": me})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(me)
    assert not status.get("reblog") and link in status["content"]
