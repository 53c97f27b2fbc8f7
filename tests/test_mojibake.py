"""Double-encoded text (UTF-8 read as Windows-1252 and encoded again), as some French
newspapers' feeds have been seen to publish, is repaired before it is posted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEED = Path(__file__).resolve().parent / "feeds" / "mojibake__double_encoded_french.rss.xml"
MOJIBAKE_SIGNS = ("Ã", "â€", "Å“", "Â«", "Â»")


def test_a_double_encoded_french_feed_is_posted_repaired(tmp_path: Path) -> None:
    assert "Ã©" in FEED.read_text(encoding="utf-8")  # the fixture is broken as the real feeds were
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "defaults:\n  backfill: 5\naccounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n"
        "    token: ${T}\n  sky:\n    platform: bluesky\n    handle: a.example.org\n    app_password: ${P}\n"
        f"feeds:\n  - name: presse\n    url: {FEED.as_uri()}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "relay", "preview", "--all", "--format", "json", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    posts = json.loads(result.stdout)["posts"]
    assert len(posts) == 4
    titles = {post["title"] for post in posts}
    assert titles == {
        "VIDÉO - Le célèbre chef cuisinier ouvre « sa » cantine",
        "Santé : l’hébergement des données à l’étranger inquiète",
    }
    for post in posts:
        shown = post["text"] + json.dumps(post["embed"], ensure_ascii=False)
        assert not any(sign in shown for sign in MOJIBAKE_SIGNS), shown
    mastodon = next(p for p in posts if p["platform"] == "mastodon" and p["title"].startswith("Santé"))
    assert "Le Conseil d’État s’est penché sur la question ; « c’est un cœur du sujet »" in mastodon["text"]
