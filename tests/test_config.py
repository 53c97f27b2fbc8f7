import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.config import Network, load_config, mask_credentials
from relay.errors import ConfigError
from relay.render import make_environment, template_exists
from tests.support import feedserver as fs
from tests.support.feeds import rss
from tests.support.relayrun import relay

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
        load_config(tmp_path / "absent.yaml", environ={})
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


def check_fails_in_one_line(path: Path, env: dict[str, str] | None = None) -> str:
    """`relay check` as a user runs it: exit 2 and exactly one line, no traceback."""
    result = relay("check", "-c", str(path), env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("relay: "), result.output
    return lines[0]


def test_duplicate_top_level_key_gives_both_lines(tmp_path: Path, yaml_reader: str) -> None:
    text = GOOD + "feeds:\n  - name: three\n    url: https://example.org/three\n"
    assert problems(tmp_path, text) == ["feeds.yaml:20: feeds: duplicate key (first at line 13)"]


def test_duplicate_keys_at_every_level_are_all_reported(tmp_path: Path, yaml_reader: str) -> None:
    text = (
        GOOD.replace("    token: ${TOKEN}\n", "    token: ${TOKEN}\n    token: ${OTHER}\n")
        .replace("    every: 1h\n", "    every: 1h\n    every: 2h\n")
        .replace("defaults:\n", "pacing:\n  max_per_run: 1\n  max_per_run: 2\ndefaults:\n")
    )
    assert problems(tmp_path, text) == [
        "feeds.yaml:3: pacing.max_per_run: duplicate key (first at line 2)",
        "feeds.yaml:12: accounts.masto.token: duplicate key (first at line 11)",
        "feeds.yaml:23: feeds[1].every: duplicate key (first at line 22)",
    ]


def test_duplicate_key_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.replace("  masto:\n", "  masto:\n    platform: bluesky\n", 1))
    line = check_fails_in_one_line(path)
    assert line == "relay: feeds.yaml:7: accounts.masto.platform: duplicate key (first at line 6)"


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
feeds: *i
"""


def test_alias_bomb_is_refused_before_it_is_built(tmp_path: Path, yaml_reader: str) -> None:
    [problem] = problems(tmp_path, BILLION_LAUGHS)
    assert problem.startswith("feeds.yaml:9: i: YAML aliases expand the file to ")
    assert problem.endswith("over the limit of 100,000: write the repeated values out")


def test_alias_bomb_through_the_cli_is_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(BILLION_LAUGHS)
    line = check_fails_in_one_line(path)
    assert "YAML aliases expand the file" in line and len(line) < 200


def test_smaller_alias_bomb_under_the_limit_gives_a_short_message(tmp_path: Path, yaml_reader: str) -> None:
    # 4 levels of 9: under the alias bound, but the value is far too large to show whole
    text = (
        "\n".join(BILLION_LAUGHS.splitlines()[:4]) + "\nfeeds:\n  - name: x\n    url: https://e.org/\n    every: *d\n"
    )
    found = problems(tmp_path, text)
    [problem] = [problem for problem in found if "every" in problem]
    assert problem.startswith("feeds.yaml:8: feeds[0].every: [[[['lol', 'lol'")
    assert "'lol',… is not a duration" in problem
    assert all(len(problem) < 200 for problem in found)


def test_alias_that_holds_itself_is_one_line(tmp_path: Path, yaml_reader: str) -> None:
    assert problems(tmp_path, "loop: &loop [*loop]\nfeeds: []\n") == [
        "feeds.yaml:1: loop[0]: a YAML alias refers to the value that holds it"
    ]


def test_deep_nesting_is_one_line(tmp_path: Path, yaml_reader: str) -> None:
    assert problems(tmp_path, "feeds: " + "[" * 2000 + "]" * 2000 + "\n") == [
        "feeds.yaml:1: invalid YAML: nested too deeply"
    ]


def test_ordinary_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    text = GOOD.replace("  to: [masto]", "  to: &all [masto, sky]").replace("to: [masto, sky]", "to: *all")
    text += "".join(f"  - name: more{n}\n    url: https://example.org/{n}\n    to: *all\n" for n in range(200))
    config = load(tmp_path, text, {"TOKEN": "t", "APP_PASSWORD": "p"})
    assert len(config.feeds) == 202
    assert {feed.to for feed in config.feeds} == {("masto", "sky")}


def test_huge_values_and_keys_are_shown_shortened(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", f"    every: {'9' * 100_000}x\n    {'k' * 1000}: 1")
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert all(len(problem) < 200 for problem in found)
    assert any(problem.startswith("feeds.yaml:18: feeds[1].every: '999") for problem in found)
    assert any(problem.startswith("feeds.yaml:19: feeds[1].kkk") and "…: unknown key" in problem for problem in found)


def test_absurd_durations_are_errors_not_crashes(tmp_path: Path) -> None:
    text = GOOD.replace("    every: 1h", "    every: 999999999w\n    timeout: 100000000000000000000000")
    found = problems(tmp_path, text)
    assert [problem.split(": ")[1] for problem in found] == ["feeds[1].every", "feeds[1].timeout"]


SECRET = "s3cr3t-token-value"


def test_value_from_the_environment_is_shown_as_its_variable(tmp_path: Path) -> None:
    text = GOOD.replace("instance: https://mastodon.example", "instance: ${RELAY_MASTODON_TOKEN}")
    path = tmp_path / "feeds.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"RELAY_MASTODON_TOKEN": SECRET, "TOKEN": "t", "APP_PASSWORD": "p"})
    assert info.value.problems == [
        "feeds.yaml:7: accounts.masto.instance: '${RELAY_MASTODON_TOKEN}' is not an instance URL"
        " (like https://mastodon.social)"
    ]


def test_value_from_the_environment_is_not_shown_by_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.replace("handle: collectif.bsky.social", "handle: ${RELAY_SECRET}"))
    line = check_fails_in_one_line(path, env={"RELAY_SECRET": SECRET, "TOKEN": "t", "APP_PASSWORD": "p"})
    assert "'${RELAY_SECRET}' is not a handle" in line
    assert SECRET not in line


def test_redact_puts_variables_back_and_masks_credentials(tmp_path: Path) -> None:
    text = GOOD.replace("url: https://example.org/feed", "url: https://example.org/feed?token=${FEED_TOKEN}")
    env = {"TOKEN": "tok-" + SECRET, "APP_PASSWORD": "abc", "FEED_TOKEN": "a b/c&d"}
    config = load(tmp_path, text, env)
    shown = config.redact(
        f"posting with tok-{SECRET}; password abc; fetching https://example.org/feed?token=a%20b%2Fc%26d"
        " and https://example.org/feed?token=a b/c&d; from https://ann:hunter2@intranet.example/feed"
    )
    assert shown == (
        "posting with ${TOKEN}; password abc; fetching https://example.org/feed?token=${FEED_TOKEN}"
        " and https://example.org/feed?token=${FEED_TOKEN}; from https://ann:***@intranet.example/feed"
    )


def test_mask_credentials() -> None:
    assert mask_credentials("https://user:pass@host/x") == "https://user:***@host/x"
    assert mask_credentials("see ftp://:p%40ss@h and http://u@h/ and http://h/?a=b:c@d") == (
        "see ftp://:***@h and http://u@h/ and http://h/?a=b:c@d"
    )
    assert mask_credentials("no url here: a:b@c") == "no url here: a:b@c"


def test_variable_in_a_feed_url_is_fetched_but_not_shown(tmp_path: Path) -> None:
    text = GOOD.replace("url: https://example.org/feed", "url: https://example.org/feed?token=${FEED_TOKEN}")
    config = load(tmp_path, text, {"TOKEN": "t", "APP_PASSWORD": "p", "FEED_TOKEN": SECRET})
    assert config.feeds[0].url == "https://example.org/feed?token=${FEED_TOKEN}"
    assert config.feeds[0].fetch_url == f"https://example.org/feed?token={SECRET}"
    assert config.feeds[1].fetch_url == config.feeds[1].url == "./local.xml"
    assert config.warnings == ()
    assert SECRET not in repr(config)


def test_missing_variable_in_a_feed_url_is_a_warning(tmp_path: Path) -> None:
    text = GOOD.replace("url: https://example.org/feed", "url: https://example.org/feed?token=${FEED_TOKEN}")
    config = load(tmp_path, text, {"TOKEN": "t", "APP_PASSWORD": "p"})
    assert config.warnings == ("feeds.yaml:15: feeds[0].url: ${FEED_TOKEN} is not set in the environment",)
    assert config.feeds[0].fetch_url == "https://example.org/feed?token="


def test_run_refuses_a_missing_variable_in_a_feed_url(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.replace("url: https://example.org/feed", "url: https://example.org/feed?k=${FEED_TOKEN}"))
    result = relay(
        "run", "-c", str(path), "--state-dir", str(tmp_path / "state"), env={"TOKEN": "t", "APP_PASSWORD": "p"}
    )
    assert result.exit_code == 2
    assert "feeds[0].url: ${FEED_TOKEN} is not set in the environment" in result.output


def test_credentials_in_a_refused_url_are_masked(tmp_path: Path) -> None:
    text = GOOD.replace("url: https://example.org/feed", "url: ftp://ann:hunter2@example.org/feed")
    [problem] = problems(tmp_path, text)
    assert (
        problem
        == "feeds.yaml:15: feeds[0].url: 'ftp://ann:***@example.org/feed': only http, https and file URLs are fetched"
    )


def test_non_utf8_dotenv_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"TOKEN=caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, GOOD)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / '.env'}: not UTF-8 text")
    line = check_fails_in_one_line(tmp_path / "feeds.yaml")
    assert line.startswith(f"relay: {tmp_path / '.env'}: not UTF-8 text") and "caf" not in line


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_unreadable_dotenv_is_one_line_naming_it(tmp_path: Path) -> None:
    # /proc/self/mem is a file that cannot be read from its start, even by root
    (tmp_path / ".env").symlink_to("/proc/self/mem")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, GOOD)
    assert info.value.problems == [f"{tmp_path / '.env'}: cannot read: Input/output error"]


def test_network_policy_setting(tmp_path: Path) -> None:
    assert load(tmp_path, GOOD).network == Network(allow_private=False)
    assert load(tmp_path, "network:\n  allow_private: true\n" + GOOD).network.allow_private is True
    found = problems(tmp_path, "network:\n  allow_private: yes please\n  allow_privat: true\n" + GOOD)
    assert found == [
        "feeds.yaml:3: network.allow_privat: unknown key (did you mean 'allow_private'?)",
        "feeds.yaml:2: network.allow_private: must be true or false",
    ]
    assert problems(tmp_path, "network: true\n" + GOOD) == [
        "feeds.yaml:1: network: must be a mapping (like {allow_private: false})"
    ]


def test_flood_threshold_day(tmp_path: Path) -> None:
    assert load(tmp_path, GOOD).feeds[0].flood_threshold_day == 30
    config = load(tmp_path, GOOD.replace("  every: 15m", "  every: 15m\n  flood_threshold_day: 35"))
    assert [feed.flood_threshold_day for feed in config.feeds] == [35, 35]
    text = GOOD.replace("    every: 1h", "    flood_threshold_day: 0")
    assert problems(tmp_path, text) == ["feeds.yaml:18: feeds[1].flood_threshold_day: 0 is not a whole number >= 1"]


@pytest.fixture(params=["libyaml", "python"])
def yaml_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test that takes it runs with libyaml's parser and with PyYAML's pure-Python one
    (an install where PyYAML was built without libyaml)."""
    import yaml

    import relay.config

    if request.param == "python":
        monkeypatch.setattr(relay.config, "_Loader", relay.config._PythonLoader)
    else:
        assert yaml.__with_libyaml__, "the test venv's PyYAML has libyaml"
        assert issubclass(relay.config._Loader, yaml.CSafeLoader)
    return str(request.param)


