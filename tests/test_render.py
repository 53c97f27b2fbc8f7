from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzzlib import live_mentions
from relay import render as render_module
from relay.errors import RenderError
from relay.models import Item
from relay.render import (
    FeedInfo,
    card_title,
    find_template,
    headline,
    make_environment,
    remove_urls,
    render_post,
)
from relay.targets.base import Limits
from relay.targets.bluesky import BLUESKY_MAX_BYTES, BLUESKY_MAX_GRAPHEMES, BlueskyText
from relay.targets.mastodon import MastodonText
from relay.text import clean_text, find_urls, grapheme_length, mastodon_length
from tests.support.reference_text import CLUSTER, reference_truncate

ENV = make_environment([])
DEFAULT_LIMITS = Limits()
MASTODON = MastodonText()


def rules(platform: str, limits: Limits = DEFAULT_LIMITS) -> MastodonText | BlueskyText:
    return BlueskyText() if platform == "bluesky" else MastodonText(limits)


FEED = FeedInfo("quadrature", "La Quadrature du Net", "https://www.laquadrature.net/feed/")


def item(title: str = "Titre", summary: str = "Résumé.", link: str = "https://example.org/a") -> Item:
    return Item("quadrature", "k", link, link, title, summary, published=datetime(2026, 11, 1, tzinfo=UTC))


def render(
    it: Item,
    platform: str = "mastodon",
    template: str = "news",
    hashtags: tuple[str, ...] = ("SantéNumérique",),
    limits: Limits = DEFAULT_LIMITS,
    spoiler: str = "",
):  # type: ignore[no-untyped-def]
    return render_post(
        find_template(ENV, template, platform),
        it,
        FEED,
        rules=rules(platform, limits),
        account="acct",
        hashtags=hashtags,
        language="fr",
        spoiler_text=spoiler,
    )


def test_template_syntax_in_feed_text_is_relayed_literally() -> None:
    post = render(item(title="{{ 7*7 }} {% if true %}x{% endif %}"))
    assert "{{ 7*7 }} {% if true %}x{% endif %}" in post.text
    assert "49" not in post.text


def test_mastodon_post_keeps_link_and_hashtags_when_shrunk() -> None:
    post = render(item(title="T" * 100, summary="mot " * 400))
    assert post.length <= 500
    assert "https://example.org/a" in post.text
    assert post.text.endswith("#SantéNumérique")
    assert "…" in post.text


def test_summary_shrinks_before_title() -> None:
    title = "Un titre important qui doit rester entier"
    post = render(item(title=title, summary="phrase longue " * 100))
    assert title in post.text


def test_title_shrinks_when_summary_is_gone() -> None:
    post = render(item(title="mot " * 200, summary="résumé " * 100), limits=Limits(max_characters=120))
    assert post.length <= 120
    assert "résumé" not in post.text
    assert "https://example.org/a" in post.text


def test_link_and_hashtags_that_cannot_fit_are_an_error() -> None:
    with pytest.raises(RenderError, match="do not fit"):
        render(item(), hashtags=tuple(f"tag{n}" for n in range(60)), limits=Limits(max_characters=100))


def test_content_warning_counts_in_the_limit() -> None:
    post = render(item(summary="x " * 400), spoiler="Santé mentale")
    assert post.length == mastodon_length(post.text, "Santé mentale") <= 500


def test_bluesky_facets_have_byte_offsets_and_full_uri() -> None:
    link = "https://www.example.org/2026/11/" + "tres-long-chemin-" * 10 + "fin"
    post = render(item(title="Données de santé 🇫🇷 : é", link=link), platform="bluesky")
    raw = post.text.encode()
    links = [f for f in post.facets if f["features"][0]["$type"].endswith("#link")]
    tags = [f for f in post.facets if f["features"][0]["$type"].endswith("#tag")]
    assert links[0]["features"][0]["uri"] == link
    shown = raw[links[0]["index"]["byteStart"] : links[0]["index"]["byteEnd"]].decode()
    assert shown.startswith("example.org/2026/11/") and shown.endswith("…")
    assert raw[tags[0]["index"]["byteStart"] : tags[0]["index"]["byteEnd"]].decode() == "#SantéNumérique"
    assert tags[0]["features"][0]["tag"] == "SantéNumérique"
    assert post.embed == {
        "$type": "app.bsky.embed.external",
        "external": {"uri": link, "title": "Données de santé 🇫🇷 : é", "description": "Résumé."},
    }
    assert post.language == "fr"


