import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzzlib import MASTODON_MENTION_POSIX, MASTODON_MENTION_STRICT, live_mentions, write_config
from relay.models import Item
from relay.render import FeedInfo, find_template, make_environment, render_post
from relay.targets.mastodon import MastodonText
from relay.text import (
    ALONE_BLOCKS,
    Cuts,
    clean_text,
    cluster_end,
    defuse_mentions,
    find_urls,
    grapheme_length,
    mastodon_length,
    shorten_url_for_display,
    truncate,
)
from tests.support.feeds import rss
from tests.support.feedserver import FeedServer
from tests.support.reference_text import CLUSTER, reference_truncate


def test_html_is_stripped_and_entities_decoded() -> None:
    assert clean_text("<p>C&rsquo;est <b>la</b> rentr&eacute;e</p>") == "C’est la rentrée"


def test_doubly_escaped_html_is_decoded() -> None:
    assert clean_text("&amp;lt;b&amp;gt;gras&amp;lt;/b&amp;gt; &amp;eacute;t&amp;eacute;") == "<b>gras</b> été"


def test_scripts_and_styles_vanish() -> None:
    assert clean_text("avant<script>alert(1)</script><style>p{}</style> après") == "avant après"


def test_control_bidi_and_zero_width_characters_are_removed() -> None:
    hidden = "sa\u200bnté\u202e txt\u2066.exe\x07 fin\u00ad\u2060\ufeff\u200e"
    assert clean_text(hidden) == "santé txt.exe fin"


def test_an_emoji_zwj_sequence_stays_one_grapheme() -> None:
    for emoji in ("👩\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "👩🏽\u200d💻"):
        cleaned = clean_text(f"Famille {emoji} !")
        assert cleaned == f"Famille {emoji} !"
        assert grapheme_length(emoji) == 1


def test_persian_and_hindi_joiners_survive() -> None:
    persian = "می\u200cخواهم"  # ZWNJ between two Arabic-script letters
    hindi = "क्\u200dष"  # KA, VIRAMA, ZWJ, SSA: a half form
    assert clean_text(f"{persian} {hindi}") == f"{persian} {hindi}"


def test_joiners_that_join_nothing_are_removed() -> None:
    assert clean_text("ad\u200dmin") == "admin"
    assert clean_text("ad\u200cmin") == "admin"
    assert clean_text("\u200d début \u200c") == "début"
    assert clean_text("👩\u200d\u200d👧") == "👩👧"  # two joiners in a row join nothing
    assert clean_text("x\u200d@user") == "x@user"  # an e-mail-like text, not a mention


def test_tag_characters_are_kept_only_in_a_flag() -> None:
    scotland = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert clean_text(f"{scotland} ok") == f"{scotland} ok"
    assert clean_text("a\U000e0069\U000e0067\U000e006eb") == "ab"  # invisible ASCII smuggled


def test_whitespace_is_folded() -> None:
    assert clean_text("  un\n\n deux\t\u00a0trois  ") == "un deux trois"


def test_mentions_are_defused_but_emails_stay() -> None:
    text = defuse_mentions("merci @cnil et @alice@mastodon.social, écrivez à presse@example.org")
    assert "@cnil" not in text and "@alice@" not in text
    assert "＠cnil" in text and "＠alice@mastodon.social" in text
    assert "presse@example.org" in text


def test_feed_text_is_defused_by_clean_text() -> None:
    assert clean_text("<p>@someone</p>") == "＠someone"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@@user@instance", "＠＠user@instance"),
        ("＠@user", "＠＠user"),
        ("²@user", "²＠user"),
        ("½@user", "½＠user"),
        ("Ⅻ@user", "Ⅻ＠user"),
        ("\u200d@user", "＠user"),
        ("&#64;user &#x40;hex", "＠user ＠hex"),
        ("(@user)", "(＠user)"),
        ("@.user", "＠.user"),
        ("é@user", "é@user"),  # after a letter: an address, not a mention, for Mastodon too
        ("e\u0301@user", "é@user"),
        ("contact@laquadrature.net", "contact@laquadrature.net"),
        ("https://mastodon.social/@user", "https://mastodon.social/@user"),
        ("https://example.org/?by=@user", "https://example.org/?by=@user"),
        ("#hashtag https://example.org/a", "#hashtag https://example.org/a"),
        ("écrire @ nous", "écrire @ nous"),
    ],
)
def test_every_mention_form_of_the_report_is_defused(text: str, expected: str) -> None:
    assert clean_text(text) == expected
    assert not live_mentions(clean_text(text))


