"""The template check without jinja2 finds what jinja2's loaders find."""

from pathlib import Path

from relay import catalog
from relay.render import make_environment, template_exists


def test_the_names_listed_are_the_loaders_own(tmp_path: Path) -> None:
    own, other = tmp_path / "own", tmp_path / "other"
    (own / "sub").mkdir(parents=True)
    other.mkdir()
    for path in (own / "appel.j2", own / "news.mastodon.j2", own / "sub" / "deep.j2", other / "petition.bluesky.j2"):
        path.write_text("{{ item.link }}")
    (own / "notes.txt").write_text("not a template")
    folders = (own, other, tmp_path / "missing")
    listed = set(make_environment(folders).loader.list_templates())  # type: ignore[union-attr]
    assert catalog.available(folders) == listed


def test_a_name_exists_as_jinja2_would_find_it(tmp_path: Path) -> None:
    (tmp_path / "appel.j2").write_text("{{ item.link }}")
    (tmp_path / "alerte.bluesky.j2").write_text("{{ item.link }}")
    env = make_environment([tmp_path])
    listed = catalog.available((tmp_path,))
    for name in ("appel", "alerte", "news", "petition", "news-en", "absent", "alert", "appel.j2", "sub/deep"):
        assert catalog.exists(listed, name) == template_exists(env, name), name
    assert catalog.exists(listed, "appel") and catalog.exists(listed, "news") and not catalog.exists(listed, "absent")


def test_a_run_with_nothing_due_does_not_import_jinja2(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "feeds.yaml").write_text(
        "accounts:\n  m:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "feeds:\n  - name: a\n    url: https://a.example/feed\n    every: 1h\n"
    )
    code = (
        "import sys\n"
        "from relay.edge import load\n"
        f"load(__import__('pathlib').Path({str(tmp_path / 'feeds.yaml')!r}))\n"
        "print('jinja2' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"TOKEN": "x", "PATH": ""}
    )
    assert result.stdout.strip() == "False"