def test_both_yaml_readers_read_the_same_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import relay.config

    env = {"TOKEN": "t", "APP_PASSWORD": "p"}
    text = GOOD + "  - name: three\n    url: https://example.org/3\n    hashtags: [a, b]\n    every: 2h\n"
    with_libyaml = load(tmp_path, text, env)
    monkeypatch.setattr(relay.config, "_Loader", relay.config._PythonLoader)
    with_python = load(tmp_path, text, env)
    assert with_libyaml.feeds == with_python.feeds and len(with_python.feeds) == 3
    assert with_libyaml.accounts == with_python.accounts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: !!int abc\n", "feeds.yaml:1: invalid YAML: cannot read 'abc' as !!int"),
        ("feeds:\n  - every: !!timestamp nope\n", "feeds.yaml:2: invalid YAML: cannot read 'nope' as !!timestamp"),
        (
            "feeds: []\nx: \x00\n",
            "feeds.yaml:2: invalid YAML: unacceptable character #x0000: {} characters are not allowed",
        ),
        (
            "base: &base {every: 1h}\nfeeds:\n  - <<: *base\n",
            "feeds.yaml:3: invalid YAML: merge keys (<<) are not supported: write the keys out",
        ),
    ],
)
def test_values_yaml_cannot_read_are_one_line(tmp_path: Path, text: str, expected: str, yaml_reader: str) -> None:
    # libyaml words one refusal its own way; the line is the same
    assert problems(tmp_path, text) == [expected.format("control" if yaml_reader == "libyaml" else "special")]


