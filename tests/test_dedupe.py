import pytest

from relay.dedupe import canonical_url, key_link


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "https://www.laquadrature.net/2024/01/article/?utm_source=rss&utm_medium=rss&utm_campaign=x",
            "http://laquadrature.net/2024/01/article",
        ),
        ("HTTPS://WWW.April.org:443/fr/bar/?b=2&a=1#section", "https://april.org/fr/bar?a=1&b=2"),
        ("https://www.humanite.fr/article-645745#xtor=RSS-1", "https://humanite.fr/article-645745"),
        ("https://example.org/a?fbclid=IwAR0&gclid=1&mc_cid=2&mc_eid=3", "https://example.org/a"),
        ("https://www.google.com/url?rct=j&sa=t&url=https://example.org/report&ct=ga", "https://example.org/report"),
    ],
)
def test_same_article_same_canonical_url(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://framablog.org/?p=24275", "https://framablog.org/?p=24276"),
        ("https://framablog.org/?p=24275", "https://framablog.org/"),
        ("https://www.youtube.com/watch?v=abc", "https://www.youtube.com/watch?v=abd"),
        ("https://example.org/a", "https://example.org/b"),
        ("https://example.org:8080/a", "https://example.org/a"),
    ],
)
def test_different_articles_stay_apart(a: str, b: str) -> None:
    assert canonical_url(a) != canonical_url(b)


def test_posted_links_lose_only_trackers() -> None:
    assert key_link("https://example.org/a?p=3&utm_source=rss&x=1#top") == "https://example.org/a?p=3&x=1#top"
    assert key_link("https://example.org/article-1#xtor=RSS-1") == "https://example.org/article-1"
    assert key_link("https://example.org/a?p=3") == "https://example.org/a?p=3"