def render_own(folder: Path, name: str):  # type: ignore[no-untyped-def]
    return render_post(
        find_template(make_environment([folder]), name, "mastodon"),
        item(),
        FEED,
        rules=MASTODON,
        account="a",
        hashtags=(),
        language="fr",
    )


def test_template_that_hides_the_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nolink.j2").write_text("{{ item.title }}")
    with pytest.raises(RenderError, match=r"does not show item\.link"):
        render_own(tmp_path, "nolink")


def test_broken_template_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "broken.j2").write_text("{{ item.title ")
    with pytest.raises(RenderError, match=r"broken\.j2"):
        find_template(make_environment([tmp_path]), "broken", "mastodon")


def test_undefined_variable_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "typo.j2").write_text("{{ item.titel }} {{ item.link }}")
    with pytest.raises(RenderError, match=r"^template typo\.j2: .*has no attribute 'titel'$"):
        render_own(tmp_path, "typo")


def test_sandbox_blocks_unsafe_attributes(tmp_path: Path) -> None:
    (tmp_path / "evil.j2").write_text("{{ item.title.__class__.__mro__ }} {{ item.link }}")
    with pytest.raises(RenderError, match=r"^template evil\.j2: access to attribute '__class__' .* is unsafe"):
        render_own(tmp_path, "evil")


def test_user_templates_override_builtins(tmp_path: Path) -> None:
    (tmp_path / "news.j2").write_text("MINE {{ item.link }}")
    post = render_own(tmp_path, "news")
    assert post.text == "MINE https://example.org/a"  # beats the built-in news.mastodon.j2


# hostile feed text through user templates and Bluesky URLs


@pytest.mark.parametrize(
    ("title", "expression"),
    [
        ("&#64;u15@evil.social", "item.title | striptags"),  # striptags decodes &#64;
        (clean_text("&amp;amp;#64;u15@evil.social"), "item.title | striptags"),  # as a feed's text arrives
        ("&amp;#64;u15@evil.social", "item.title | striptags | striptags"),
        ("aaaaaaaaaa@u15@evil.social", "item.title | wordwrap(10)"),  # a line break before the '@'
        ("&#64;u15@evil.social", "item.title | striptags | urlize"),
        ("&#64;u15@evil.social", "item.title | striptags | forceescape"),
        ("&#64;u15@evil.social", "item.title | striptags | safe"),
    ],
)
def test_no_filter_brings_a_defused_mention_back(tmp_path: Path, title: str, expression: str) -> None:
    (tmp_path / "own.j2").write_text(f"{{{{ {expression} }}}}\n{{{{ item.link }}}}")
    post = render_post(
        find_template(make_environment([tmp_path]), "own", "mastodon"),
        item(title=title),
        FEED,
        rules=MASTODON,
        account="a",
        hashtags=(),
        language="fr",
    )
    assert live_mentions(post.text) == [], post.text
    assert "u15" in post.text and post.text.endswith("\nhttps://example.org/a")


def test_urlize_writes_no_html(tmp_path: Path) -> None:
    # (on Mastodon, feed text brings no URL: the feed's configured URL is the one to linkify)
    (tmp_path / "own.j2").write_text("{{ item.title }} {{ item.link }} {{ feed.url | urlize }}")
    post = render_post(
        find_template(make_environment([tmp_path]), "own", "mastodon"),
        item(title="Voir"),
        FEED,
        rules=MASTODON,
        account="a",
        hashtags=(),
        language="fr",
    )
    assert post.text == "Voir https://example.org/a https://www.laquadrature.net/feed/"


def links_shown(post):  # type: ignore[no-untyped-def]
    raw = post.text.encode()
    return [
        (raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(), f["features"][0]["uri"])
        for f in post.facets
        if f["features"][0]["$type"].endswith("#link")
    ]