def test_integer_too_long_to_read_is_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.replace("    every: 1h", "    backfill: " + "9" * 10_000))
    line = check_fails_in_one_line(path)
    assert line.startswith("relay: feeds.yaml:18: invalid YAML: cannot read '999") and len(line) < 200


def test_private_feed_is_fetched_with_its_token_and_shown_without_it(
    tmp_path: Path, feed_server: fs.FeedServer
) -> None:
    body = rss([{"title": "Réservé", "link": "https://example.org/a", "guid": "a", "published": datetime.now(UTC)}])

    def private(request: fs.Request) -> fs.Response:
        if request.path != f"/private?token={SECRET}":
            return fs.Response(403, b"forbidden")
        return fs.Response(200, body, {"Content-Type": "application/rss+xml"})

    feed_server.add("/private", private)
    url = feed_server.url("/private") + "?token=${FEED_TOKEN}"
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.split("feeds:")[0] + f"feeds:\n  - name: private\n    url: {url}\n")
    env = {"TOKEN": "t", "APP_PASSWORD": "p", "FEED_TOKEN": SECRET}
    result = relay("preview", "-c", str(path), "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [feed["url"] for feed in data["feeds"]] == [url]
    assert any(post["title"] == "Réservé" for post in data["posts"])
    assert SECRET not in result.output


def test_a_bad_default_is_shown_at_the_line_it_is_written_on(tmp_path: Path) -> None:
    # feed "one" inherits it (feed "two" sets its own): the problem points at defaults:, line 2
    assert problems(tmp_path, GOOD.replace("every: 15m", "every: often")) == [
        "feeds.yaml:2: feeds[0].every: 'often' is not a duration (try 30s, 15m, 1h, 7d or 2w)"
    ]


def test_a_missing_key_is_shown_at_the_line_of_its_mapping(tmp_path: Path) -> None:
    text = GOOD.replace("    token: ${TOKEN}\n", "").replace("    app_password: ${APP_PASSWORD}\n", "")
    assert problems(tmp_path, text) == [
        "feeds.yaml:5: accounts.masto.token: missing (write token: ${RELAY_MASTODON_TOKEN})",
        "feeds.yaml:8: accounts.sky.app_password: missing (write app_password: ${RELAY_BLUESKY_APP_PASSWORD})",
    ]


def test_only_the_environment_given_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "from-the-process")
    config = load(tmp_path, GOOD, {"APP_PASSWORD": "p"})
    assert config.accounts["masto"].token == ""
    assert config.warnings == ("feeds.yaml: accounts.masto: ${TOKEN} is not set in the environment",)
