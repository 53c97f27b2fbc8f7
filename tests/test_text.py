from relay.text import (
    clean_text,
    defuse_mentions,
    find_urls,
    grapheme_length,
    mastodon_length,
    shorten_url_for_display,
    truncate,
)


def test_html_is_stripped_and_entities_decoded() -> None:
    assert clean_text("<p>C&rsquo;est <b>la</b> rentr&eacute;e</p>") == "C’est la rentrée"


def test_doubly_escaped_html_is_decoded() -> None:
    assert clean_text("&amp;lt;b&amp;gt;gras&amp;lt;/b&amp;gt; &amp;eacute;t&amp;eacute;") == "<b>gras</b> été"


def test_scripts_and_styles_vanish() -> None:
    assert clean_text("avant<script>alert(1)</script><style>p{}</style> après") == "avant après"


def test_control_bidi_and_zero_width_characters_are_removed() -> None:
    hidden = "sa\u200bnté\u202e txt\u2066.exe\x07 fin\u00ad"
    assert clean_text(hidden) == "santé txt.exe fin"


def test_whitespace_is_folded() -> None:
    assert clean_text("  un\n\n deux\t\u00a0trois  ") == "un deux trois"


def test_mentions_are_defused_but_emails_stay() -> None:
    text = defuse_mentions("merci @cnil et @alice@mastodon.social, écrivez à presse@example.org")
    assert "@cnil" not in text and "@alice@" not in text
    assert "＠cnil" in text and "＠alice@mastodon.social" in text
    assert "presse@example.org" in text


def test_feed_text_is_defused_by_clean_text() -> None:
    assert clean_text("<p>@someone</p>") == "＠someone"


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