def test_a_url_with_a_user_name_in_feed_text_is_not_linked_and_shown_whole() -> None:
    """The part before '@' reads as the host; the browser goes to evil.example."""
    disguised = "https://www.laquadrature.net.petition-officielle-sante@evil.example/sign"
    post = render(item(title=f"Signez la pétition officielle {disguised}"), platform="bluesky")
    assert disguised in post.text
    assert links_shown(post) == [("example.org/a", "https://example.org/a")]
    mastodon = render(item(title=f"Signez la pétition officielle {disguised}"))
    assert mastodon.link == "https://example.org/a" and mastodon.text.count("https://example.org/a") == 1


def test_a_look_alike_host_in_feed_text_is_linked_and_shown_in_punycode() -> None:
    post = render(item(title="Faites un don https://lаquadrature.net/don"), platform="bluesky")  # Cyrillic а
    assert ("xn--lquadrature-yij.net/don", "https://xn--lquadrature-yij.net/don") in links_shown(post)
    assert "lаquadrature" not in post.text


def test_a_long_url_in_feed_text_is_shortened_in_its_path_never_its_host() -> None:
    host = "www.laquadrature.net.petition-officielle-sante.evil.example"
    post = render(item(title=f"Signez https://{host}/sign/the/petition/now"), platform="bluesky")
    [(shown, uri)] = [pair for pair in links_shown(post) if "evil" in pair[1]]
    assert uri == f"https://{host}/sign/the/petition/now"
    assert shown.startswith(host.removeprefix("www.")) and shown.endswith("…")


def test_a_url_in_feed_text_is_linked_to_its_normalised_form() -> None:
    post = render(item(title="Voir https://Example.ORG/données de santé"), platform="bluesky")
    assert ("example.org/données", "https://example.org/donn%C3%A9es") in links_shown(post)


# properties

ALPHABET = st.characters(
    codec="utf-8",
    exclude_categories=("Cs",),
)
SPECIAL = st.sampled_from(
    ["👩‍👩‍👧‍👦", "🇫🇷", "e\u0301", "ש", "مرحبا", "\u202e", "\u200b", "&amp;", "<b>", "@someone", " ", "\n", "é", "🏳️‍🌈"]
)
TEXT = st.lists(st.one_of(st.text(ALPHABET, max_size=30), SPECIAL), max_size=60).map("".join)
PATH = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_/é%"), max_size=300)
LINK = st.builds(
    lambda host, path: f"https://{host}.org/{path}",
    st.sampled_from(["example", "www.laquadrature", "framablog", "xn--sant-bpa"]),
    PATH,
)
TAGS = st.lists(
    st.sampled_from(["SantéNumérique", "HealthDataHub", "RGPD", "données_santé", "Cloud"]), max_size=4, unique=True
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=TEXT,
    summary=TEXT,
    link=LINK,
    hashtags=TAGS,
    platform=st.sampled_from(["mastodon", "bluesky"]),
    template=st.sampled_from(["news", "petition"]),
    limit=st.integers(150, 600),
)
def test_property_fits_and_keeps_link_and_facets(
    title: str, summary: str, link: str, hashtags: list[str], platform: str, template: str, limit: int
) -> None:
    it = item(title=clean_text(title), summary=clean_text(summary), link=link)
    try:
        post = render(
            it, platform=platform, template=template, hashtags=tuple(hashtags), limits=Limits(max_characters=limit)
        )
    except RenderError as exc:
        assert "do not fit" in str(exc)
        return
    for tag in hashtags:
        assert f"#{tag}" in post.text
    if platform == "mastodon":
        assert mastodon_length(post.text) <= limit
        assert link in post.text
    else:
        assert grapheme_length(post.text) <= BLUESKY_MAX_GRAPHEMES
        assert len(post.text.encode()) <= BLUESKY_MAX_BYTES
        raw = post.text.encode()
        uris = [f["features"][0]["uri"] for f in post.facets if "uri" in f["features"][0]]
        assert link in uris
        previous_end = 0
        for facet in post.facets:
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            assert previous_end <= start < end <= len(raw)
            previous_end = end
            covered = raw[start:end].decode("utf-8")  # raises if not on character boundaries
            feature = facet["features"][0]
            if "tag" in feature:
                assert covered == f"#{feature['tag']}"
            else:
                assert "…" in covered or feature["uri"].endswith(covered) or covered in feature["uri"]
    assert live_mentions(post.text) == [], post.text  # Mastodon's own pattern, ported


