"""The README documents every command, every feeds.yaml key and every template variable;
every command's --help has an example."""

import re
from pathlib import Path

import click
import pytest

from relay import config
from relay.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def commands(group: click.Group, prefix: str = "relay") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize(("name", "command"), commands(cli))
def test_every_command_is_documented_with_an_example(name: str, command: click.Command) -> None:
    assert f"`{name}" in README, name
    assert "Example" in (command.help or ""), name


@pytest.mark.parametrize(
    "key",
    sorted(
        config._FEED_KEYS
        | config._TOP_KEYS
        | config._PACING_KEYS
        | config._NETWORK_KEYS
        | config._ACCOUNT_KEYS["mastodon"]
        | config._ACCOUNT_KEYS["bluesky"]
    ),
)
def test_every_key_is_documented(key: str) -> None:
    assert re.search(rf"\| `{key}` \|", README), key


@pytest.mark.parametrize(
    "variable",
    [
        "item.title",
        "item.summary",
        "item.link",
        "item.headline",
        "item.author",
        "item.published",
        "item.tags",
        "item.image",
        "item.feed",
        "feed.name",
        "hashtags",
        "platform",
        "account",
    ],
)
def test_every_template_variable_is_documented(variable: str) -> None:
    assert f"`{variable}`" in README


def test_quick_start_is_two_commands() -> None:
    quick = README.split("## Quick start")[1].split("## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.DOTALL)
    assert [b.strip() for b in blocks] == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/relay preview -c examples/offline/feeds.yaml",
        "scripts/test",
    ]
    assert "exec scripts/test" in (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()


def test_exit_codes_are_documented() -> None:
    for code in ("`0`", "`1`", "`2`", "`3`"):
        assert code in README


def test_the_french_guide_is_linked_from_the_first_screen() -> None:
    first_screen = README[: README.index("## Quick start")]
    assert "(docs/guide-fr.md)" in first_screen
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide-fr.md").read_text()
    for command in ("pipx install relay-feeds", "relay init", "relay add", "relay preview", "relay cron --install"):
        assert command in guide, command
    assert "relay queue release" in guide and "relay queue retry" in guide  # held and failed