def test_the_mastodon_pattern_port_finds_what_mastodon_finds() -> None:
    for pattern in (MASTODON_MENTION_STRICT, MASTODON_MENTION_POSIX):
        assert pattern.search("@user")
        assert pattern.search("@user@host.tld").group(0) == "@user@host.tld"  # type: ignore[union-attr]
        assert pattern.search("x @user")
        assert pattern.search("²@user")
        assert not pattern.search("a@b.org")
        assert not pattern.search("https://x.org/@user")
        assert not pattern.search("＠user")
    assert MASTODON_MENTION_STRICT.search("\u200d@user")  # Ruby's [[:word:]] has no ZWJ


_AT_HEAVY = st.one_of(
    st.sampled_from(["@", "@", "@", "＠", "@@", "=", "/", " ", "\n", "\u200d", "\u200c", "\u0301", "\u064b", "_"]),
    st.sampled_from(["²", "³", "¹", "½", "¼", "⅞", "Ⅻ", "٣", "௫", "𝟘", "ª", "º", "ʰ", "ᵃ", "〡"]),
    st.sampled_from(
        ["a", "Z", "9", "é", "ß", "ж", "λ", "ש", "ب", "क", "्", "中", "ー", "ｶ", "👩", "🏽", "&#64;", "<b>"]
    ),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(codec="utf-8", categories=("L", "M", "N", "Pc", "Po", "Cf", "So")),
)
_ENVIRONMENT = make_environment([])
_AT_TEXT = st.lists(_AT_HEAVY, max_size=40).map("".join)
_ITEM_TEXT = st.lists(st.one_of(_AT_TEXT, st.just("user"), st.just("x.org")), max_size=6).map("".join)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(title=_ITEM_TEXT, summary=_ITEM_TEXT)
def test_no_feed_text_yields_a_live_mention(title: str, summary: str) -> None:
    clean_title, clean_summary = clean_text(title), clean_text(summary, keep_newlines=True)
    assert not live_mentions(clean_title) and not live_mentions(clean_summary)
    item = Item("f", "k", "https://example.org/a", "example.org/a", clean_title, clean_summary)
    for template in ("news", "petition"):
        post = render_post(
            find_template(_ENVIRONMENT, template, "mastodon"),
            item,
            FeedInfo("f", clean_title, "https://example.org/feed"),
            rules=MastodonText(),
            account="a",
            hashtags=("Climat",),
            language="fr",
        )
        assert not live_mentions(post.text), post.text