# The Mastodon card follows the item (issue 14): Mastodon makes the card from the first link.


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Soutenez-nous : https://www.patreon.com/x", "Soutenez-nous :"),
        ("Notre lettre (https://lettre.example/i) chaque mois.", "Notre lettre chaque mois."),
        ("Voir https://a.example/b, puis https://c.example/d.", "Voir, puis."),
        ("https://only.example/page", ""),
        ("Pas de lien ici.", "Pas de lien ici."),
    ],
)
def test_remove_urls_keeps_the_words(text: str, kept: str) -> None:
    assert remove_urls(text) == kept


def test_mastodon_text_has_no_url_from_feed_text_before_the_link() -> None:
    it = Item(
        "quadrature",
        "k",
        "https://example.org/a",
        "example.org/a",
        "Titre https://title.example/t",
        "Soutenez-nous sur Patreon (https://www.patreon.com/x) et lisez https://lettre.example/n",
        author="Auteur https://author.example/",
        tags=("https://tag.example/",),
    )
    for template in ("news", "petition", "news-en"):
        post = render(it, template=template)
        assert [post.text[s:e] for s, e in find_urls(post.text)] == ["https://example.org/a"], template
        assert "Soutenez-nous sur Patreon et lisez" in post.text


def test_a_user_template_with_the_summary_first_still_shows_the_item_card(tmp_path: Path) -> None:
    (tmp_path / "own.j2").write_text("{{ item.summary }} {{ item.author }} {{ feed.title }}\n{{ item.link }}")
    post = render_post(
        find_template(make_environment([tmp_path]), "own", "mastodon"),
        Item(
            "f",
            "k",
            "https://example.org/a",
            "example.org/a",
            "",
            "Lire https://b.example/",
            author="https://c.example/",
        ),
        FeedInfo("f", "Site https://d.example/", "https://example.org/feed"),
        rules=MASTODON,
        account="a",
        hashtags=(),
        language="fr",
    )
    assert post.text == "Lire  Site\nhttps://example.org/a"  # the empty author between two spaces


def test_bluesky_keeps_urls_in_feed_text() -> None:
    post = render(item(summary="Voir https://b.example/page"), platform="bluesky", template="news-en")
    assert "b.example/page" in post.text


# Untitled items read well everywhere (issue 14).


STATUS = "Notre lettre est parue. Le point sur la loi climat https://lettre.example/n et les mobilisations."


def test_untitled_bluesky_post_starts_with_the_summary_and_its_card_has_a_title() -> None:
    for template in ("news", "petition"):
        post = render(item(title="", summary=STATUS), platform="bluesky", template=template)
        assert "Notre lettre est parue. Le point sur la loi climat et les mobilisations." in post.text
        assert post.embed is not None
        assert post.embed["external"]["title"] == "Notre lettre est parue."
        assert post.image_alt == "Notre lettre est parue."


def test_untitled_bluesky_headline_is_cut_on_a_word() -> None:
    post = render(item(title="", summary="manifestation " * 60), platform="bluesky")
    first = post.text.split("\n")[0]
    assert first.endswith("manifestation…")
    assert grapheme_length(first) <= 200


def test_untitled_item_without_summary_has_the_site_name_as_card_title() -> None:
    post = render(item(title="", summary=""), platform="bluesky")
    assert post.embed is not None and post.embed["external"]["title"] == "La Quadrature du Net"


def test_untitled_mastodon_post_starts_with_the_summary() -> None:
    post = render(item(title="", summary=STATUS))
    assert post.text.startswith("Notre lettre est parue. Le point sur la loi climat et les mobilisations.")


def test_titled_item_headline_is_its_title() -> None:
    assert headline("Titre", "Résumé") == "Titre"
    assert card_title("Titre", "Résumé. Suite.", FEED) == "Titre"
    assert card_title("", "Résumé ! Suite.", FEED) == "Résumé !"


@pytest.mark.parametrize("platform", ["mastodon", "bluesky"])
def test_an_item_with_neither_title_nor_summary_is_named_by_its_site(platform: str) -> None:
    post = render(item(title="", summary=""), platform=platform)
    assert post.text.startswith("La Quadrature du Net")  # FEED's title, not a bare link
    if platform == "bluesky":
        assert post.embed["external"]["title"] == "La Quadrature du Net"


