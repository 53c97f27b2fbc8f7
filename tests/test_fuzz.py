"""The hostile-feed fuzzer, bounded for CI: Hypothesis builds RSS and Atom documents full of
hostile strings (mentions in every disguise, bidi and zero-width characters, huge titles,
odd links, HTML, CDATA), `relay preview --all --format json` previews each as a real process,
and every post must pass bench/fuzzlib's checks. bench/fuzz.py runs the same for longer."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from bench.fuzzlib import Document, Preview, check_post, check_preview, documents, run_preview, write_config

LINK = "https://example.org/a"


@pytest.mark.timeout(600)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    # each example is a process: report the first failing document rather than shrink it
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(document=documents)
def test_no_document_crashes_preview_or_yields_a_bad_post(tmp_path: Path, document: Document) -> None:
    (tmp_path / "feed.xml").write_bytes(document.to_bytes())
    config = write_config(tmp_path)
    outcome = check_preview(run_preview(config, tmp_path / "state"))
    assert not outcome.failures, "\n".join(outcome.failures)
    assert outcome.posts, "the document produced no entry at all"


def _mastodon(text: str, link: str = LINK, limit: int = 500) -> dict:  # type: ignore[type-arg]
    return {"platform": "mastodon", "account": "m", "text": text, "link": link, "limit": limit, "reason": None}


def _bluesky(text: str, facets: list, uri: str = LINK) -> dict:  # type: ignore[type-arg]
    return {
        "platform": "bluesky",
        "account": "b",
        "text": text,
        "link": LINK,
        "facets": facets,
        "embed": {"external": {"uri": uri}},
        "reason": None,
    }


def _facet(start: int, end: int, kind: str = "link", uri: str = LINK) -> dict:  # type: ignore[type-arg]
    feature = {"$type": f"app.bsky.richtext.facet#{kind}", "uri": uri, "did": "did:plc:x"}
    return {"index": {"byteStart": start, "byteEnd": end}, "features": [feature]}


def test_the_checks_pass_a_good_post() -> None:
    assert check_post(_mastodon(f"Titre ＠user\n\n{LINK}")) == []
    text = "Titre\n\nexample.org/a"
    assert check_post(_bluesky(text, [_facet(7, 20)])) == []


@pytest.mark.parametrize(
    ("post", "problem"),
    [
        (_mastodon(f"merci ²@user {LINK}"), "live mention"),
        (_mastodon(f"x {LINK}", limit=20), "over the limit"),
        (_mastodon(f"x {LINK}."[:-3]), "not intact"),
        (_mastodon(f"x {LINK}", link=f"{LINK}\n@spam"), "white space or control"),
        (_mastodon("x https://Bücher.example/", link="https://Bücher.example/"), "not normalised"),
        (_mastodon("x", link=None), "a post without a link"),
        ({**_mastodon(f"x {LINK}"), "text": None}, "not rendered"),
        ({**_mastodon(f"x {LINK}"), "reason": "a\nb"}, "one short line"),
        (_bluesky("é example.org/a", [_facet(1, 16)]), "character boundaries"),
        (_bluesky("example.org/a", [_facet(0, 99)]), "outside the text"),
        (_bluesky("@x example.org/a", [_facet(0, 2, "mention"), _facet(3, 16)]), "mention facet"),
        (_bluesky("example.org/a", [_facet(0, 13)], uri="https://spam.example/"), "card URI"),
        (_bluesky("example.org/a", [_facet(0, 13, uri="https://spam.example/")]), "no link facet"),
        (_bluesky("é" * 301 + " example.org/a", []), "graphemes over 300"),
    ],
)
def test_the_checks_catch_each_bad_post(post: dict, problem: str) -> None:  # type: ignore[type-arg]
    assert any(problem in found for found in check_post(post)), check_post(post)


def test_the_checks_catch_a_crash() -> None:
    failures = check_preview(Preview(1, "", "Traceback (most recent call last):\n  ...")).failures
    assert any("traceback" in failure for failure in failures)
    assert any("not JSON" in failure for failure in failures)
    assert check_preview(Preview(2, '{"posts": []}', "")).failures
