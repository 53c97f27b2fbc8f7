"""Feeds modelled on real formats, through `relay preview --format json` and `relay check`:
the Mastodon card follows the item, and untitled items read well on both platforms."""

import json
import shutil
from pathlib import Path

import pytest

from relay.text import find_urls
from tests.support.feeds import TWO_ACCOUNTS
from tests.support.relayrun import relay

FEEDS = Path(__file__).resolve().parent / "feeds"
ENV = {"TOKEN": "t", "APP_PASSWORD": "p"}
YOUTUBE = "youtube_channel_description_links.atom.xml"
MASTODON_ACCOUNT = "mastodon_account_untitled_links.rss.xml"
MICROBLOG = "microblog_untitled.rss.xml"


def preview(tmp_path: Path, feed_file: str, template: str = "news") -> list[dict]:  # type: ignore[type-arg]
    shutil.copy(FEEDS / feed_file, tmp_path / feed_file)
    (tmp_path / "feeds.yaml").write_text(
        f"{TWO_ACCOUNTS}feeds:\n  - name: f\n    url: ./{feed_file}\n    to: [masto, sky]\n    template: {template}\n"
    )
    result = relay(
        "preview",
        "-c",
        str(tmp_path / "feeds.yaml"),
        "--state-dir",
        str(tmp_path / "state"),
        "--format",
        "json",
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    posts: list[dict] = json.loads(result.stdout)["posts"]  # type: ignore[type-arg]
    assert {p["platform"] for p in posts} == {"mastodon", "bluesky"}
    return posts


def first_url(text: str) -> str:
    start, end = find_urls(text)[0]
    return text[start:end]


@pytest.mark.parametrize("feed_file", [YOUTUBE, MASTODON_ACCOUNT])
@pytest.mark.parametrize("template", ["news", "petition", "news-en"])
def test_mastodon_card_follows_the_item(tmp_path: Path, feed_file: str, template: str) -> None:
    for post in preview(tmp_path, feed_file, template):
        if post["platform"] == "mastodon":
            assert first_url(post["text"]) == post["link"]
            assert [post["text"][s:e] for s, e in find_urls(post["text"])] == [post["link"]]


def test_youtube_description_keeps_its_words_without_the_patreon_link(tmp_path: Path) -> None:
    (mastodon,) = [p for p in preview(tmp_path, YOUTUBE) if p["platform"] == "mastodon"]
    assert mastodon["link"] == "https://www.youtube.com/watch?v=aBcDeFgHiJk"
    assert "patreon.com" not in mastodon["text"]
    assert "Soutenez la chaîne sur Patreon" in mastodon["text"]
    assert "Notre lettre chaque mois." in mastodon["text"]  # no empty "()" left


@pytest.mark.parametrize(
    ("feed_file", "start", "card_title"),
    [
        (
            MASTODON_ACCOUNT,
            "Notre lettre de novembre est parue : le point sur la loi climat",
            "Notre lettre de novembre est parue : le point sur la loi climat et les prochaines mobilisations.",
        ),
        (
            MICROBLOG,
            "Sur le chemin de la manifestation ce matin",
            "Sur le chemin de la manifestation ce matin, une foule plus nombreuse que prévu.",
        ),
    ],
)
def test_untitled_items_read_well_everywhere(tmp_path: Path, feed_file: str, start: str, card_title: str) -> None:
    posts = preview(tmp_path, feed_file)
    for post in posts:
        assert post["title"] == ""
        assert post["text"].startswith(start), post
    (bluesky,) = [p for p in posts if p["platform"] == "bluesky"]
    assert bluesky["embed"]["external"]["title"] == card_title
    # more than the shortened link: the summary's words come before it
    assert len(bluesky["text"].split("\n\n")[0]) > 40


def test_check_warns_when_a_user_template_puts_another_url_before_the_link(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "imagefirst.j2").write_text("{{ item.image }}\n{{ item.title }}\n{{ item.link }}")
    (tmp_path / "templates" / "summaryfirst.j2").write_text(
        "{{ item.summary }} {{ item.author }} {{ item.tags | join(' ') }} {{ feed.title }}\n{{ item.title }}\n{{ item.link }}"
    )
    (tmp_path / "feeds.yaml").write_text(
        f"{TWO_ACCOUNTS}feeds:\n"
        "  - name: pictures\n    url: https://example.org/feed\n    to: [masto, sky]\n    template: imagefirst\n"
        "  - name: statuses\n    url: https://example.org/other\n    to: [masto]\n    template: summaryfirst\n"
        "  - name: sky-only\n    url: https://example.org/sky\n    to: [sky]\n    template: imagefirst\n"
    )
    result = relay("check", "-c", str(tmp_path / "feeds.yaml"), env=ENV)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "Mastodon's card" in line]
    assert warnings == [
        "warning: feeds.yaml:11: feeds[0].template: imagefirst for mastodon (feed pictures) puts item.image"
        " before item.link: Mastodon's card would show that page"
    ]