def test_a_title_without_letters_is_followed_by_the_summary_on_bluesky() -> None:
    post = render(item(title="0.2.0", summary="Align the domain model with the 2018 edition."), platform="bluesky")
    assert post.text.startswith("0.2.0 — Align the domain model with the 2018 edition.")


# Fit without re-rendering (issue 13): the search before, kept here as the reference.


def reference_fit(
    produce: Callable[[str, str], str], fits: Callable[[str], bool], title: str, summary: str
) -> tuple[str, str, str]:
    """relay.render.fit before issue 13: a binary search over the summary's length, then the
    title's, rendering every try. Returns the text and the title and summary it shows.
    (produce is render_post's; its headline cuts with relay.text.truncate, which test_text
    proves equal to the truncate of before.)"""

    def largest_fitting(make: Callable[[int], tuple[str, str]], upper: int) -> tuple[str, str, str] | None:
        low, high = 0, upper
        best: tuple[str, str, str] | None = None
        if not fits(produce(*make(0))):
            return None
        while low <= high:
            middle = (low + high) // 2
            values = make(middle)
            candidate = produce(*values)
            if fits(candidate):
                best = (candidate, *values)
                low = middle + 1
            else:
                high = middle - 1
        return best

    text = produce(title, summary)
    if fits(text):
        return text, title, summary
    best = largest_fitting(lambda n: (title, reference_truncate(summary, n)), len(CLUSTER.findall(summary)))
    if best is not None:
        return best
    best = largest_fitting(lambda n: (reference_truncate(title, n), ""), len(CLUSTER.findall(title)))
    if best is not None:
        return best
    raise RenderError("too long even without title and summary: the link and hashtags do not fit")


@dataclass
class Fitted:
    """What one render_post's fit did: the text fit_once chose (None: it left the search to
    fit()), the title and summary of its last render, and the reference's answer."""

    new: str | None = None
    chosen: str | None = None  # fit_once's text, or fit()'s where it left the search to it
    shown: tuple[str, str] | None = None
    renders: int = 0
    old: tuple[str, str, str] | None = None


@contextmanager
def watching_fit() -> Iterator[Fitted]:
    """render_post with fit_once watched: its renders counted, and the reference search run
    on the same template and item."""
    fitted = Fitted()
    real = render_module.fit_once

    def watched(produce, produce_raw, measure, capacity, title, summary, fits):  # type: ignore[no-untyped-def]
        def counted(t: str, s: str) -> str:
            fitted.renders += 1
            fitted.shown = (t, s)
            return produce(t, s)

        def counted_raw(t: str, s: str, h: str) -> str:
            fitted.renders += 1
            return produce_raw(t, s, h)

        fitted.new = real(counted, counted_raw, measure, capacity, title, summary, fits)
        try:
            fitted.chosen = fitted.new or render_module.fit(produce, fits, title, summary)
        except RenderError:
            fitted.chosen = None
        try:
            fitted.old = reference_fit(produce, fits, title, summary)
        except RenderError:
            fitted.old = None
        return fitted.new

    with mock.patch.object(render_module, "fit_once", watched):
        yield fitted


