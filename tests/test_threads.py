"""thread: N (issue 10, part 6): an item whose summary a post would cut becomes a thread of at
most N posts. Here the split itself, with each platform's rules; tests/test_threads_e2e.py
sends threads to the reference PDS and mastodon-mock, across SIGKILLs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.dedupe import canonical_url, fingerprint
from relay.models import DeliveryState, Item, Post, item_payload
from relay.poll import delivery_key
from relay.render import FeedInfo, find_template, make_environment, render_post
from relay.schedule import MAX_ATTEMPTS
from relay.store import Store, epoch
from relay.targets.base import Limits, PublishError, Receipt
from relay.targets.bluesky import BLUESKY_MAX_BYTES, BLUESKY_MAX_GRAPHEMES, BlueskyText
from relay.targets.mastodon import MastodonText
from relay.text import grapheme_length, utf8_length
from tests.test_deliver import NOW, Clock, ScriptedTarget, run

ENV = make_environment([])
FEED = FeedInfo("santenathon", "SantéNathon", "https://santenathon.example/feed")
LINK = "https://santenathon.example/2026/11/hdh-microsoft"
SENTENCES = [
    "Le Health Data Hub reste hébergé chez Microsoft, malgré les promesses répétées du gouvernement.",
    "La CNIL a rappelé que les données de santé des Français relèvent d'un régime de protection renforcé.",
    "Les collectifs demandent une migration vers un hébergeur souverain avant la fin de l'année prochaine.",
    "Une pétition a déjà réuni plus de quarante mille signatures en trois semaines de campagne.",
    "Écrivez à votre député : le modèle de lettre est en ligne, avec les arguments juridiques détaillés.",
    "Rendez-vous samedi devant le ministère, à quatorze heures, avec vos pancartes et vos questions !",
]


def item(summary: str, title: str = "Health Data Hub : toujours chez Microsoft") -> Item:
    return Item(
        "santenathon", "k", LINK, LINK, title, summary, published=datetime(2026, 11, 30, tzinfo=UTC), key_link=LINK
    )


def thread(summary: str, platform: str = "mastodon", most: int = 5, template: str = "news", **kwargs: object) -> Post:
    rules = BlueskyText() if platform == "bluesky" else MastodonText(Limits(max_characters=500))
    return render_post(
        find_template(ENV, template, platform),
        item(summary, **kwargs),  # type: ignore[arg-type]
        FEED,
        rules=rules,
        account="acct",
        hashtags=("HealthDataHub",),
        language="fr",
        thread=most,
    )


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_a_summary_that_fits_is_one_post() -> None:
    post = thread(SENTENCES[0])
    assert post.action == "post" and post.thread == ()
    assert SENTENCES[0] in post.text


def test_a_long_summary_becomes_a_thread_whose_first_post_keeps_title_link_and_hashtags() -> None:
    summary = " ".join(SENTENCES * 2)
    post = thread(summary)
    assert post.action == "thread" and len(post.thread) >= 1
    assert post.text.startswith("Health Data Hub : toujours chez Microsoft")
    assert LINK in post.text and "#HealthDataHub" in post.text
    for part in (post, *post.thread):
        assert part.length <= part.limit == 500
    for reply in post.thread:
        assert reply.link == "" and LINK not in reply.text and "#HealthDataHub" not in reply.text
        assert not reply.images and not reply.attach_image and reply.image is None
    # every word of the summary is posted, once, in order
    shown = words(post.text.split("\n\n", 1)[1].rsplit(LINK, 1)[0]) + [w for r in post.thread for w in words(r.text)]
    assert shown == words(summary)


def test_parts_end_at_sentence_ends() -> None:
    post = thread(" ".join(SENTENCES * 2))
    body = post.text.split("\n\n")[1]
    assert body.endswith(("!", "."))
    for reply in post.thread:
        assert reply.text.endswith((".", "!")), reply.text


def test_a_sentence_longer_than_a_post_is_cut_at_a_word_with_an_ellipsis() -> None:
    sentence = " ".join(["hébergement souverain des données de santé"] * 40) + "."
    post = thread(sentence, most=10)
    assert post.action == "thread"
    for part in post.thread[:-1]:
        assert part.text.endswith("…") and not part.text.endswith(" …")
    assert post.thread[-1].text.endswith(".")
    shown = words(post.text.split("\n\n", 1)[1].rsplit(LINK, 1)[0]) + [w for r in post.thread for w in words(r.text)]
    assert shown == words(sentence)


def test_at_most_n_posts_the_last_cut_with_an_ellipsis() -> None:
    summary = " ".join(SENTENCES * 6)
    post = thread(summary, most=3)
    assert len(post.thread) == 2
    assert post.thread[-1].text.endswith("…")
    assert all(part.length <= 500 for part in post.thread)


def test_thread_1_is_a_single_post_cut_as_before() -> None:
    post = thread(" ".join(SENTENCES * 2), most=1)
    assert post.action == "post" and post.thread == () and "…" in post.text


@pytest.mark.parametrize("text", ["🇫🇷 Données de santé é\u0301 👩‍⚕️ souveraineté. " * 60, "数据主权。" * 400])
def test_bluesky_parts_fit_in_graphemes_and_bytes(text: str) -> None:
    post = thread(text, platform="bluesky", most=10, template="news-en")
    assert post.action == "thread"
    for part in (post, *post.thread):
        assert grapheme_length(part.text) <= BLUESKY_MAX_GRAPHEMES
        assert utf8_length(part.text) <= BLUESKY_MAX_BYTES
    for reply in post.thread:
        assert reply.embed is None and reply.link == ""
        for facet in reply.facets:
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            reply.text.encode()[start:end].decode()  # on UTF-8 boundaries


def test_bluesky_replies_link_their_urls_and_tag_their_hashtags() -> None:
    summary = (
        " ".join(SENTENCES) + " Lire https://cnil.example/deliberation-2026 #SantéNumérique. " + " ".join(SENTENCES)
    )
    post = thread(summary, platform="bluesky", template="news-en")
    features = [f["features"][0] for r in post.thread for f in r.facets]
    assert {"$type": "app.bsky.richtext.facet#link", "uri": "https://cnil.example/deliberation-2026"} in features
    assert {"$type": "app.bsky.richtext.facet#tag", "tag": "SantéNumérique"} in features


def test_a_bluesky_template_without_the_summary_never_threads() -> None:
    post = thread(" ".join(SENTENCES * 2), platform="bluesky", template="news")
    assert post.action == "post" and post.thread == ()


def test_mastodon_replies_never_mention_anyone() -> None:
    summary = (
        " ".join(SENTENCES) + " Contact : ＠collectif@example.org et @stranger@evil.example. " + " ".join(SENTENCES)
    )
    post = thread(summary)
    for part in (post, *post.thread):
        assert not re.search(r"(?<![\w/=])@\w+@", part.text), part.text


def test_a_content_warning_is_on_every_part_and_counts() -> None:
    rules = MastodonText(Limits(max_characters=500))
    post = render_post(
        find_template(ENV, "news", "mastodon"),
        item(" ".join(SENTENCES * 2)),
        FEED,
        rules=rules,
        account="acct",
        hashtags=(),
        language="fr",
        spoiler_text="Santé",
        thread=4,
    )
    assert [p.spoiler_text for p in (post, *post.thread)] == ["Santé"] * (1 + len(post.thread))
    assert all(p.length <= 500 for p in (post, *post.thread))


def test_a_thread_round_trips_through_the_state() -> None:
    post = thread(" ".join(SENTENCES * 2))
    assert Post.from_json(post.to_json()) == post


# Delivering a thread: each reply its own delivery (thread_parts), against a scripted
# platform (tests/test_deliver.py); the real platforms are in tests/test_threads_e2e.py

LONG = " ".join(SENTENCES * 2)  # a first post and two replies on a 500-character instance


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


def config(tmp_path: Path, *, max_per_run: int = 10, thread: int = 5) -> Config:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"pacing:\n  max_per_run: {max_per_run}\n  min_interval: 0s\n  max_per_day: 100\n"
        "accounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n    token: ${M_TOKEN}\n"
        f"feeds:\n  - name: a\n    url: https://a.example/feed\n    thread: {thread}\n"
    )
    return load_config(path, environ={"M_TOKEN": "m-token"})


def queue_long(store: Store, title: str, summary: str = LONG, seen: datetime = NOW - timedelta(hours=1)) -> int:
    link = f"https://a.example/{title.replace(' ', '-')}"
    entry = Item("a", f"id:{title}", link, canonical_url(link), title, summary)
    with store.transaction():
        item_id = store.insert_item(
            "a", fingerprint(entry.key), fingerprint(link), title, link, None, epoch(seen), item_payload(entry)
        )
        store.insert_delivery(item_id, "m", DeliveryState.QUEUED, delivery_key("m", "a", entry.key), None, epoch(seen))
    return max(d.id for d in store.deliveries())


def test_a_thread_is_posted_reply_under_reply_each_with_its_own_key(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article")
    target = ScriptedTarget()
    report = run(config(tmp_path), store, Clock(), target)
    assert not report.failed
    posts = [c for c in target.calls if c.method == "publish"]
    assert len(posts) == 3
    key = delivery_key("m", "a", "id:Un long article")
    assert [c.idempotency_key for c in posts] == [key, f"{key}.1", f"{key}.2"]
    assert [c.parent for c in posts] == [None, "1", "2"]  # each reply answers the post before it
    parts = store.thread_parts(delivery_id)
    assert [(p.state, p.remote_id) for p in parts] == [("posted", "2"), ("posted", "3")]
    delivery = store.delivery(delivery_id)
    assert delivery is not None and delivery.state == DeliveryState.POSTED and delivery.remote_id == "1"
    assert report.events[0].detail == "the first of a thread of 3 posts"


def test_a_thread_counts_as_one_post_for_pacing(tmp_path: Path, store: Store) -> None:
    queue_long(store, "Premier")
    second = queue_long(store, "Second", seen=NOW - timedelta(minutes=30))
    target = ScriptedTarget()
    run(config(tmp_path, max_per_run=1), store, Clock(), target)
    assert len([c for c in target.calls if c.method == "publish"]) == 3  # the whole first thread
    delivery = store.delivery(second)
    assert delivery is not None and delivery.state == DeliveryState.QUEUED


def test_a_reply_that_fails_for_now_is_resumed_later_under_the_right_parent(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article")
    clock = Clock()
    down = PublishError("HTTP 503", transient=True)
    target = ScriptedTarget(publish=[Receipt("100", "u100"), Receipt("101", "u101"), down])
    report = run(config(tmp_path), store, clock, target)
    assert [e.outcome for e in report.events] == ["posted", "retry"] and "thread reply 2 of 2" in report.events[
        1
    ].detail
    parts = store.thread_parts(delivery_id)
    assert [p.state for p in parts] == ["posted", "queued"] and parts[1].attempts == 1
    # nothing is due before the backoff: the next run sends nothing
    again = ScriptedTarget()
    run(config(tmp_path), store, clock, again)
    assert again.calls == []
    clock.advance(hours=1)
    run(config(tmp_path), store, clock, again)
    [call] = again.calls
    assert call.parent == "101" and call.idempotency_key.endswith(".2")
    assert [p.state for p in store.thread_parts(delivery_id)] == ["posted", "posted"]


def test_a_reply_refused_for_good_fails_with_those_after_it_and_says_so(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article", summary=" ".join(SENTENCES * 3))
    refused = PublishError("HTTP 422: Validation failed", transient=False)
    target = ScriptedTarget(publish=[Receipt("100", "u100"), refused])
    report = run(config(tmp_path), store, Clock(), target)
    assert report.failed
    parts = store.thread_parts(delivery_id)
    assert [p.state for p in parts] == ["failed"] * len(parts) and len(parts) >= 2
    assert parts[0].last_error == "HTTP 422: Validation failed"
    assert parts[1].last_error == "not sent: part 1 failed"
    delivery = store.delivery(delivery_id)
    assert delivery is not None and delivery.state == DeliveryState.POSTED
    assert delivery.last_error is not None and "reply 1 failed" in delivery.last_error
    run(config(tmp_path), store, Clock(), again := ScriptedTarget())
    assert again.calls == []  # never retried forever


def test_a_reply_that_keeps_failing_gives_up_after_the_last_attempt(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article")
    clock = Clock()
    first: list[Receipt | BaseException] = [Receipt("1", "u1"), Receipt("2", "u2"), PublishError("503", transient=True)]
    run(config(tmp_path), store, clock, ScriptedTarget(publish=first))
    for _ in range(MAX_ATTEMPTS):
        clock.advance(days=1)
        run(config(tmp_path), store, clock, ScriptedTarget(publish=[PublishError("HTTP 503", transient=True)]))
    parts = store.thread_parts(delivery_id)
    assert parts[-1].state == "failed" and (parts[-1].last_error or "").startswith(
        f"gave up after {MAX_ATTEMPTS} attempts"
    )


def test_an_interrupted_reply_is_found_and_not_sent_again(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article")
    clock = Clock()

    class Killed(BaseException):
        pass

    with pytest.raises(Killed):
        run(config(tmp_path), store, clock, ScriptedTarget(publish=[Receipt("1", "u1"), Killed()]))
    parts = store.thread_parts(delivery_id)
    assert [p.state for p in parts] == ["sending", "queued"]
    target = ScriptedTarget(find=[Receipt("2", "u2")])
    run(config(tmp_path), store, clock, target)
    assert [(c.method, c.parent) for c in target.calls] == [("find", None), ("publish", "2")]
    assert [p.state for p in store.thread_parts(delivery_id)] == ["posted", "posted"]


def test_an_auth_error_on_a_reply_stops_the_account_and_keeps_the_reply(tmp_path: Path, store: Store) -> None:
    delivery_id = queue_long(store, "Un long article")
    refused = PublishError("HTTP 401: The access token is invalid", transient=False, auth=True)
    report = run(config(tmp_path), store, Clock(), ScriptedTarget(publish=[Receipt("1", "u1"), refused]))
    assert report.account_errors and [p.state for p in store.thread_parts(delivery_id)] == ["queued", "queued"]
    assert store.thread_parts(delivery_id)[0].attempts == 0


# what a review of the split found (issue 10, part 6)


def test_a_number_or_a_domain_is_never_cut_as_a_sentence() -> None:
    from relay.render import _cut

    part, rest = _cut("…and it costs 3.14 billion euros this year", lambda s: len(s) <= 58, sentences=True)
    assert "3." not in part or "3.14" in part
    assert not rest.startswith("14")


def test_a_reply_never_cuts_a_url_into_a_link_to_somewhere_else() -> None:
    summary = "数" * 483 + " https://bank.example.com.au/login 之后的文字 " + "数" * 400
    post = thread(summary, platform="bluesky", template="news-en", most=5)
    uris = [f["features"][0]["uri"] for p in (post, *post.thread) for f in p.facets if "uri" in f["features"][0]]
    assert "https://bank.example.com.au/login" in uris
    assert all(uri in (LINK, "https://bank.example.com.au/login") for uri in uris), uris


def test_cjk_and_french_quotes_end_sentences() -> None:
    from relay.render import _cut

    assert _cut("数据主权。数据主权！数据主权数据主权数据主权数据主权", lambda s: len(s) <= 16, sentences=True)[0] == (
        "数据主权。数据主权！"
    )
    _, rest = _cut("Il a dit « Non. » Puis il est parti.", lambda s: len(s) <= 30, sentences=True)
    assert not rest.startswith("»")


def test_mastodon_counts_a_short_url_of_another_scheme_as_23() -> None:
    from relay.text import mastodon_length

    assert mastodon_length("voir gemini://a.bc") == len("voir ") + 23
    summary = " ".join(SENTENCES) + " voir gemini://x.fr" * 120
    post = thread(summary, most=4)
    assert all(mastodon_length(p.text) <= 500 for p in (post, *post.thread))


def test_a_long_summary_is_cut_from_its_start_only() -> None:
    import time

    summary = " ".join(f"https://example{n}.org/{'a' * 60}" for n in range(250))[:20000]
    started = time.process_time()
    post = thread(summary, platform="bluesky", template="news-en", most=10)
    assert len(post.thread) == 9
    assert time.process_time() - started < 30  # a bound for a hung loop, not a benchmark


def test_leftover_replies_of_a_failed_root_or_waiting_behind_a_retry_are_never_due(
    tmp_path: Path, store: Store
) -> None:
    delivery_id = queue_long(store, "Un long article")
    refused = PublishError("HTTP 422", transient=False)
    run(config(tmp_path), store, Clock(), ScriptedTarget(publish=[refused]))
    delivery = store.delivery(delivery_id)
    assert delivery is not None and delivery.state == DeliveryState.FAILED
    later = epoch(NOW) + 30 * 86400
    assert not store.has_due_deliveries(later)  # its replies, queued with it, wait for it
    assert store.unfinished_threads("m", later) == []
    # a thread whose first reply waits for its retry: the replies after it wait too
    second = queue_long(store, "Un autre", summary=" ".join(SENTENCES * 3))
    down = PublishError("HTTP 503", transient=True)
    run(config(tmp_path), store, Clock(), ScriptedTarget(publish=[Receipt("1", "u1"), down]))
    assert [p.state for p in store.thread_parts(second)][:2] == ["queued", "queued"]
    assert not store.has_due_deliveries(epoch(NOW) + 10)
    assert store.has_due_deliveries(epoch(NOW) + 3600)