def test_mentions_in_a_title_are_defused_in_preview_output(tmp_path: Path, feed_server: FeedServer) -> None:
    title = "Merci @@user@instance ＠@user ²@user ½@user \u200d@user écrivez à contact@laquadrature.net"
    url = feed_server.feed("/feed", rss([{"title": title, "link": "https://example.org/merci", "guid": "1"}]))
    config = write_config(tmp_path, url)
    result = subprocess.run(
        [sys.executable, "-m", "relay", "preview", "--format", "json", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    masto, sky = json.loads(result.stdout)["posts"]
    expected = "Merci ＠＠user@instance ＠＠user ²＠user ½＠user ＠user écrivez à contact@laquadrature.net"
    assert masto["text"].startswith(expected) and sky["text"].startswith(expected)
    assert not live_mentions(masto["text"])
    assert not [f for f in sky["facets"] for feature in f["features"] if feature["$type"].endswith("#mention")]


def test_graphemes_count_clusters_not_code_points() -> None:
    assert grapheme_length("👩‍👩‍👧‍👦") == 1
    assert grapheme_length("e\u0301") == 1
    assert grapheme_length("🇫🇷🇪🇺") == 2


def test_truncate_cuts_on_grapheme_boundaries_with_an_ellipsis() -> None:
    text = "👩‍👩‍👧‍👦" * 10
    cut = truncate(text, 5)
    assert cut == "👩‍👩‍👧‍👦" * 4 + "…"
    assert truncate("court", 10) == "court"


def test_truncate_prefers_a_word_boundary() -> None:
    assert truncate("le Health Data Hub chez Microsoft", 28) == "le Health Data Hub chez…"


# Counting only around the characters that join their neighbours, and only the start of a
# text, gives what \\X over the whole text gives (issue 13).

_VIRAMA = regex.compile(r"[\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D]")
_JOINED_CONSONANT = regex.compile(
    r"[\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D][\p{Mn}\p{Mc}\u200D]*(?=[\u0900-\u0D7F&&\p{Lo}])", regex.V1
)


def reference_length(text: str) -> int:
    """grapheme_length before issue 13: every cluster of the text, found with \\X."""
    clusters = CLUSTER.findall(text)
    if not _VIRAMA.search(text):
        return len(clusters)
    return len(clusters) + sum(len(_JOINED_CONSONANT.findall(cluster)) for cluster in clusters)


# Pieces that join or break clusters in every way UAX #29 knows: CR LF, combining marks,
# ZWJ emoji sequences and modifiers, flags, a prepended concatenation mark, Indic viramas
# and conjuncts, Hangul jamo and syllables, spacing marks, variation selectors, tags.
JOINING_PIECES = st.sampled_from(
    [
        "a",
        " ",
        " ",
        "\n",
        "\r",
        "\r\n",
        "é",
        "e\u0301",
        "\u0301",
        "\u200d",
        "\u200c",
        "👩",
        "🏽",
        "🇫",
        "🇷",
        "\u0600",
        "क",
        "्",
        "ष",
        "ᄀ",
        "ᅡ",
        "ᆨ",
        "가",
        "\u0903",
        ",",
        "-",
        "—",
        "…",
        "😀",
        "\ufe0f",
        "\U000e0041",
        "ก",
        "\u0e33",
    ]
)
JOINING_TEXT = st.lists(st.one_of(JOINING_PIECES, st.text(max_size=3)), max_size=40).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=JOINING_TEXT, count=st.integers(-2, 45))
def test_property_counting_and_cutting_agree_with_every_cluster(text: str, count: int) -> None:
    clusters = CLUSTER.findall(text)
    assert grapheme_length(text) == reference_length(text)
    assert cluster_end(text, count) == len("".join(clusters[: max(count, 0)]))
    assert truncate(text, count) == reference_truncate(text, count)
    cuts = Cuts(text, max(count, 0))
    assert cuts.ends == [len("".join(clusters[:k])) for k in range(min(max(count, 0), len(clusters)) + 1)]
    for n in range(1, cuts.known + 1):
        cut, kept = cuts.cut(n)
        assert cut == reference_truncate(text, n)
        if cuts.exact and cut != text:
            assert cut == cuts.prefix(kept) + "…"
            assert grapheme_length(cut) == kept + 1


def test_the_blocks_counted_one_cluster_a_character_hold_no_joining_character() -> None:
    every = "".join(chr(point) for point in range(0x110000) if not 0xD800 <= point <= 0xDFFF)
    alone = re.sub(f"[^{ALONE_BLOCKS}]", "", every)
    assert len(alone) > 800_000  # the blocks most text is written in
    joining = regex.compile(
        r"[\r\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=SpacingMark}"
        r"\p{Grapheme_Cluster_Break=Regional_Indicator}\p{Grapheme_Cluster_Break=Prepend}"
        r"\p{Hangul_Syllable_Type=L}\p{Hangul_Syllable_Type=V}\p{Hangul_Syllable_Type=T}"
        r"\p{Hangul_Syllable_Type=LV}\p{Hangul_Syllable_Type=LVT}]"
    )
    assert joining.search(alone) is None
    assert len(CLUSTER.findall(alone)) == len(alone)


def test_a_long_text_is_cut_from_its_start_only() -> None:
    text = "Début " + "🇫🇷 mot " * 4000
    assert truncate(text, 12) == reference_truncate(text, 12) == "Début 🇫🇷 mot…"
    assert grapheme_length(text) == reference_length(text)


def test_every_url_counts_23_on_mastodon() -> None:
    text = "voir https://example.org/" + "a" * 200 + " et http://x.fr/b."
    assert mastodon_length(text) == len("voir ") + 23 + len(" et ") + 23 + 1


def test_spoiler_text_counts_on_mastodon() -> None:
    assert mastodon_length("abc", "CW") == 5


def test_trailing_punctuation_is_not_part_of_a_url() -> None:
    text = "(lien : https://example.org/a), https://fr.wikipedia.org/wiki/Cloud_(informatique)."
    urls = [text[s:e] for s, e in find_urls(text)]
    assert urls == ["https://example.org/a", "https://fr.wikipedia.org/wiki/Cloud_(informatique)"]


def test_long_urls_are_shortened_for_display() -> None:
    assert (
        shorten_url_for_display("https://www.example.org/2026/11/un-tres-long-chemin-d-article")
        == "example.org/2026/11/un-tres-lon…"
    )
    assert shorten_url_for_display("https://example.org/a") == "example.org/a"


def test_html_tokenizer_keeps_what_a_reader_sees() -> None:
    html = (
        '<p>One &amp; <b class="x">two</b></p><img alt="a &gt; b" src="i.png"/><br/>three'
        "<!-- hidden --><style>p{}</style><SCRIPT>alert(1)</SCRIPT> a < b, <3 and <a <a <a"
    )
    assert clean_text(html) == "One & two a > b three a < b, <3 and <a <a <a"
    assert clean_text("<p>one</p><p>two</p>", keep_newlines=True) == "one\n\ntwo"


def test_unclosed_comments_and_scripts_hide_the_rest() -> None:
    assert clean_text("shown <!-- never closed <b>hidden</b>") == "shown"
    assert clean_text("shown <script>never closed <b>hidden</b>") == "shown"
    assert clean_text("shown <title>page</title> and <template>x</template>more") == "shown and more"
    assert clean_text('<script src="x.js"/>still shown') == "still shown"


@pytest.mark.parametrize("character", ["\U0001e5d0", "\U00010d50", "\U00011380", "\U0002ebf0"])
def test_an_at_after_a_letter_newer_than_mastodons_unicode_is_defused(character: str) -> None:
    # letters to the regex module (Unicode 15.1/16.0), unassigned to Mastodon's Ruby
    # (Unicode 15.0): Mastodon would start a mention at the '@'
    assert clean_text(f"Hi {character}@victim@mastodon.social") == f"Hi {character}＠victim@mastodon.social"


def test_an_at_after_an_older_letter_is_left_alone() -> None:
    assert defuse_mentions("café@example.org and 日本@example.org") == "café@example.org and 日本@example.org"


def test_a_quoted_greater_than_sign_stays_inside_an_attribute() -> None:
    assert clean_text('<img alt="a > b" src="i.png">after') == "a > b after"


@pytest.mark.parametrize(
    ("broken", "repaired"),
    [
        ("VIDÃ‰O - Le cÃ©lÃ¨bre chef", "VIDÉO - Le célèbre chef"),
        ("lâ€™Ã©tat", "l’état"),
        ("Â«Â Ã§a suffitÂ Â», dit lâ€™Ã©lÃ¨ve", "« ça suffit », dit l’élève"),
        ("cÅ“ur, Å“uvre", "cœur, œuvre"),
        ("Ã&nbsp; propos, &Atilde;&copy;t&eacute;", "à propos, été"),
    ],
)
def test_double_encoded_french_is_repaired(broken: str, repaired: str) -> None:
    assert clean_text(broken) == repaired


@pytest.mark.parametrize(
    "correct",
    [
        "NÃO À PRIVATIZAÇÃO",  # Portuguese capitals: Ã is an intended letter
        "MINHA IRMÃ E EU",
        "SÃO PAULO, MÃE",
        "l’état «citation» — déjà vu…",
        "👩\u200d👩\u200d👧\u200d👦 famille",
        "مرحبا بالعالم",
        "Écrire à ＠collectif",
        "Les 3 ﬁchiers en pleine largeur ＡＢＣ",  # ligatures and full width are not ftfy's to fix here
    ],
)
def test_correct_text_is_left_as_it_is(correct: str) -> None:
    assert clean_text(correct) == correct


def test_a_repaired_mention_is_still_defused() -> None:
    assert clean_text("Merci Ã  @cnil_officiel") == "Merci à ＠cnil_officiel"