def kept(value: str, whole: str) -> int:
    """How many characters of a field a shown value keeps."""
    return len(whole) if value == whole else len(value.removesuffix("…"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=TEXT,
    summary=st.one_of(
        TEXT, st.lists(st.sampled_from(["mot", "de", "santé,", "🇫🇷", "—", "e\u0301té"]), max_size=400).map(" ".join)
    ),
    link=LINK,
    hashtags=TAGS,
    platform=st.sampled_from(["mastodon", "bluesky"]),
    template=st.sampled_from(["news", "petition", "news-en"]),
    limit=st.integers(100, 600),
    url_length=st.sampled_from([23, 40]),
    spoiler=st.sampled_from(["", "Santé mentale"]),
)
def test_property_fit_keeps_at_least_what_the_search_before_kept(
    title: str,
    summary: str,
    link: str,
    hashtags: list[str],
    platform: str,
    template: str,
    limit: int,
    url_length: int,
    spoiler: str,
) -> None:
    whole_title, whole_summary = clean_text(title), clean_text(summary)
    it = item(title=whole_title, summary=whole_summary, link=link)
    with watching_fit() as fitted:
        try:
            post = render(
                it,
                platform=platform,
                template=template,
                hashtags=tuple(hashtags),
                limits=Limits(max_characters=limit, url_length=url_length),
                spoiler=spoiler if platform == "mastodon" else "",
            )
        except RenderError:
            post = None
    if fitted.old is None:
        assert fitted.new is None and post is None  # the link and hashtags do not fit, as before
        return
    assert post is not None and fitted.chosen is not None and link in fitted.chosen
    old_text, old_title, old_summary = fitted.old
    assert fitted.chosen is not None
    if fitted.new is None:
        assert fitted.chosen == old_text  # the search as before
        return
    assert fitted.renders <= 3 and fitted.shown is not None
    if fitted.new != old_text:
        shown_title, shown_summary = fitted.shown
        whole_summary, whole_title = fitted_summary(it, platform), fitted_title(it, platform)
        more_summary = kept(shown_summary, whole_summary) - kept(old_summary, whole_summary)
        assert more_summary > 0 or (
            more_summary == 0 and kept(shown_title, whole_title) >= kept(old_title, whole_title)
        ), (fitted.new, old_text)


def fitted_title(it: Item, platform: str) -> str:
    title = it.title if platform == "bluesky" else remove_urls(it.title)
    summary = fitted_summary(it, platform)
    return title if title.strip() or summary.strip() else FEED.title


def fitted_summary(it: Item, platform: str) -> str:
    return it.summary if platform == "bluesky" else remove_urls(it.summary)


LONG = " ".join(["La surveillance biométrique s'étend, le Conseil d'État a tranché 🇫🇷."] * 80)


@pytest.mark.parametrize("platform", ["mastodon", "bluesky"])
@pytest.mark.parametrize("template", ["news", "petition", "news-en"])
@pytest.mark.parametrize(
    ("title", "summary"),
    [("Titre", LONG), (LONG, LONG), ("", LONG), ("Titre", "Court."), ("0.2.0", LONG)],
    ids=["long-summary", "long-title", "untitled", "short", "title-without-letters"],
)
def test_a_post_is_rendered_at_most_three_times_and_as_before(
    platform: str, template: str, title: str, summary: str
) -> None:
    with watching_fit() as fitted:
        post = render(item(title=title, summary=summary), platform=platform, template=template)
    assert fitted.old is not None
    assert fitted.new is not None and fitted.renders <= 3
    assert fitted.chosen == fitted.old[0]
    assert "example.org/a" in post.text


@pytest.mark.parametrize(
    "expression",
    [
        "item.title | upper }}\n{{ item.summary",
        "item.title }}\n{{ item.summary | truncate(300)",
        "item.title }}\n{{ item.summary | replace('a', 'aa')",
        "item.title | striptags }}\n{{ item.summary | striptags",
        "item.title }} {{ item.title }}\n{{ item.summary",
        "item.summary[:120] }} {{ item.title",
        "item.title }}{{ item.summary",
        "item.title }}\n{% if item.summary | length > 200 %}{{ item.summary }}{% endif %}{{ ''",
        "item.author }}\n{{ item.title }}\n{{ item.summary",
    ],
)
def test_templates_that_change_or_repeat_a_field_fit_as_before(tmp_path: Path, expression: str) -> None:
    (tmp_path / "own.j2").write_text(f"{{{{ {expression} }}}}\n{{{{ item.link }}}} #tag")
    marker = render_module._MARKS["summary"]
    for author in ("Rédaction", marker, "\U0010fffd"):  # a feed that knows the run's marker forges nothing
        it = Item(
            "quadrature",
            "k",
            "https://example.org/a",
            "example.org/a",
            f"Titre {marker}",
            "<b>Lettre</b> " + LONG,
            author=author,
        )
        with watching_fit() as fitted:
            post = render_post(
                find_template(make_environment([tmp_path]), "own", "mastodon"),
                it,
                FEED,
                rules=MastodonText(Limits(max_characters=300)),
                account="a",
                hashtags=(),
                language="fr",
            )
        assert fitted.old is not None and fitted.chosen is not None
        assert fitted.chosen == fitted.old[0] or (fitted.new is not None and len(fitted.new) >= len(fitted.old[0])), (
            expression
        )
        assert post.length <= 300 and "https://example.org/a" in post.text
