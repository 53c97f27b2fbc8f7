"""Categories made into hashtags, and hashtags found in text the way the Bluesky app finds
them (unit tests; the end-to-end ones, through preview, mastodon-mock and the reference PDS,
are in test_category_hashtags.py)."""

from __future__ import annotations

import pytest

from relay.hashtags import category_hashtag, find_hashtags, is_hashtag, item_hashtags, map_key


@pytest.mark.parametrize(
    ("category", "hashtag"),
    [
        ("Santé", "Santé"),
        ("santé", "santé"),  # one word: kept as written
        ("données de santé", "DonnéesDeSanté"),
        ("Health Data Hub", "HealthDataHub"),
        ("  Health   Data\tHub ", "HealthDataHub"),
        ("l'hôpital", "lhôpital"),
        ("l’Assurance maladie", "LAssuranceMaladie"),
        ("e-santé", "ESanté"),
        ("CNIL / RGPD", "CNILRGPD"),
        ("covid-19", "Covid19"),
        ("Sécu_sociale", "SécuSociale"),
        ("🎉 fête", "fête"),
        ("Ça va", "ÇaVa"),
        ("sante\u0301", "santé"),  # decomposed accent: composed (NFC)
        ("Ελληνικά", "Ελληνικά"),
        ("2024", None),  # a hashtag starts with a letter
        ("2024 élections", None),
        ("", None),
        ("  ", None),
        ("!!!", None),
        ("x" * 64, "x" * 64),
        ("x" * 65, None),  # over Bluesky's 64 graphemes
    ],
)
def test_category_hashtag(category: str, hashtag: str | None) -> None:
    assert category_hashtag(category) == hashtag


def test_is_hashtag() -> None:
    assert is_hashtag("SantéNumérique") and is_hashtag("HDH_2024")
    assert not is_hashtag("2024") and not is_hashtag("a-b") and not is_hashtag("") and not is_hashtag("#a")


def test_map_key_ignores_case_spacing_and_accent_encoding() -> None:
    assert map_key("  Données  de SANTÉ ") == map_key("données de sante\u0301") == "données de santé"


def test_item_hashtags_written_first_then_categories_each_once() -> None:
    tags, from_categories = item_hashtags(["HealthDataHub"], ["Health data hub", "Santé", "santé", "2024", "CNIL"])
    assert tags == ("HealthDataHub", "Santé", "CNIL")
    assert from_categories == 2


def test_tag_map_renames_and_drops() -> None:
    tag_map = {map_key("Données de santé"): "DonnéesDeSanté", map_key("Non classé"): "", map_key("2024"): "An2024"}
    tags, _ = item_hashtags([], ["Non classé", "données  de SANTÉ", "2024"], tag_map=tag_map)
    assert tags == ("DonnéesDeSanté", "An2024")


def test_max_hashtags_caps_the_total_categories_first_to_go() -> None:
    tags, from_categories = item_hashtags(["A", "B"], ["C", "D", "E"], limit=3)
    assert (tags, from_categories) == (("A", "B", "C"), 1)
    tags, from_categories = item_hashtags(["A", "B"], ["C"], limit=1)
    assert (tags, from_categories) == (("A",), 0)
    assert item_hashtags(["A"], ["C"], limit=0) == ((), 0)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("#Santé et #données.", [(0, 6, "Santé"), (10, 18, "données")]),
        ("fin #fin!", [(4, 8, "fin")]),
        ("#e-santé- ok", [(0, 8, "e-santé")]),
        ("#🎉fête", [(0, 6, "🎉fête")]),
        ("line\n#next", [(5, 10, "next")]),
        ("C#, x#y, (#paren), #1, #_x, # alone, example.org/page#frag", []),
        ("#" + "a" * 64, [(0, 65, "a" * 64)]),
        ("#" + "a" * 65, []),
    ],
)
def test_find_hashtags_as_the_bluesky_app_does(text: str, found: list[tuple[int, int, str]]) -> None:
    assert find_hashtags(text) == found


def test_a_tag_goes_on_through_marks_and_emoji_modifiers() -> None:
    """The Bluesky app's own pattern would stop mid-character ("#ह" of "#हिन्दी")."""
    assert find_hashtags("#हिन्दी") == [(0, 7, "हिन्दी")]
    assert find_hashtags("#👍🏻ok") == [(0, 5, "👍🏻ok")]
    assert find_hashtags("#👩\u200d💻dev") == [(0, 7, "👩\u200d💻dev")]


def test_no_tag_over_640_bytes() -> None:
    """A grapheme may be any number of bytes: a tag of few graphemes can be over the 640
    bytes a facet's tag may hold, and the PDS would refuse the post every time."""
    heavy = "\u1100" + "\u1176" * 300  # one grapheme, 903 bytes
    assert category_hashtag(heavy) is None
    assert not is_hashtag(heavy)
    assert find_hashtags("x #👍" + "🏻" * 200 + " y") == []
    assert find_hashtags("#" + "é" * 64) == [(0, 65, "é" * 64)]  # 128 bytes: fine
