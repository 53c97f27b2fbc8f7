from pathlib import Path

import pytest

from relay.config import load_config
from relay.errors import ConfigError
from relay.render import make_environment, template_exists

GOOD = """\
defaults:
  every: 15m
  to: [masto]
accounts:
  masto:
    platform: mastodon
    instance: https://mastodon.example
    token: ${TOKEN}
  sky:
    platform: bluesky
    handle: collectif.bsky.social
    app_password: ${APP_PASSWORD}
feeds:
  - name: one
    url: https://example.org/feed
  - name: two
    url: ./local.xml
    every: 1h
    to: [masto, sky]
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "feeds.yaml"
    path.write_text(text)
    return load_config(
        path, environ=env or {}, template_exists=lambda c, n: template_exists(make_environment(c.template_dirs), n)
    )


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_valid_file(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD, {"TOKEN": "t", "APP_PASSWORD": "p"})
    assert [f.name for f in config.feeds] == ["one", "two"]
    assert config.feeds[1].every.total_seconds() == 3600
    assert config.feeds[0].to == ("masto",)
    assert config.accounts["masto"].token == "t"
    assert config.warnings == ()


def test_missing_secret_is_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert any("${TOKEN} is not set" in w for w in config.warnings)


def test_secrets_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TOKEN=from-dotenv\nexport APP_PASSWORD='pw'\n")
    config = load(tmp_path, GOOD)
    assert config.accounts["masto"].token == "from-dotenv"
    assert config.accounts["sky"].app_password == "pw"


def test_bad_duration_names_file_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    every: 15 min")
    assert problems(tmp_path, text) == ["feeds.yaml:18: feeds[1].every: '15 min' is not a duration (try 15m)"]


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    evry: 1h")
    assert problems(tmp_path, text) == ["feeds.yaml:18: feeds[1].evry: unknown key (did you mean 'every'?)"]


def test_wrong_type(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    backfill: lots")
    assert problems(tmp_path, text) == ["feeds.yaml:18: feeds[1].backfill: 'lots' is not a whole number >= 0"]


def test_undefined_account(tmp_path: Path) -> None:
    text = GOOD.replace("to: [masto, sky]", "to: [masto, nobody]")
    [problem] = problems(tmp_path, text)
    assert problem.startswith("feeds.yaml:19: feeds[1].to: account 'nobody' is not defined")


def test_missing_template(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    template: nope")
    [problem] = problems(tmp_path, text)
    assert problem.startswith("feeds.yaml:16: feeds[1].template: no template 'nope'")


def test_every_problem_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("every: 15m", "every: often").replace("platform: bluesky", "platform: myspace")
    found = problems(tmp_path, text)
    assert len(found) == 3  # the default duration (seen by both feeds) and the platform
    assert any("accounts.sky.platform: 'myspace' is not one of" in p for p in found)


def test_literal_secret_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("token: ${TOKEN}", "token: abcdefghijklmnopqrstuvwxyz")
    [problem] = problems(tmp_path, text)
    assert "secrets never go in feeds.yaml" in problem and "abcdef" not in problem


def test_invalid_yaml(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "feeds: [\n  - name: x\n")
    assert problem.startswith("feeds.yaml:")
    assert "invalid YAML" in problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert "no such file" in str(info.value)


def test_bad_regex_and_hashtag(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    include: ['/(unclosed/']\n    hashtags: ['pas un tag']")
    found = problems(tmp_path, text)
    assert any("feeds[1].include: '/(unclosed/' is not a valid regex" in p for p in found)
    assert any("feeds[1].hashtags: 'pas un tag' is not a hashtag" in p for p in found)


def test_starter_and_example_configurations_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (root / "feeds.yaml", root / "examples/offline/feeds.yaml"):
        config = load_config(
            path, environ={}, template_exists=lambda c, n: template_exists(make_environment(c.template_dirs), n)
        )
        assert config.feeds and set(config.accounts) == {"mastodon", "bluesky"}
